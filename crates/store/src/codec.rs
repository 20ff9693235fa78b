//! Values: one JSON object per key, in an envelope that names its version, kind and owner:
//!
//! ```json
//! {"apiVersion":"palisade/v1","kind":"Endpoint","owner":"palisade-apply","spec":{ ... }}
//! ```
//!
//! `spec` is the model type (`palisade_model::{Namespace, Endpoint, Policy, Node}`) or
//! [`AgentStatus`]; a host-networked pod is an `Endpoint` of kind `HostEndpoint`; a policy's
//! rule names (ClusterNetworkPolicy `name`s), when it has any, are the spec's `ruleNames`. The owner says who wrote the object: [`OWNER_APPLY`] for `palisade apply`,
//! [`OWNER_CONTROLLER`] for the Kubernetes controller, which never touches objects it does
//! not own. Decoding checks the version, the kind, and that the key is where the object
//! belongs, and names the key in every error.

use palisade_model::{Cluster, Endpoint, Namespace, Node, Policy, RuleNames};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::keys::{self, Key};
use crate::Revision;

/// The `apiVersion` of every value.
pub const API_VERSION: &str = "palisade/v1";
/// Owner of objects written by `palisade apply`.
pub const OWNER_APPLY: &str = "palisade-apply";
/// Owner of objects written by the Kubernetes controller.
pub const OWNER_CONTROLLER: &str = "palisade-controller";
/// Owner of agent status objects.
pub const OWNER_AGENT: &str = "palisade-agent";

/// An agent's report of how far it got, stored at `/palisade/v1/status/<node>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    pub node: String,
    /// Whether the dataplane matches the datastore as of `revision`.
    pub in_sync: bool,
    /// The datastore revision the dataplane was last programmed from.
    pub revision: Revision,
    /// The last error programming the dataplane, if the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When this status was written, in milliseconds since the Unix epoch.
    pub updated: u64,
}

/// Everything Palisade stores, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredObject {
    Namespace(Namespace),
    Endpoint(Endpoint),
    Policy(Policy),
    Status(AgentStatus),
    /// A node's labels and addresses (ClusterNetworkPolicy `nodes` peers).
    Node(Node),
    /// A host-networked pod (`spec.hostNetwork: true`): a flow end with its node's address,
    /// never a workload endpoint, subject or pod peer. Kind `HostEndpoint`, at
    /// `hostendpoints/<namespace>/<pod>`.
    HostEndpoint(Endpoint),
    /// A policy with the names of its rules (kind `Policy`, the names in `spec.ruleNames`).
    /// Only for names that are not all empty: build it with [`StoredObject::policy`], which
    /// gives [`StoredObject::Policy`] otherwise, so that decoding gives back what was encoded.
    NamedPolicy(Policy, RuleNames),
}

impl StoredObject {
    /// A policy with its rule names: [`StoredObject::NamedPolicy`] when some rule has a
    /// name, else [`StoredObject::Policy`].
    pub fn policy(policy: Policy, names: RuleNames) -> StoredObject {
        if names_empty(&names) {
            StoredObject::Policy(policy)
        } else {
            StoredObject::NamedPolicy(policy, names)
        }
    }

    /// The policy of a `Policy` or `NamedPolicy`.
    pub fn as_policy(&self) -> Option<&Policy> {
        match self {
            StoredObject::Policy(p) | StoredObject::NamedPolicy(p, _) => Some(p),
            _ => None,
        }
    }

