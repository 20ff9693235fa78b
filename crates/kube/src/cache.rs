//! The controller's reflector: every watched object, already converted and trimmed to what it
//! contributes to the datastore, and from it the desired datastore contents.
//!
//! It follows kube-runtime's watcher protocol: `Init` opens a fresh buffer for a kind,
//! `InitApply` fills it, `InitDone` swaps it in whole (objects missing from the relist are
//! gone, whatever happened while the watch was down); `Apply`/`Delete` change one object.
//!
//! ClusterNetworkPolicies and Nodes are cluster-scoped: desired whenever valid. A pod or
//! NetworkPolicy is desired only while its namespace is known and valid, so deleting (or,
//! with a namespace selector, deselecting) a namespace removes its pods and policies at once.
//!
//! A host-networked pod is stored as a host endpoint with its node's addresses
//! (`convert::node_addresses_for_pod`, as `palisade matrix -f` gives it), or its own
//! `status.podIPs` while its Node is unknown or has none; without any address it is not
//! stored. So a change of a Node touches the host-networked pods on it (an index by node
//! finds them).

use std::collections::{BTreeMap, BTreeSet};

use palisade_store::StoredObject;

use crate::objects::{Converted, Kind, ObjectId};

/// One change from a watcher, already converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A (re)list of this kind begins.
    Init(Kind),
    /// An object of the (re)list in progress.
    InitApply(ObjectId, Converted),
    /// The (re)list is complete: the listed objects are all there is.
    InitDone(Kind),
    /// An object was created or changed.
    Apply(ObjectId, Converted),
    /// An object was deleted.
    Delete(ObjectId),
}

impl Change {
    /// The metrics label of the change.
    pub fn verb(&self) -> &'static str {
        match self {
            Change::Init(_) => "init",
            Change::InitApply(..) => "init_apply",
            Change::InitDone(_) => "init_done",
            Change::Apply(..) => "apply",
            Change::Delete(_) => "delete",
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Change::Init(k) | Change::InitDone(k) => *k,
            Change::InitApply(id, _) | Change::Apply(id, _) | Change::Delete(id) => id.kind,
        }
    }
}

/// What a change did to the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Nothing the datastore depends on yet (a relist in progress).
    Nothing,
    /// These objects' desired state may have changed.
    Touched(Vec<ObjectId>),
    /// A relist of this kind completed; `dropped` were known before and are gone now.
    Relisted { kind: Kind, dropped: Vec<ObjectId> },
}

#[derive(Debug, Default)]
pub struct Cache {
    objects: BTreeMap<ObjectId, Converted>,
    relisting: [Option<BTreeMap<ObjectId, Converted>>; Kind::COUNT],
    synced: [bool; Kind::COUNT],
    /// Host-networked pods by the node they run on.
    host_pods: BTreeMap<String, BTreeSet<ObjectId>>,
}

/// The node of a host-networked pod.
fn host_node(converted: &Converted) -> Option<&str> {
    match converted.stored()? {
        (_, StoredObject::HostEndpoint(ep)) => ep.node.as_deref(),
        _ => None,
    }
}

impl Cache {
    pub fn new() -> Self {
        Cache::default()
    }

    /// Whether every kind has completed its first list.
    pub fn synced(&self) -> bool {
        self.synced.iter().all(|s| *s)
    }

