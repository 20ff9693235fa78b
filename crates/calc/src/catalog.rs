//! Every namespace and endpoint in the cluster, with the indexes the calculator needs to
//! find endpoints quickly: by namespace, by label, by named port, and the local ones.
//!
//! An agent holds every pod of the cluster here, so each is kept compact ([`PodData`]): its
//! id once (the slab's), and its labels and ports interned, one shared copy per distinct
//! label set and port list (replicas of a workload have the same ones).

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use palisade_model::{
    Endpoint, EndpointId, Labels, NamedPort, Namespace, NamespaceMatch, Protocol, Selector,
};

use crate::fasthash::FastSet;
use crate::index::{index_key, IndexKey};
use crate::pod::PodView;
use crate::setdef::SetDef;
use crate::slab::Slab;

/// An endpoint's labels, ports and addresses as the catalog keeps them (its id is the
/// slab's, its node only as [`EpEntry::local`]).
pub(crate) struct PodData {
    pub(crate) labels: Arc<Labels>,
    pub(crate) ports: Arc<[NamedPort]>,
    pub(crate) ips: Box<[IpAddr]>,
}

impl PodData {
    /// Whether `ep` has the same labels, ports and addresses.
    pub(crate) fn same_as(&self, ep: &Endpoint) -> bool {
        *self.labels == ep.labels && *self.ports == ep.ports[..] && *self.ips == ep.ips[..]
    }
}

/// An endpoint of the catalog, read through [`PodView`].
#[derive(Clone, Copy)]
pub(crate) struct Pod<'a> {
    pub(crate) id: &'a EndpointId,
    pub(crate) data: &'a PodData,
}

impl PodView for Pod<'_> {
    fn id(&self) -> &EndpointId {
        self.id
    }
    fn labels(&self) -> &Labels {
        &self.data.labels
    }
    fn ips(&self) -> &[IpAddr] {
        &self.data.ips
    }
    fn ports(&self) -> &[NamedPort] {
        &self.data.ports
    }
}

/// One endpoint as the calculator keeps it.
pub(crate) struct EpEntry {
    pub(crate) data: PodData,
    /// Whether it runs on this node.
    pub(crate) local: bool,
    /// For a local endpoint: keys of the policies that select it.
    pub(crate) selected: BTreeSet<u32>,
}

#[derive(Default)]
pub(crate) struct Catalog {
    /// Declared namespaces; an undeclared one has only its name label.
    pub(crate) namespaces: HashMap<String, Labels>,
    pub(crate) endpoints: Slab<EndpointId, EpEntry>,
    by_namespace: HashMap<String, HashSet<u32>>,
    by_label: HashMap<String, HashMap<String, HashSet<u32>>>,
    by_named_port: HashMap<(String, Protocol), HashSet<u32>>,
    local_by_namespace: HashMap<String, BTreeSet<u32>>,
    /// One copy of each distinct label set and port list the endpoints have.
    label_sets: HashSet<Arc<Labels>>,
    port_lists: HashSet<Arc<[NamedPort]>>,
}

fn add<K: std::hash::Hash + Eq>(map: &mut HashMap<K, HashSet<u32>>, k: K, item: u32) {
    map.entry(k).or_default().insert(item);
}

fn del<K: std::hash::Hash + Eq>(map: &mut HashMap<K, HashSet<u32>>, k: &K, item: u32) {
    if let Some(items) = map.get_mut(k) {
        items.remove(&item);
        if items.is_empty() {
            map.remove(k);
        }
    }
}