    /// The envelope `kind` of this object.
    pub fn kind(&self) -> &'static str {
        match self {
            StoredObject::Namespace(_) => "Namespace",
            StoredObject::Endpoint(_) => "Endpoint",
            StoredObject::Policy(_) | StoredObject::NamedPolicy(..) => "Policy",
            StoredObject::Status(_) => "AgentStatus",
            StoredObject::Node(_) => "Node",
            StoredObject::HostEndpoint(_) => "HostEndpoint",
        }
    }

    /// Lays this object over a cluster, as a reader of the datastore sees it: a host
    /// endpoint as a host-networked pod, a named policy with its rule names, a node with
    /// the addresses of the host-networked pods on it; agent statuses are left out. The same
    /// key replaces what was there.
    pub fn upsert_into(self, cluster: &mut Cluster) {
        match self {
            StoredObject::Namespace(ns) => cluster.upsert_namespace(ns),
            StoredObject::Endpoint(ep) => {
                cluster.host_network.remove(&ep.id);
                cluster.upsert_endpoint(ep);
            }
            StoredObject::HostEndpoint(ep) => cluster.upsert_host_network(ep),
            StoredObject::Policy(p) => {
                cluster.rule_names.remove(&p.id);
                cluster.upsert_policy(p);
            }
            StoredObject::NamedPolicy(p, names) => {
                cluster.rule_names.insert(p.id.clone(), names);
                cluster.upsert_policy(p);
            }
            StoredObject::Node(n) => cluster.upsert_node(n),
            StoredObject::Status(_) => {}
        }
    }

    /// Everything of a cluster that is stored, in the order a reader needs it (namespaces,
    /// nodes, then the rest): namespaces, workload endpoints, host endpoints, policies with
    /// their rule names, nodes. Tiers are not stored (every reader has the default ones).
    pub fn of_cluster(cluster: &Cluster) -> Vec<StoredObject> {
        let mut out = Vec::new();
        out.extend(
            cluster
                .namespaces
                .values()
                .cloned()
                .map(StoredObject::Namespace),
        );
        out.extend(cluster.nodes.values().cloned().map(StoredObject::Node));
        out.extend(cluster.endpoints.iter().map(|ep| {
            if cluster.is_host_network(&ep.id) {
                StoredObject::HostEndpoint(ep.clone())
            } else {
                StoredObject::Endpoint(ep.clone())
            }
        }));
        out.extend(cluster.policies.iter().map(|p| {
            let names = cluster.rule_names.get(&p.id).cloned().unwrap_or_default();
            StoredObject::policy(p.clone(), names)
        }));
        out
    }

    /// The parsed key this object is stored under.
    pub fn key_of(&self) -> Key {
        match self {
            StoredObject::Namespace(ns) => Key::Namespace {
                name: ns.name.clone(),
            },
            StoredObject::Endpoint(ep) => Key::Endpoint {
                node: ep.node.clone(),
                namespace: ep.id.namespace.clone(),
                pod: ep.id.name.clone(),
            },
            StoredObject::Policy(p) => Key::Policy {
                tier: p.id.tier.clone(),
                namespace: p.id.namespace.clone(),
                name: p.id.name.clone(),
            },
            StoredObject::Status(s) => Key::Status {
                node: s.node.clone(),
            },
            StoredObject::Node(n) => Key::Node {
                name: n.name.clone(),
            },
            StoredObject::HostEndpoint(ep) => Key::HostEndpoint {
                namespace: ep.id.namespace.clone(),
                pod: ep.id.name.clone(),
            },
            StoredObject::NamedPolicy(p, _) => Key::Policy {
                tier: p.id.tier.clone(),
                namespace: p.id.namespace.clone(),
                name: p.id.name.clone(),
            },
        }
    }

    /// The key this object is stored under; fails for names that cannot be key segments.
    pub fn key(&self) -> Result<String> {
        self.key_of().to_key()
    }

    /// Decodes the value at `key`, dropping the owner (see [`Record::decode`]).
    pub fn decode(key: &str, value: &[u8]) -> Result<StoredObject> {
        Record::decode(key, value).map(|r| r.object)
    }

    /// The JSON value for this object with its owner (see the module docs).
    pub fn encode(&self, owner: &str) -> Result<Vec<u8>> {
        let key = self.key()?;
        let spec = match self {
            StoredObject::Namespace(o) => serde_json::to_value(o),
            StoredObject::Endpoint(o) => serde_json::to_value(o),
            StoredObject::Policy(o) => serde_json::to_value(o),
            StoredObject::Status(o) => serde_json::to_value(o),
            StoredObject::Node(o) => serde_json::to_value(o),
            StoredObject::HostEndpoint(o) => serde_json::to_value(o),
            StoredObject::NamedPolicy(p, names) => serde_json::to_value(p).and_then(|mut v| {
                if let Some(obj) = v.as_object_mut() {
                    obj.insert(RULE_NAMES.into(), serde_json::to_value(names)?);
                }
                Ok(v)
            }),
        }
        .map_err(|e| codec_error(&key, e))?;
        let envelope = Envelope {
            api_version: API_VERSION.to_string(),
            kind: self.kind().to_string(),
            owner: owner.to_string(),
            spec,
        };
        serde_json::to_vec(&envelope).map_err(|e| codec_error(&key, e))
    }
}

