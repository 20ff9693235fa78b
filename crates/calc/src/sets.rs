//! The IP sets that exist (those some active policy refers to), reference-counted, with
//! their members kept up to date as endpoints and namespaces change.
//!
//! Membership is tracked both ways (set → endpoints, endpoint → sets) so that a change to one
//! endpoint touches only the sets it was in and the sets the peer index says it could now be
//! in. A member (an address, or address/protocol/port) is counted, since two endpoints may
//! share an address; it leaves the set when its count drops to zero. Every appearance or
//! disappearance of a member of an existing set is journaled, netted per batch.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use palisade_model::{Labels, NamespaceMatch, Node, Protocol};

use crate::catalog::{Catalog, Pod};
use crate::fasthash::{FastMap, FastSet};
use crate::index::ScopedIndex;
use crate::setdef::{node_members, SetDef};
use crate::slab::Slab;
use crate::state::{IpSet, IpSetId, IpSetMember};

struct SetEntry {
    def: SetDef,
    /// Number of active policies referring to the set.
    refs: u32,
    /// Endpoints in the set (selector sets only).
    matched: FastSet<u32>,
    counts: FastMap<IpSetMember, u32>,
}

/// Net appearance (+1) or disappearance (−1) of members of existing sets in this batch.
pub(crate) type MemberJournal = BTreeMap<IpSetId, BTreeMap<IpSetMember, i32>>;

#[derive(Default)]
pub(crate) struct SetStore {
    sets: Slab<IpSetId, SetEntry>,
    /// Selector sets by pod selector, scoped to the namespace they name (or to any).
    peer_index: ScopedIndex,
    /// Selector sets that choose namespaces by label.
    by_namespace_selector: HashSet<u32>,
    named_ports: HashMap<(String, Protocol), u32>,
    /// Node sets (ClusterNetworkPolicy `nodes` peers), refilled when a node changes.
    node_sets: HashSet<u32>,
    /// Every node, by name.
    nodes: BTreeMap<String, Node>,
    /// Endpoint key → selector sets it is in.
    endpoint_sets: FastMap<u32, FastSet<u32>>,
    journal: MemberJournal,
}

fn scope(def: &SetDef) -> Option<&str> {
    match def {
        SetDef::Peer(peer) => match &peer.namespaces {
            NamespaceMatch::Name(ns) => Some(ns),
            NamespaceMatch::Selector(_) => None,
        },
        SetDef::NamedPort { .. } | SetDef::Nodes(_) => None,
    }
}

impl SetStore {
    pub(crate) fn len(&self) -> usize {
        self.sets.len()
    }

    pub(crate) fn take_journal(&mut self) -> MemberJournal {
        std::mem::take(&mut self.journal)
    }

    /// Adds a reference to the set; creates and fills it if it did not exist (returns true).
    pub(crate) fn incref(
        &mut self,
        id: &IpSetId,
        def: &SetDef,
        catalog: &Catalog,
        ip_sets: &mut BTreeMap<IpSetId, IpSet>,
    ) -> bool {
        if let Some(entry) = self.sets.key(id).and_then(|k| self.sets.get_mut(k)) {
            entry.refs += 1;
            return false;
        }
        // Filled in one pass over the endpoints that belong to it (the catalog checks
        // namespaces once per namespace), with maps sized up front.
        let matched = catalog.members(def);
        let mut counts: FastMap<IpSetMember, u32> = FastMap::default();
        counts.reserve(matched.len());
        for &ep_key in &matched {
            if let Some(pod) = catalog.pod(ep_key) {
                def.for_each_member(&pod, |m| *counts.entry(m).or_insert(0) += 1);
            }
        }
        if let SetDef::Nodes(sel) = def {
            for m in node_members(sel, self.nodes.values()) {
                counts.insert(m, 1);
            }
        }
        let mut members: Vec<IpSetMember> = counts.keys().cloned().collect();
        members.sort_unstable();
        // Named-port sets follow ports, not selectors: they list no matched endpoints.
        let by_selector = matches!(def, SetDef::Peer(_));
        let matched = if by_selector { matched } else { Vec::new() };
        let entry = SetEntry {
            def: def.clone(),
            refs: 1,
            matched: matched.iter().copied().collect(),
            counts,
        };
        ip_sets.insert(
            id.clone(),
            IpSet {
                id: id.clone(),
                kind: def.kind(),
                description: def.description(),
                members: BTreeSet::from_iter(members),
            },
        );
        let key = self.sets.insert(id.clone(), entry);
        for ep_key in matched {
            self.endpoint_sets.entry(ep_key).or_default().insert(key);
        }
        match def {
            SetDef::Peer(peer) => {
                self.peer_index.insert(key, scope(def), &peer.pods);
                if let NamespaceMatch::Selector(_) = peer.namespaces {
                    self.by_namespace_selector.insert(key);
                }
            }
            SetDef::NamedPort { name, protocol } => {
                self.named_ports.insert((name.clone(), *protocol), key);
            }
            SetDef::Nodes(_) => {
                self.node_sets.insert(key);
            }
        }
        true
    }