impl Catalog {
    /// Labels of a namespace (declared, or implicit with only the name label).
    pub(crate) fn namespace_labels(&self, ns: &str) -> Cow<'_, Labels> {
        match self.namespaces.get(ns) {
            Some(labels) => Cow::Borrowed(labels),
            None => Cow::Owned(Namespace::implicit(ns).labels),
        }
    }

    /// The endpoint stored under `key`.
    pub(crate) fn pod(&self, key: u32) -> Option<Pod<'_>> {
        self.endpoints
            .entry(key)
            .map(|(id, e)| Pod { id, data: &e.data })
    }

    /// The compact form of an endpoint, sharing labels and ports with the endpoints that
    /// have the same ones. Give it back with [`Catalog::release`] when it is dropped.
    pub(crate) fn intern(&mut self, ep: Endpoint) -> PodData {
        let labels = match self.label_sets.get(&ep.labels) {
            Some(shared) => shared.clone(),
            None => {
                let new = Arc::new(ep.labels);
                self.label_sets.insert(new.clone());
                new
            }
        };
        let ports = match self.port_lists.get(&ep.ports[..]) {
            Some(shared) => shared.clone(),
            None => {
                let new: Arc<[NamedPort]> = ep.ports.into();
                self.port_lists.insert(new.clone());
                new
            }
        };
        PodData {
            labels,
            ports,
            ips: ep.ips.into_boxed_slice(),
        }
    }

    /// Drops an endpoint's data: the shared labels and ports no other endpoint uses leave
    /// the catalog.
    pub(crate) fn release(&mut self, data: PodData) {
        // Held by the set and `data`: no endpoint uses it after this.
        if Arc::strong_count(&data.labels) == 2 {
            self.label_sets.remove(&*data.labels);
        }
        if Arc::strong_count(&data.ports) == 2 {
            self.port_lists.remove(&*data.ports);
        }
    }

    /// Adds the endpoint stored under `key` to the indexes.
    pub(crate) fn index(&mut self, key: u32) {
        let Some((id, entry)) = self.endpoints.entry(key) else {
            return;
        };
        let (data, local) = (&entry.data, entry.local);
        add(&mut self.by_namespace, id.namespace.clone(), key);
        for (k, v) in data.labels.iter() {
            add(self.by_label.entry(k.clone()).or_default(), v.clone(), key);
        }
        for p in data.ports.iter().filter(|p| !p.name.is_empty()) {
            add(&mut self.by_named_port, (p.name.clone(), p.protocol), key);
        }
        if local {
            self.local_by_namespace
                .entry(id.namespace.clone())
                .or_default()
                .insert(key);
        }
    }

    pub(crate) fn unindex(&mut self, key: u32, id: &EndpointId, data: &PodData, local: bool) {
        del(&mut self.by_namespace, &id.namespace, key);
        for (k, v) in data.labels.iter() {
            if let Some(values) = self.by_label.get_mut(k) {
                del(values, v, key);
                if values.is_empty() {
                    self.by_label.remove(k);
                }
            }
        }
        for p in data.ports.iter().filter(|p| !p.name.is_empty()) {
            del(&mut self.by_named_port, &(p.name.clone(), p.protocol), key);
        }
        if local {
            if let Some(keys) = self.local_by_namespace.get_mut(&id.namespace) {
                keys.remove(&key);
                if keys.is_empty() {
                    self.local_by_namespace.remove(&id.namespace);
                }
            }
        }
    }

    /// Keys of the endpoints of a namespace.
    pub(crate) fn in_namespace(&self, ns: &str) -> impl Iterator<Item = u32> + '_ {
        self.by_namespace.get(ns).into_iter().flatten().copied()
    }

    /// Keys of the local endpoints of a namespace (`None`: of every namespace).
    pub(crate) fn local(&self, ns: Option<&str>) -> Vec<u32> {
        match ns {
            Some(ns) => self
                .local_by_namespace
                .get(ns)
                .into_iter()
                .flatten()
                .copied()
                .collect(),
            None => self
                .local_by_namespace
                .values()
                .flatten()
                .copied()
                .collect(),
        }
    }

    /// The endpoints that belong to a set ([`SetDef::matches`]), found through the smaller
    /// of the namespace and label indexes. A namespace selector is evaluated once per
    /// namespace, not once per endpoint.
    pub(crate) fn members(&self, def: &SetDef) -> Vec<u32> {
        let peer = match def {
            SetDef::NamedPort { name, protocol } => {
                // The index holds exactly the endpoints declaring the port.
                return self
                    .by_named_port
                    .get(&(name.clone(), *protocol))
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|&k| {
                        self.pod(k)
                            .is_some_and(|p| p.named_port(name, *protocol).is_some())
                    })
                    .collect();
            }
            SetDef::Peer(peer) => peer,
            // Node sets hold node addresses, no endpoint.
            SetDef::Nodes(_) => return Vec::new(),
        };
        let namespaces: Vec<(&String, &HashSet<u32>)> = match &peer.namespaces {
            NamespaceMatch::Name(ns) => self.by_namespace.get_key_value(ns).into_iter().collect(),
            NamespaceMatch::Selector(sel) => self
                .by_namespace
                .iter()
                .filter(|(ns, _)| sel.matches(&self.namespace_labels(ns)))
                .collect(),
        };
        let labels = self.label_buckets(&peer.pods);
        let size = |buckets: &[&HashSet<u32>]| buckets.iter().map(|b| b.len()).sum::<usize>();
        let in_ns: usize = namespaces.iter().map(|(_, keys)| keys.len()).sum();
        let pods_match = |k: u32| {
            self.endpoints
                .get(k)
                .is_some_and(|e| peer.pods.matches(&e.data.labels))
        };
        // A selector that is one term the label index answers exactly needs no evaluation
        // for the endpoints found through the index.
        let exact = matches!(
            peer.pods,
            Selector::Eq(..) | Selector::In(..) | Selector::Has(..)
        );
        match labels {
            Some(label) if size(&label) < in_ns => {
                // Through the label index: the namespace is checked per endpoint, against the
                // (few) matching namespaces.
                let names: FastSet<&str> = namespaces.iter().map(|(ns, _)| ns.as_str()).collect();
                label
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|&k| {
                        self.endpoints.entry(k).is_some_and(|(id, e)| {
                            names.contains(id.namespace.as_str())
                                && (exact || peer.pods.matches(&e.data.labels))
                        })
                    })
                    .collect()
            }
            // Through the namespace index: every key is in a matching namespace.
            _ => namespaces
                .into_iter()
                .flat_map(|(_, keys)| keys.iter().copied())
                .filter(|&k| pods_match(k))
                .collect(),
        }
    }

    /// The label index buckets holding every endpoint a pod selector can match (`None`: the
    /// selector requires no label, so no bucket narrows it down).
    fn label_buckets<'a>(&'a self, pods: &'a Selector) -> Option<Vec<&'a HashSet<u32>>> {
        match index_key(pods) {
            IndexKey::Values(k, mut vs) => Some(match self.by_label.get(k) {
                Some(values) => {
                    // `k in {a, a}` must not list the endpoints of `a` twice.
                    vs.sort_unstable();
                    vs.dedup();
                    vs.iter().filter_map(|v| values.get(*v)).collect()
                }
                None => Vec::new(),
            }),
            IndexKey::Key(k) => Some(
                self.by_label
                    .get(k)
                    .into_iter()
                    .flat_map(|values| values.values())
                    .collect(),
            ),
            IndexKey::None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, app: &str) -> Endpoint {
        Endpoint {
            id: EndpointId::new("ns", name),
            node: None,
            labels: [("app".to_string(), app.to_string())].into(),
            ips: vec!["10.0.0.1".parse().unwrap()],
            ports: vec![NamedPort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
            }],
        }
    }

    #[test]
    fn equal_labels_and_ports_are_kept_once_until_the_last_user_is_released() {
        let mut c = Catalog::default();
        let a = c.intern(pod("a", "web"));
        let b = c.intern(pod("b", "web"));
        let other = c.intern(pod("c", "db"));
        assert!(Arc::ptr_eq(&a.labels, &b.labels));
        assert!(Arc::ptr_eq(&a.ports, &other.ports));
        assert!(!Arc::ptr_eq(&a.labels, &other.labels));
        assert_eq!((c.label_sets.len(), c.port_lists.len()), (2, 1));
        assert!(a.same_as(&pod("x", "web")) && !a.same_as(&pod("x", "db")));

        c.release(other);
        assert_eq!((c.label_sets.len(), c.port_lists.len()), (1, 1));
        c.release(a);
        assert_eq!((c.label_sets.len(), c.port_lists.len()), (1, 1));
        c.release(b);
        assert_eq!((c.label_sets.len(), c.port_lists.len()), (0, 0));
    }
}
