//! Cluster objects → what they contribute to the datastore.
//!
//! The API server's objects (k8s-openapi types) go through a `serde_json` round trip into
//! `palisade_model::k8s`, which reads the same wire format as manifests, so the controller
//! and `palisade apply` convert with the very same `palisade_model::convert` functions. The
//! round trip also trims each object to the fields Palisade reads: nothing else is kept.

use std::fmt;

pub use crate::crd::RawClusterNetworkPolicy;

use palisade_model::{convert, k8s};
use palisade_store::StoredObject;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The kinds of cluster object the controller watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Namespace,
    Pod,
    NetworkPolicy,
    /// `policy.networking.k8s.io/v1alpha2`, cluster-scoped (a CRD that may be absent).
    ClusterNetworkPolicy,
    /// Cluster-scoped.
    Node,
}

impl Kind {
    pub const COUNT: usize = 5;
    pub const ALL: [Kind; Kind::COUNT] = [
        Kind::Namespace,
        Kind::Pod,
        Kind::NetworkPolicy,
        Kind::ClusterNetworkPolicy,
        Kind::Node,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::ClusterNetworkPolicy => "ClusterNetworkPolicy",
            Kind::Node => "Node",
        }
    }

    /// Index into per-kind arrays.
    pub fn index(self) -> usize {
        match self {
            Kind::Namespace => 0,
            Kind::Pod => 1,
            Kind::NetworkPolicy => 2,
            Kind::ClusterNetworkPolicy => 3,
            Kind::Node => 4,
        }
    }

    /// Whether objects of this kind have no namespace.
    pub fn cluster_scoped(self) -> bool {
        matches!(
            self,
            Kind::Namespace | Kind::ClusterNetworkPolicy | Kind::Node
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one cluster object: kind, namespace (empty for a Namespace) and name. It does
/// not change when the object's datastore key does (a pod that gets scheduled moves from
/// `endpoints/_unscheduled/...` to `endpoints/<node>/...`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectId {
    pub fn namespace(name: impl Into<String>) -> Self {
        ObjectId {
            kind: Kind::Namespace,
            namespace: String::new(),
            name: name.into(),
        }
    }

    pub fn namespaced(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectId {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// A cluster-scoped object (ClusterNetworkPolicy, Node, Namespace).
    pub fn cluster(kind: Kind, name: impl Into<String>) -> Self {
        ObjectId {
            kind,
            namespace: String::new(),
            name: name.into(),
        }
    }

    /// The cluster object a datastore key belongs to, for the keys the controller writes:
    /// namespaces, endpoints and host endpoints (pods), namespaced policies of the default tier, cluster-wide policies
    /// of the admin and baseline tiers, and nodes.
    pub fn of_key(key: &str) -> Option<ObjectId> {
        use palisade_store::keys::Key;
        match Key::parse(key).ok()? {
            Key::Namespace { name } => Some(ObjectId::namespace(name)),
            Key::Endpoint { namespace, pod, .. } | Key::HostEndpoint { namespace, pod } => {
                Some(ObjectId::namespaced(Kind::Pod, namespace, pod))
            }
            Key::Policy {
                tier,
                namespace: Some(namespace),
                name,
            } if tier == palisade_model::DEFAULT_TIER => {
                Some(ObjectId::namespaced(Kind::NetworkPolicy, namespace, name))
            }
            Key::Policy {
                tier,
                namespace: None,
                name,
            } if tier == palisade_model::ADMIN_TIER || tier == palisade_model::BASELINE_TIER => {
                Some(ObjectId::cluster(Kind::ClusterNetworkPolicy, name))
            }
            Key::Node { name } => Some(ObjectId::cluster(Kind::Node, name)),
            _ => None,
        }
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// What one cluster object contributes to the datastore.
#[derive(Debug, Clone, PartialEq, Eq)]
// Nearly every value is the large variant: boxing it would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Converted {
    /// This object, under its key.
    Stored { key: String, object: StoredObject },
    /// Nothing, and rightly so (a finished or terminating pod, a pod without an IP yet).
    Skipped(&'static str),
    /// Nothing, because the object is invalid: the reason names the fields.
    Invalid(String),
}

impl Converted {
    pub fn stored(&self) -> Option<(&String, &StoredObject)> {
        match self {
            Converted::Stored { key, object } => Some((key, object)),
            _ => None,
        }
    }
}

/// Round trip through JSON: a k8s-openapi object into the model's input type.
pub fn to_model<T: Serialize, U: DeserializeOwned>(obj: &T) -> Result<U, String> {
    let value = serde_json::to_value(obj).map_err(|e| format!("cannot encode: {e}"))?;
    serde_json::from_value(value).map_err(|e| format!("cannot decode: {e}"))
}

fn errors(errs: Vec<palisade_model::validate::FieldError>) -> String {
    let parts: Vec<String> = errs.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

fn stored(object: StoredObject) -> Converted {
    match object.key() {
        Ok(key) => Converted::Stored { key, object },
        Err(e) => Converted::Invalid(e.to_string()),
    }
}

/// A Namespace from the API server.
pub fn namespace(ns: &k8s_openapi::api::core::v1::Namespace) -> Converted {
    match to_model::<_, k8s::Namespace>(ns) {
        Ok(ns) => from_namespace(&ns),
        Err(e) => Converted::Invalid(e),
    }
}

/// A Pod from the API server.
pub fn pod(pod: &k8s_openapi::api::core::v1::Pod) -> Converted {
    match to_model::<_, k8s::Pod>(pod) {
        Ok(pod) => from_pod(&pod),
        Err(e) => Converted::Invalid(e),
    }
}

/// A NetworkPolicy from the API server.
pub fn network_policy(np: &k8s_openapi::api::networking::v1::NetworkPolicy) -> Converted {
    match to_model::<_, k8s::NetworkPolicy>(np) {
        Ok(np) => from_network_policy(&np),
        Err(e) => Converted::Invalid(e),
    }
}

/// A ClusterNetworkPolicy from the API server (kept raw: see [`RawClusterNetworkPolicy`]).
pub fn cluster_network_policy(cnp: &RawClusterNetworkPolicy) -> Converted {
    match to_model::<_, k8s::ClusterNetworkPolicy>(cnp) {
        Ok(cnp) => from_cluster_network_policy(&cnp),
        Err(e) => Converted::Invalid(e),
    }
}

/// A Node from the API server.
pub fn node(node: &k8s_openapi::api::core::v1::Node) -> Converted {
    match to_model::<_, k8s::Node>(node) {
        Ok(node) => from_node(&node),
        Err(e) => Converted::Invalid(e),
    }
}

pub fn from_cluster_network_policy(cnp: &k8s::ClusterNetworkPolicy) -> Converted {
    match convert::cluster_network_policy(cnp) {
        Ok((policy, rule_names)) => stored(StoredObject::policy(policy, rule_names)),
        Err(errs) => Converted::Invalid(errors(errs)),
    }
}

pub fn from_node(node: &k8s::Node) -> Converted {
    match convert::node(node) {
        Ok(node) => stored(StoredObject::Node(node)),
        Err(errs) => Converted::Invalid(errors(errs)),
    }
}

pub fn from_namespace(ns: &k8s::Namespace) -> Converted {
    match convert::namespace(ns) {
        Ok(ns) => stored(StoredObject::Namespace(ns)),
        Err(errs) => Converted::Invalid(errors(errs)),
    }
}

/// A Pod: a workload endpoint, or (`spec.hostNetwork: true`) a host endpoint with its own
/// `status.podIPs` for now; the cache gives it its node's addresses ([`crate::cache`]).
pub fn from_pod(pod: &k8s::Pod) -> Converted {
    if pod.spec.host_network == Some(true) {
        return match convert::host_network_pod(pod) {
            Ok(Some(ep)) => stored(StoredObject::HostEndpoint(ep)),
            Ok(None) => Converted::Skipped("finished or being deleted"),
            Err(errs) => Converted::Invalid(errors(errs)),
        };
    }
    match convert::pod(pod) {
        Ok(Some(ep)) if ep.ips.is_empty() => Converted::Skipped("no IP yet"),
        Ok(Some(ep)) => stored(StoredObject::Endpoint(ep)),
        Ok(None) => Converted::Skipped("not a workload endpoint"),
        Err(errs) => Converted::Invalid(errors(errs)),
    }
}

pub fn from_network_policy(np: &k8s::NetworkPolicy) -> Converted {
    match convert::network_policy(np) {
        Ok(policy) => stored(StoredObject::Policy(policy)),
        Err(errs) => Converted::Invalid(errors(errs)),
    }
}

/// The id of a cluster object from its metadata (kube's `ResourceExt`).
pub fn id_of<K: kube::ResourceExt>(kind: Kind, obj: &K) -> ObjectId {
    match kind {
        k if k.cluster_scoped() => ObjectId::cluster(kind, obj.name_any()),
        _ => ObjectId::namespaced(kind, obj.namespace().unwrap_or_default(), obj.name_any()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The staged annotation of an API server object reaches the stored policy (so agents
    /// see it); a bad value makes the object invalid, naming the field.
    #[test]
    fn the_staged_annotation_survives_the_api_object() {
        let np = |value: &str| -> k8s_openapi::api::networking::v1::NetworkPolicy {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web-deny-all", "namespace": "default",
                             "annotations": {"palisade.dev/staged": value}},
                "spec": {"podSelector": {}}
            }))
            .unwrap()
        };
        match network_policy(&np("true")) {
            Converted::Stored {
                object: StoredObject::Policy(p),
                ..
            } => assert!(p.staged),
            other => panic!("{other:?}"),
        }
        match network_policy(&np("sometimes")) {
            Converted::Invalid(why) => assert!(
                why.contains("metadata.annotations[\"palisade.dev/staged\"]"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_map_back_to_their_objects() {
        assert_eq!(
            ObjectId::of_key("/palisade/v1/namespaces/prod"),
            Some(ObjectId::namespace("prod"))
        );
        assert_eq!(
            ObjectId::of_key("/palisade/v1/endpoints/_unscheduled/prod/web-0"),
            Some(ObjectId::namespaced(Kind::Pod, "prod", "web-0"))
        );
        assert_eq!(
            ObjectId::of_key("/palisade/v1/endpoints/node-1/prod/web-0"),
            Some(ObjectId::namespaced(Kind::Pod, "prod", "web-0"))
        );
        assert_eq!(
            ObjectId::of_key("/palisade/v1/policies/default/prod/deny"),
            Some(ObjectId::namespaced(Kind::NetworkPolicy, "prod", "deny"))
        );
        assert_eq!(
            ObjectId::of_key("/palisade/v1/policies/admin/prod/deny"),
            None
        );
        assert_eq!(
            ObjectId::of_key("/palisade/v1/policies/default/_global/x"),
            None
        );
        assert_eq!(
            ObjectId::of_key("/palisade/v1/policies/admin/_global/protect"),
            Some(ObjectId::cluster(Kind::ClusterNetworkPolicy, "protect"))
        );
        assert_eq!(
            ObjectId::of_key("/palisade/v1/policies/baseline/_global/deny"),
            Some(ObjectId::cluster(Kind::ClusterNetworkPolicy, "deny"))
        );
        assert_eq!(
            ObjectId::of_key("/palisade/v1/nodes/node-1"),
            Some(ObjectId::cluster(Kind::Node, "node-1"))
        );
        // A host-networked pod is the same Pod object: a pod that changed kind is one
        // object whose old key the plan deletes.
        assert_eq!(
            ObjectId::of_key("/palisade/v1/hostendpoints/prod/exporter"),
            Some(ObjectId::namespaced(Kind::Pod, "prod", "exporter"))
        );
        assert_eq!(ObjectId::of_key("/palisade/v1/status/node-1"), None);
        assert_eq!(ObjectId::of_key("garbage"), None);
    }

    fn raw_cnp(name: &str, spec: serde_json::Value) -> RawClusterNetworkPolicy {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "spec": spec}))
            .unwrap()
    }

    #[test]
    fn a_cluster_network_policy_is_stored_cluster_wide_in_its_tier() {
        let c = cluster_network_policy(&raw_cnp(
            "protect",
            serde_json::json!({
                "tier": "Baseline", "priority": 7,
                "subject": {"namespaces": {}},
                "egress": [{"action": "Deny", "to": [{"networks": ["10.0.0.0/8"]}]}],
            }),
        ));
        let (key, object) = c.stored().expect("stored");
        assert_eq!(key, "/palisade/v1/policies/baseline/_global/protect");
        let StoredObject::Policy(p) = object else {
            panic!("policy expected: {object:?}")
        };
        assert_eq!(p.id.tier, palisade_model::BASELINE_TIER);
        assert_eq!(p.id.namespace, None);
        assert_eq!(
            id_of(
                Kind::ClusterNetworkPolicy,
                &raw_cnp("protect", serde_json::json!({}))
            ),
            ObjectId::cluster(Kind::ClusterNetworkPolicy, "protect")
        );
    }

    #[test]
    fn an_invalid_cluster_network_policy_names_its_fields() {
        let c = cluster_network_policy(&raw_cnp(
            "bad",
            serde_json::json!({"tier": "Middle", "priority": 5000, "subject": {"namespaces": {}}}),
        ));
        let Converted::Invalid(why) = c else {
            panic!("invalid expected: {c:?}")
        };
        assert!(why.contains("spec.tier"), "{why}");
        assert!(why.contains("spec.priority"), "{why}");
        let Converted::Invalid(why) =
            cluster_network_policy(&raw_cnp("nospec", serde_json::Value::Null))
        else {
            panic!("a policy without spec is invalid")
        };
        assert!(why.contains("spec"), "{why}");
    }

    /// A hostNetwork pod from the API server is a host endpoint (its own podIPs until the
    /// cache gives it its node's), with its labels and ports; a finished one is skipped.
    #[test]
    fn a_host_networked_pod_is_a_host_endpoint() {
        let mut p: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "exporter", "namespace": "prod"},
            "spec": {"nodeName": "n1", "hostNetwork": true, "containers": [{"name": "c",
                     "ports": [{"name": "metrics", "containerPort": 9100}]}]},
            "status": {"phase": "Running"},
        }))
        .unwrap();
        let c = pod(&p);
        let (key, object) = c.stored().expect("stored");
        assert_eq!(key, "/palisade/v1/hostendpoints/prod/exporter");
        let StoredObject::HostEndpoint(ep) = object else {
            panic!("host endpoint expected: {object:?}")
        };
        assert_eq!(ep.node.as_deref(), Some("n1"));
        assert!(ep.ips.is_empty());
        assert_eq!(ep.ports[0].port, 9100);
        p.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(matches!(pod(&p), Converted::Skipped(_)));
    }

    #[test]
    fn a_node_keeps_its_labels_and_addresses() {
        let n: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "labels": {"zone": "a"}},
            "status": {"addresses": [
                {"type": "Hostname", "address": "n1"},
                {"type": "ExternalIP", "address": "203.0.113.1"},
                {"type": "InternalIP", "address": "192.168.0.1"},
            ]},
        }))
        .unwrap();
        let c = node(&n);
        let (key, object) = c.stored().expect("stored");
        assert_eq!(key, "/palisade/v1/nodes/n1");
        let StoredObject::Node(n) = object else {
            panic!("node expected: {object:?}")
        };
        assert_eq!(n.labels.get("zone").map(String::as_str), Some("a"));
        let ips: Vec<String> = n.addresses.iter().map(ToString::to_string).collect();
        assert_eq!(ips, vec!["192.168.0.1", "203.0.113.1"]);
    }
}