    /// Drops a reference; true when none is left (the set is removed by
    /// [`SetStore::remove_if_unused`]).
    pub(crate) fn decref(&mut self, id: &IpSetId) -> bool {
        match self.sets.key(id).and_then(|k| self.sets.get_mut(k)) {
            Some(entry) => {
                entry.refs = entry.refs.saturating_sub(1);
                entry.refs == 0
            }
            None => false,
        }
    }

    /// Removes the set if no active policy refers to it; true if it was removed.
    pub(crate) fn remove_if_unused(
        &mut self,
        id: &IpSetId,
        ip_sets: &mut BTreeMap<IpSetId, IpSet>,
    ) -> bool {
        let Some(key) = self.sets.key(id) else {
            return false;
        };
        if self.sets.get(key).is_some_and(|e| e.refs > 0) {
            return false;
        }
        let Some((_, entry)) = self.sets.remove(key) else {
            return false;
        };
        match &entry.def {
            SetDef::Peer(peer) => {
                self.peer_index.remove(key, scope(&entry.def), &peer.pods);
                self.by_namespace_selector.remove(&key);
            }
            SetDef::NamedPort { name, protocol } => {
                self.named_ports.remove(&(name.clone(), *protocol));
            }
            SetDef::Nodes(_) => {
                self.node_sets.remove(&key);
            }
        }
        for ep_key in entry.matched {
            if let Some(sets) = self.endpoint_sets.get_mut(&ep_key) {
                sets.remove(&key);
                if sets.is_empty() {
                    self.endpoint_sets.remove(&ep_key);
                }
            }
        }
        ip_sets.remove(id);
        self.journal.remove(id);
        true
    }

    /// A node was added or changed (`node` Some) or removed: refills every node set whose
    /// members change.
    pub(crate) fn node_changed(
        &mut self,
        name: &str,
        node: Option<Node>,
        ip_sets: &mut BTreeMap<IpSetId, IpSet>,
    ) {
        match node {
            Some(n) => self.nodes.insert(name.to_string(), n),
            None => self.nodes.remove(name),
        };
        let keys: Vec<u32> = self.node_sets.iter().copied().collect();
        for key in keys {
            let Some(entry) = self.sets.get(key) else {
                continue;
            };
            let SetDef::Nodes(sel) = &entry.def else {
                continue;
            };
            let after = node_members(sel, self.nodes.values());
            let mut before: Vec<IpSetMember> = entry.counts.keys().cloned().collect();
            before.sort();
            if before != after {
                self.change_members(key, &before, &after, ip_sets);
            }
        }
    }

    /// An endpoint was added (`old` None), changed, or removed (`new` None): updates every
    /// existing set it was or now is in.
    pub(crate) fn endpoint_changed(
        &mut self,
        ep_key: u32,
        old: Option<Pod<'_>>,
        new: Option<Pod<'_>>,
        namespace_labels: &Labels,
        ip_sets: &mut BTreeMap<IpSetId, IpSet>,
    ) {
        let mut candidates: Vec<u32> = self
            .endpoint_sets
            .get(&ep_key)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        if let Some(new) = new {
            self.peer_index
                .candidates(&new.id.namespace, &new.data.labels, &mut candidates);
        }
        candidates.sort_unstable();
        candidates.dedup();
        for set_key in candidates {
            self.reevaluate(ep_key, set_key, old, new, namespace_labels, ip_sets);
        }
        if self.named_ports.is_empty() {
            return;
        }
        let mut ports: Vec<(String, Protocol)> = old
            .into_iter()
            .chain(new)
            .flat_map(|e| e.data.ports.iter())
            .filter(|p| !p.name.is_empty())
            .map(|p| (p.name.clone(), p.protocol))
            .collect();
        ports.sort();
        ports.dedup();
        for port in ports {
            let Some(&set_key) = self.named_ports.get(&port) else {
                continue;
            };
            let Some(entry) = self.sets.get(set_key) else {
                continue;
            };
            let before = old.map(|e| entry.def.members(&e)).unwrap_or_default();
            let after = new.map(|e| entry.def.members(&e)).unwrap_or_default();
            self.change_members(set_key, &before, &after, ip_sets);
        }
    }