/// A decoded value: the object and who owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub owner: String,
    pub object: StoredObject,
}

impl Record {
    pub fn new(owner: impl Into<String>, object: StoredObject) -> Self {
        Record {
            owner: owner.into(),
            object,
        }
    }

    /// Encodes the object with this record's owner.
    pub fn encode(&self) -> Result<Vec<u8>> {
        self.object.encode(&self.owner)
    }

    /// Decodes the value stored at `key`. Rejects an unknown apiVersion or kind, a spec that
    /// does not parse, and an object whose own key is not `key`, naming `key` each time.
    pub fn decode(key: &str, value: &[u8]) -> Result<Record> {
        let envelope: Envelope = serde_json::from_slice(value).map_err(|e| codec_error(key, e))?;
        if envelope.api_version != API_VERSION {
            return Err(StoreError::Codec {
                key: key.to_string(),
                reason: format!(
                    "unknown apiVersion {:?} (this Palisade reads {API_VERSION:?})",
                    envelope.api_version
                ),
            });
        }
        let spec = envelope.spec;
        let object = match envelope.kind.as_str() {
            "Namespace" => serde_json::from_value(spec).map(StoredObject::Namespace),
            "Endpoint" => serde_json::from_value(spec).map(StoredObject::Endpoint),
            "Policy" => decode_policy(spec),
            "AgentStatus" => serde_json::from_value(spec).map(StoredObject::Status),
            "Node" => serde_json::from_value(spec).map(StoredObject::Node),
            "HostEndpoint" => serde_json::from_value(spec).map(StoredObject::HostEndpoint),
            other => {
                return Err(StoreError::Codec {
                    key: key.to_string(),
                    reason: format!(
                        "unknown kind {other:?} (expected Namespace, Endpoint, HostEndpoint, \
                         Policy, Node or AgentStatus)"
                    ),
                })
            }
        }
        .map_err(|e| codec_error(key, format!("{} spec: {e}", envelope.kind)))?;
        let own_key = object.key()?;
        if own_key != key {
            return Err(StoreError::Codec {
                key: key.to_string(),
                reason: format!("{} belongs at {own_key}", object.kind()),
            });
        }
        // Also proves `key` is in the layout at all.
        keys::Key::parse(key)?;
        Ok(Record {
            owner: envelope.owner,
            object,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    api_version: String,
    kind: String,
    owner: String,
    spec: serde_json::Value,
}

/// The field of a `Policy` spec that holds its rule names: `{"ingress": [..], "egress": [..]}`,
/// one name per rule in order, `""` for a rule without one. Absent (values written before
/// it existed, NetworkPolicies): no names.
const RULE_NAMES: &str = "ruleNames";

fn names_empty(names: &RuleNames) -> bool {
    names
        .ingress
        .iter()
        .chain(&names.egress)
        .all(String::is_empty)
}

fn decode_policy(mut spec: serde_json::Value) -> serde_json::Result<StoredObject> {
    let names = match spec.as_object_mut().and_then(|o| o.remove(RULE_NAMES)) {
        Some(v) => serde_json::from_value::<RuleNames>(v)?,
        None => RuleNames::default(),
    };
    let policy: Policy = serde_json::from_value(spec)?;
    Ok(StoredObject::policy(policy, names))
}

fn codec_error(key: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Codec {
        key: key.to_string(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_model::{EndpointId, Labels, Selector};

    fn endpoint() -> Endpoint {
        let mut labels = Labels::new();
        labels.insert("app".into(), "web".into());
        Endpoint {
            id: EndpointId::new("prod", "web-0"),
            node: Some("node-1".into()),
            labels,
            ips: vec!["10.0.0.5".parse().unwrap()],
            ports: vec![],
        }
    }

    #[test]
    fn round_trips_and_keeps_the_owner() {
        let objects = [
            StoredObject::Endpoint(endpoint()),
            StoredObject::Namespace(Namespace::implicit("prod")),
            StoredObject::Policy(Policy {
                id: palisade_model::PolicyId {
                    tier: "default".into(),
                    namespace: Some("prod".into()),
                    name: "deny-all".into(),
                },
                order: 1000,
                selector: Selector::All,
                namespace_selector: Selector::All,
                staged: false,
                ingress: Some(vec![]),
                egress: None,
            }),
            StoredObject::Status(AgentStatus {
                node: "node-1".into(),
                in_sync: true,
                revision: 42,
                last_error: None,
                updated: 1,
            }),
            StoredObject::Node(palisade_model::Node {
                name: "node-1".into(),
                labels: Labels::new(),
                addresses: vec!["10.1.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
            }),
        ];
        for o in objects {
            let key = o.key().unwrap();
            let bytes = o.encode(OWNER_CONTROLLER).unwrap();
            let rec = Record::decode(&key, &bytes).unwrap();
            assert_eq!(rec.object, o);
            assert_eq!(rec.owner, OWNER_CONTROLLER);
        }
    }

    fn cnp() -> Policy {
        Policy {
            id: palisade_model::PolicyId {
                tier: palisade_model::ADMIN_TIER.into(),
                namespace: None,
                name: "protect".into(),
            },
            order: 7,
            selector: Selector::All,
            namespace_selector: Selector::All,
            staged: false,
            ingress: Some(vec![
                palisade_model::Rule {
                    action: palisade_model::Action::Pass,
                    peers: vec![],
                    ports: vec![],
                },
                palisade_model::Rule {
                    action: palisade_model::Action::Deny,
                    peers: vec![],
                    ports: vec![],
                },
            ]),
            egress: None,
        }
    }

    #[test]
    fn rule_names_are_kept_in_the_policy_value() {
        let names = RuleNames {
            ingress: vec!["".into(), "deny-rest".into()],
            egress: vec![],
        };
        let named = StoredObject::policy(cnp(), names.clone());
        assert_eq!(named, StoredObject::NamedPolicy(cnp(), names.clone()));
        let key = named.key().unwrap();
        assert_eq!(key, "/palisade/v1/policies/admin/_global/protect");
        let bytes = named.encode(OWNER_APPLY).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["kind"], "Policy");
        assert_eq!(
            v["spec"]["ruleNames"],
            serde_json::json!({"ingress": ["", "deny-rest"], "egress": []})
        );
        assert_eq!(v["spec"]["order"], 7);
        assert_eq!(Record::decode(&key, &bytes).unwrap().object, named);
        // A value written before names were kept has none; so does a policy whose rules are
        // all unnamed (it is stored without `ruleNames`).
        let old = StoredObject::Policy(cnp()).encode(OWNER_APPLY).unwrap();
        assert!(!String::from_utf8_lossy(&old).contains("ruleNames"));
        assert_eq!(
            Record::decode(&key, &old).unwrap().object,
            StoredObject::Policy(cnp())
        );
        let unnamed = RuleNames {
            ingress: vec!["".into(), "".into()],
            egress: vec![],
        };
        assert_eq!(
            StoredObject::policy(cnp(), unnamed),
            StoredObject::Policy(cnp())
        );
        assert_eq!(named.as_policy(), Some(&cnp()));
        // Bad names are a codec error naming the key.
        let mut bad = v.clone();
        bad["spec"]["ruleNames"] = serde_json::json!({"ingress": 3});
        let err = Record::decode(&key, &serde_json::to_vec(&bad).unwrap()).unwrap_err();
        assert!(err.to_string().contains(&key), "{err}");
    }

    #[test]
    fn a_host_endpoint_is_its_own_kind_under_its_own_prefix() {
        let host = StoredObject::HostEndpoint(endpoint());
        let key = host.key().unwrap();
        assert_eq!(key, "/palisade/v1/hostendpoints/prod/web-0");
        assert!(!key.starts_with(keys::ENDPOINTS));
        let bytes = host.encode(OWNER_CONTROLLER).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["kind"], "HostEndpoint");
        assert_eq!(Record::decode(&key, &bytes).unwrap().object, host);
        // Not readable at a workload endpoint's key, nor the other way round.
        let ep_key = keys::endpoint(Some("node-1"), "prod", "web-0").unwrap();
        assert!(Record::decode(&ep_key, &bytes).is_err());
        let ep = StoredObject::Endpoint(endpoint())
            .encode(OWNER_APPLY)
            .unwrap();
        assert!(Record::decode(&key, &ep).is_err());
    }

    /// A reader's cluster: a host endpoint is a host-networked pod with its node's address
    /// (whichever comes first), a later workload endpoint of the same pod replaces it.
    #[test]
    fn upsert_into_gives_host_endpoints_their_node_address() {
        let node = palisade_model::Node {
            name: "node-1".into(),
            labels: Labels::new(),
            addresses: vec![
                "192.168.0.1".parse().unwrap(),
                "192.168.0.2".parse().unwrap(),
            ],
        };
        for node_first in [true, false] {
            let mut c = Cluster::new();
            let objects = [
                StoredObject::Node(node.clone()),
                StoredObject::HostEndpoint(endpoint()),
            ];
            let order: Vec<_> = if node_first {
                objects.to_vec()
            } else {
                objects.iter().rev().cloned().collect()
            };
            for o in order {
                o.upsert_into(&mut c);
            }
            assert!(c.is_host_network(&endpoint().id));
            let ep = c.endpoint(&endpoint().id).unwrap();
            assert_eq!(
                ep.ips,
                vec!["192.168.0.1".parse::<std::net::IpAddr>().unwrap()]
            );
            StoredObject::Endpoint(endpoint()).upsert_into(&mut c);
            assert!(!c.is_host_network(&endpoint().id));
            assert_eq!(c.endpoint(&endpoint().id), Some(&endpoint()));
        }
    }

    #[test]
    fn envelope_is_the_documented_one() {
        let bytes = StoredObject::Endpoint(endpoint())
            .encode(OWNER_APPLY)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["apiVersion"], "palisade/v1");
        assert_eq!(v["kind"], "Endpoint");
        assert_eq!(v["owner"], "palisade-apply");
        assert_eq!(v["spec"]["id"]["name"], "web-0");
    }

    #[test]
    fn rejects_unknown_kind_version_and_misplaced_objects() {
        let key = "/palisade/v1/namespaces/a";
        let err = Record::decode(
            key,
            br#"{"apiVersion":"palisade/v1","kind":"Widget","owner":"x","spec":{}}"#,
        )
        .unwrap_err();
        assert!(
            matches!(&err, StoreError::Codec { key: k, reason } if k == key && reason.contains("Widget"))
        );
        let err = Record::decode(
            key,
            br#"{"apiVersion":"palisade/v9","kind":"Namespace","owner":"x","spec":{"name":"a"}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("palisade/v9"), "{err}");
        assert!(err.to_string().contains(key), "{err}");
        let err = Record::decode(
            key,
            br#"{"apiVersion":"palisade/v1","kind":"Namespace","owner":"x","spec":{"name":"b"}}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("/palisade/v1/namespaces/b"),
            "{err}"
        );
        assert!(Record::decode(key, b"not json").is_err());
    }
}