    pub fn kind_synced(&self, kind: Kind) -> bool {
        self.synced[kind.index()]
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn get(&self, id: &ObjectId) -> Option<&Converted> {
        self.objects.get(id)
    }

    pub fn apply(&mut self, change: Change) -> Effect {
        match change {
            Change::Init(kind) => {
                self.relisting[kind.index()] = Some(BTreeMap::new());
                Effect::Nothing
            }
            Change::InitApply(id, converted) => match &mut self.relisting[id.kind.index()] {
                Some(buffer) => {
                    buffer.insert(id, converted);
                    Effect::Nothing
                }
                // An InitApply outside a relist cannot happen with kube's watcher; take it
                // as an ordinary change rather than lose it.
                None => self.apply(Change::Apply(id, converted)),
            },
            Change::InitDone(kind) => {
                let fresh = self.relisting[kind.index()].take().unwrap_or_default();
                let old: Vec<ObjectId> = self.ids_of_kind(kind).cloned().collect();
                let dropped = old
                    .into_iter()
                    .filter(|id| !fresh.contains_key(id))
                    .collect::<Vec<_>>();
                self.objects.retain(|id, _| id.kind != kind);
                self.objects.extend(fresh);
                if kind == Kind::Pod {
                    self.index_host_pods();
                }
                self.synced[kind.index()] = true;
                Effect::Relisted { kind, dropped }
            }
            Change::Apply(id, converted) => {
                let touched = self.touched_by(&id);
                self.unindex(&id);
                if let Some(node) = host_node(&converted) {
                    let set = self.host_pods.entry(node.to_string()).or_default();
                    set.insert(id.clone());
                }
                self.objects.insert(id, converted);
                Effect::Touched(touched)
            }
            Change::Delete(id) => {
                let touched = self.touched_by(&id);
                self.unindex(&id);
                self.objects.remove(&id);
                Effect::Touched(touched)
            }
        }
    }

    /// Takes a pod out of the host-networked index.
    fn unindex(&mut self, id: &ObjectId) {
        let node = self.objects.get(id).and_then(host_node).map(str::to_string);
        if let Some(node) = node {
            if let Some(set) = self.host_pods.get_mut(&node) {
                set.remove(id);
                if set.is_empty() {
                    self.host_pods.remove(&node);
                }
            }
        }
    }

    fn index_host_pods(&mut self) {
        self.host_pods.clear();
        for (id, c) in &self.objects {
            if let Some(node) = host_node(c) {
                let set = self.host_pods.entry(node.to_string()).or_default();
                set.insert(id.clone());
            }
        }
    }

    fn ids_of_kind(&self, kind: Kind) -> impl Iterator<Item = &ObjectId> {
        self.objects.keys().filter(move |id| id.kind == kind)
    }

    /// The object itself; for a namespace, everything in it; for a node, the
    /// host-networked pods on it.
    fn touched_by(&self, id: &ObjectId) -> Vec<ObjectId> {
        let mut out = vec![id.clone()];
        if id.kind == Kind::Namespace {
            for kind in [Kind::Pod, Kind::NetworkPolicy] {
                out.extend(self.in_namespace(kind, &id.name).cloned());
            }
        }
        if id.kind == Kind::Node {
            out.extend(self.host_pods.get(&id.name).into_iter().flatten().cloned());
        }
        out
    }

    /// Objects of `kind` in namespace `ns`.
    pub fn in_namespace<'a>(&'a self, kind: Kind, ns: &str) -> impl Iterator<Item = &'a ObjectId> {
        let start = ObjectId::namespaced(kind, ns, "");
        let ns = ns.to_string();
        self.objects
            .range(start..)
            .map(|(id, _)| id)
            .take_while(move |id| id.kind == kind && id.namespace == ns)
    }

    fn namespace_ok(&self, ns: &str) -> bool {
        matches!(
            self.objects.get(&ObjectId::namespace(ns)),
            Some(Converted::Stored { .. })
        )
    }

    /// The key and object this cluster object should have in the datastore, if any.
    pub fn desired(&self, id: &ObjectId) -> Option<(String, StoredObject)> {
        let (key, object) = self.objects.get(id)?.stored()?;
        if !(id.kind.cluster_scoped() || self.namespace_ok(&id.namespace)) {
            return None;
        }
        match object {
            StoredObject::HostEndpoint(ep) => {
                let mut ep = ep.clone();
                if let Some(addresses) = self.node_addresses(ep.node.as_deref()) {
                    ep.ips = addresses;
                }
                (!ep.ips.is_empty()).then(|| (key.clone(), StoredObject::HostEndpoint(ep)))
            }
            _ => Some((key.clone(), object.clone())),
        }
    }

    /// The addresses a host-networked pod has on `node`, if the node is known with some.
    fn node_addresses(&self, node: Option<&str>) -> Option<Vec<std::net::IpAddr>> {
        let id = ObjectId::cluster(Kind::Node, node?);
        match self.objects.get(&id)?.stored()? {
            (_, StoredObject::Node(n)) => {
                let addresses = palisade_model::convert::node_addresses_for_pod(n);
                (!addresses.is_empty()).then_some(addresses)
            }
            _ => None,
        }
    }

    /// Everything the datastore should hold, by key.
    pub fn desired_all(&self) -> BTreeMap<String, StoredObject> {
        self.objects
            .keys()
            .filter_map(|id| self.desired(id))
            .collect()
    }

    /// Invalid objects and why.
    pub fn invalid(&self) -> impl Iterator<Item = (&ObjectId, &str)> {
        self.objects.iter().filter_map(|(id, c)| match c {
            Converted::Invalid(why) => Some((id, why.as_str())),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_model::{Endpoint, EndpointId, Namespace};

    fn ns_id(name: &str) -> ObjectId {
        ObjectId::namespace(name)
    }

    fn pod_id(ns: &str, name: &str) -> ObjectId {
        ObjectId::namespaced(Kind::Pod, ns, name)
    }

    fn stored(o: StoredObject) -> Converted {
        Converted::Stored {
            key: o.key().unwrap(),
            object: o,
        }
    }

    fn ns(name: &str) -> Converted {
        stored(StoredObject::Namespace(Namespace::implicit(name)))
    }

    fn pod(ns: &str, name: &str) -> Converted {
        stored(StoredObject::Endpoint(Endpoint {
            id: EndpointId::new(ns, name),
            node: Some("n1".into()),
            labels: Default::default(),
            ips: vec!["10.0.0.1".parse().unwrap()],
            ports: vec![],
        }))
    }

    fn list(cache: &mut Cache, kind: Kind, items: Vec<(ObjectId, Converted)>) -> Effect {
        cache.apply(Change::Init(kind));
        for (id, c) in items {
            assert_eq!(cache.apply(Change::InitApply(id, c)), Effect::Nothing);
        }
        cache.apply(Change::InitDone(kind))
    }

    fn synced_cache() -> Cache {
        let mut c = Cache::new();
        list(&mut c, Kind::Namespace, vec![(ns_id("a"), ns("a"))]);
        list(
            &mut c,
            Kind::Pod,
            vec![
                (pod_id("a", "p1"), pod("a", "p1")),
                (pod_id("a", "p2"), pod("a", "p2")),
            ],
        );
        list(&mut c, Kind::NetworkPolicy, vec![]);
        list(&mut c, Kind::ClusterNetworkPolicy, vec![]);
        list(&mut c, Kind::Node, vec![]);
        c
    }

    #[test]
    fn synced_only_after_every_kind_listed() {
        let mut c = Cache::new();
        list(&mut c, Kind::Namespace, vec![]);
        list(&mut c, Kind::Pod, vec![]);
        assert!(!c.synced());
        list(&mut c, Kind::NetworkPolicy, vec![]);
        list(&mut c, Kind::ClusterNetworkPolicy, vec![]);
        assert!(!c.synced());
        list(&mut c, Kind::Node, vec![]);
        assert!(c.synced());
    }

    #[test]
    fn relist_replaces_a_kind_whole_and_reports_what_vanished() {
        let mut c = synced_cache();
        let eff = list(&mut c, Kind::Pod, vec![(pod_id("a", "p2"), pod("a", "p2"))]);
        assert_eq!(
            eff,
            Effect::Relisted {
                kind: Kind::Pod,
                dropped: vec![pod_id("a", "p1")]
            }
        );
        assert!(c.get(&pod_id("a", "p1")).is_none());
        assert_eq!(c.desired_all().len(), 2, "namespace a and pod p2");
    }

    #[test]
    fn the_old_state_stays_in_use_until_the_relist_is_done() {
        let mut c = synced_cache();
        c.apply(Change::Init(Kind::Pod));
        assert!(c.desired(&pod_id("a", "p1")).is_some());
        assert_eq!(c.desired_all().len(), 3);
    }

    #[test]
    fn deleting_a_namespace_takes_its_pods_out_of_the_desired_set() {
        let mut c = synced_cache();
        let eff = c.apply(Change::Delete(ns_id("a")));
        assert_eq!(
            eff,
            Effect::Touched(vec![ns_id("a"), pod_id("a", "p1"), pod_id("a", "p2")])
        );
        assert!(c.desired_all().is_empty());
        // The pods come back once the namespace does.
        c.apply(Change::Apply(ns_id("a"), ns("a")));
        assert_eq!(c.desired_all().len(), 3);
    }

    #[test]
    fn namespace_touch_does_not_leak_into_similarly_named_namespaces() {
        let mut c = synced_cache();
        c.apply(Change::Apply(ns_id("ab"), ns("ab")));
        c.apply(Change::Apply(pod_id("ab", "x"), pod("ab", "x")));
        let Effect::Touched(ids) = c.apply(Change::Apply(ns_id("a"), ns("a"))) else {
            panic!("expected touched")
        };
        assert!(!ids.contains(&pod_id("ab", "x")), "{ids:?}");
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn skipped_and_invalid_objects_are_not_desired() {
        let mut c = synced_cache();
        c.apply(Change::Apply(
            pod_id("a", "p1"),
            Converted::Skipped("no IP yet"),
        ));
        c.apply(Change::Apply(
            pod_id("a", "p2"),
            Converted::Invalid("spec.containers[0].ports[0].containerPort: bad".into()),
        ));
        assert_eq!(c.desired_all().len(), 1);
        let invalid: Vec<_> = c.invalid().collect();
        assert_eq!(invalid.len(), 1);
        assert_eq!(invalid[0].0, &pod_id("a", "p2"));
    }

    #[test]
    fn pods_of_unknown_namespaces_wait_for_them() {
        let mut c = synced_cache();
        c.apply(Change::Apply(pod_id("later", "x"), pod("later", "x")));
        assert!(c.desired(&pod_id("later", "x")).is_none());
        let Effect::Touched(ids) = c.apply(Change::Apply(ns_id("later"), ns("later"))) else {
            panic!("expected touched")
        };
        assert!(ids.contains(&pod_id("later", "x")));
        assert!(c.desired(&pod_id("later", "x")).is_some());
    }

    fn node_id(name: &str) -> ObjectId {
        ObjectId::cluster(Kind::Node, name)
    }

    fn node(name: &str, ip: &str) -> Converted {
        stored(StoredObject::Node(palisade_model::Node {
            name: name.into(),
            labels: Default::default(),
            addresses: vec![ip.parse().unwrap()],
        }))
    }

    fn host_pod(ns: &str, name: &str, node: &str, ips: &[&str]) -> Converted {
        stored(StoredObject::HostEndpoint(Endpoint {
            id: EndpointId::new(ns, name),
            node: Some(node.into()),
            labels: Default::default(),
            ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
            ports: vec![],
        }))
    }

    fn desired_ips(c: &Cache, id: &ObjectId) -> Option<Vec<String>> {
        match c.desired(id)? {
            (_, StoredObject::HostEndpoint(ep)) => {
                Some(ep.ips.iter().map(ToString::to_string).collect())
            }
            other => panic!("host endpoint expected: {other:?}"),
        }
    }

    /// A host-networked pod has its node's address; a change of the node touches it (and
    /// only the pods on that node), also after the pod moved or the pods were relisted.
    #[test]
    fn host_networked_pods_follow_their_node() {
        let mut c = synced_cache();
        let exporter = pod_id("a", "exporter");
        c.apply(Change::Apply(
            exporter.clone(),
            host_pod("a", "exporter", "n1", &[]),
        ));
        assert_eq!(
            desired_ips(&c, &exporter),
            None,
            "no address at all: not stored"
        );
        let Effect::Touched(ids) = c.apply(Change::Apply(node_id("n1"), node("n1", "192.168.0.1")))
        else {
            panic!("expected touched")
        };
        assert_eq!(ids, vec![node_id("n1"), exporter.clone()]);
        assert_eq!(desired_ips(&c, &exporter), Some(vec!["192.168.0.1".into()]));
        let Effect::Touched(ids) = c.apply(Change::Apply(node_id("n2"), node("n2", "192.168.0.2")))
        else {
            panic!("expected touched")
        };
        assert_eq!(ids, vec![node_id("n2")], "not on n2");

        // Moves to n2: n2 touches it, n1 no longer does.
        c.apply(Change::Apply(
            exporter.clone(),
            host_pod("a", "exporter", "n2", &["192.168.0.2"]),
        ));
        let Effect::Touched(ids) = c.apply(Change::Apply(node_id("n1"), node("n1", "192.168.0.9")))
        else {
            panic!("expected touched")
        };
        assert_eq!(ids, vec![node_id("n1")]);
        list(
            &mut c,
            Kind::Pod,
            vec![(
                exporter.clone(),
                host_pod("a", "exporter", "n2", &["192.168.0.2"]),
            )],
        );
        let Effect::Touched(ids) = c.apply(Change::Apply(node_id("n2"), node("n2", "192.168.0.7")))
        else {
            panic!("expected touched")
        };
        assert_eq!(ids, vec![node_id("n2"), exporter.clone()]);
        assert_eq!(desired_ips(&c, &exporter), Some(vec!["192.168.0.7".into()]));
        // Without its node: its own address.
        c.apply(Change::Delete(node_id("n2")));
        assert_eq!(desired_ips(&c, &exporter), Some(vec!["192.168.0.2".into()]));
        // Deleted: no node touches it any more.
        c.apply(Change::Delete(exporter.clone()));
        let Effect::Touched(ids) = c.apply(Change::Apply(node_id("n2"), node("n2", "192.168.0.2")))
        else {
            panic!("expected touched")
        };
        assert_eq!(ids, vec![node_id("n2")]);
    }

    #[test]
    fn cluster_scoped_objects_need_no_namespace() {
        let mut c = synced_cache();
        let node = stored(StoredObject::Node(palisade_model::Node {
            name: "n1".into(),
            labels: Default::default(),
            addresses: vec!["192.168.0.1".parse().unwrap()],
        }));
        let id = ObjectId::cluster(Kind::Node, "n1");
        c.apply(Change::Apply(id.clone(), node));
        assert!(c.desired(&id).is_some());
        // Deleting a namespace of the same name does not touch it.
        let Effect::Touched(ids) = c.apply(Change::Delete(ns_id("n1"))) else {
            panic!("expected touched")
        };
        assert_eq!(ids, vec![ns_id("n1")]);
        assert!(c.desired(&id).is_some());
    }
}