    /// A namespace's labels changed: endpoints of it may enter or leave the selector sets
    /// that choose namespaces by label.
    pub(crate) fn namespace_changed(
        &mut self,
        ns: &str,
        old_labels: &Labels,
        new_labels: &Labels,
        catalog: &Catalog,
        ip_sets: &mut BTreeMap<IpSetId, IpSet>,
    ) {
        let affected: Vec<u32> = self
            .by_namespace_selector
            .iter()
            .copied()
            .filter(|&k| match self.sets.get(k).map(|e| &e.def) {
                Some(SetDef::Peer(peer)) => match &peer.namespaces {
                    NamespaceMatch::Selector(sel) => {
                        sel.matches(old_labels) != sel.matches(new_labels)
                    }
                    NamespaceMatch::Name(_) => false,
                },
                _ => false,
            })
            .collect();
        if affected.is_empty() {
            return;
        }
        let endpoints: Vec<u32> = catalog.in_namespace(ns).collect();
        for set_key in affected {
            for &ep_key in &endpoints {
                let ep = catalog.pod(ep_key);
                self.reevaluate(ep_key, set_key, ep, ep, new_labels, ip_sets);
            }
        }
    }

    /// Brings one endpoint's membership of one selector set up to date: it was in the set
    /// with `old`'s members if the set lists it, and is now in it with `new`'s members if
    /// it matches.
    fn reevaluate(
        &mut self,
        ep_key: u32,
        set_key: u32,
        old: Option<Pod<'_>>,
        new: Option<Pod<'_>>,
        namespace_labels: &Labels,
        ip_sets: &mut BTreeMap<IpSetId, IpSet>,
    ) {
        let Some(entry) = self.sets.get_mut(set_key) else {
            return;
        };
        let was = entry.matched.contains(&ep_key);
        let now = new.is_some_and(|e| entry.def.matches(&e, namespace_labels));
        let before = match (was, old) {
            (true, Some(e)) => entry.def.members(&e),
            _ => Vec::new(),
        };
        let after = match (now, new) {
            (true, Some(e)) => entry.def.members(&e),
            _ => Vec::new(),
        };
        if was != now {
            if now {
                entry.matched.insert(ep_key);
                self.endpoint_sets
                    .entry(ep_key)
                    .or_default()
                    .insert(set_key);
            } else {
                entry.matched.remove(&ep_key);
                if let Some(sets) = self.endpoint_sets.get_mut(&ep_key) {
                    sets.remove(&set_key);
                    if sets.is_empty() {
                        self.endpoint_sets.remove(&ep_key);
                    }
                }
            }
        }
        if before != after {
            self.change_members(set_key, &before, &after, ip_sets);
        }
    }

    fn change_members(
        &mut self,
        set_key: u32,
        before: &[IpSetMember],
        after: &[IpSetMember],
        ip_sets: &mut BTreeMap<IpSetId, IpSet>,
    ) {
        let Some((id, entry)) = self
            .sets
            .id(set_key)
            .cloned()
            .zip(self.sets.get_mut(set_key))
        else {
            return;
        };
        let view = ip_sets.get_mut(&id);
        let mut appeared = Vec::new();
        let mut gone = Vec::new();
        for m in before.iter().filter(|m| !after.contains(m)) {
            if let Some(n) = entry.counts.get_mut(m) {
                *n -= 1;
                if *n == 0 {
                    entry.counts.remove(m);
                    gone.push(m.clone());
                }
            }
        }
        for m in after.iter().filter(|m| !before.contains(m)) {
            let n = entry.counts.entry(m.clone()).or_insert(0);
            *n += 1;
            if *n == 1 {
                appeared.push(m.clone());
            }
        }
        if appeared.is_empty() && gone.is_empty() {
            return;
        }
        let journal = self.journal.entry(id).or_default();
        if let Some(view) = view {
            for m in gone {
                view.members.remove(&m);
                *journal.entry(m).or_insert(0) -= 1;
            }
            for m in appeared {
                view.members.insert(m.clone());
                *journal.entry(m).or_insert(0) += 1;
            }
        }
    }
}
