//! Applying one [`Update`] to the cluster view: catalog, policy index, local selection and
//! set membership. Set existence and the `DesiredState`'s policies and endpoints change only
//! in [`super::flush`].

use std::collections::BTreeSet;

use palisade_model::{Endpoint, EndpointId, Labels, Namespace, Policy, PolicyId, Tier};

use super::{Calculator, PolicyEntry};
use crate::catalog::{EpEntry, Pod};
use crate::compile::compile_policy;
use crate::state::Update;

impl Calculator {
    pub(super) fn process(&mut self, update: Update) {
        match update {
            Update::NamespaceUpsert(Namespace { name, labels }) => {
                self.set_namespace(&name, Some(labels))
            }
            Update::NamespaceRemove(name) => self.set_namespace(&name, None),
            Update::EndpointUpsert(ep) => self.upsert_endpoint(ep),
            Update::EndpointRemove(id) => self.remove_endpoint(&id),
            Update::PolicyUpsert(policy) => self.upsert_policy(policy),
            Update::PolicyRemove(id) => self.remove_policy(&id),
            Update::TierUpsert(tier) => self.upsert_tier(tier),
            Update::NodeUpsert(node) => {
                let name = node.name.clone();
                self.sets
                    .node_changed(&name, Some(node), &mut self.state.ip_sets)
            }
            Update::NodeRemove(name) => {
                self.sets.node_changed(&name, None, &mut self.state.ip_sets)
            }
        }
    }

    fn set_namespace(&mut self, name: &str, labels: Option<Labels>) {
        let old = self.catalog.namespace_labels(name).into_owned();
        match labels {
            Some(labels) => self.catalog.namespaces.insert(name.to_string(), labels),
            None => self.catalog.namespaces.remove(name),
        };
        let new = self.catalog.namespace_labels(name).into_owned();
        if old == new {
            return;
        }
        self.sets
            .namespace_changed(name, &old, &new, &self.catalog, &mut self.state.ip_sets);
        for ep_key in self.catalog.local(Some(name)) {
            self.reselect(ep_key);
        }
    }

    fn upsert_endpoint(&mut self, new: Endpoint) {
        // Which other node a pod runs on changes nothing here: the catalog keeps only
        // whether it is this one.
        let local = new.node.as_deref() == Some(self.config.node.as_str());
        let id = new.id.clone();
        let (key, old) = match self.catalog.endpoints.key(&id) {
            Some(key) => {
                let Some(entry) = self.catalog.endpoints.get(key) else {
                    return;
                };
                if entry.local == local && entry.data.same_as(&new) {
                    return;
                }
                let data = self.catalog.intern(new);
                let Some(entry) = self.catalog.endpoints.get_mut(key) else {
                    return;
                };
                let old = std::mem::replace(&mut entry.data, data);
                let was_local = std::mem::replace(&mut entry.local, local);
                (key, Some((old, was_local)))
            }
            None => {
                let entry = EpEntry {
                    data: self.catalog.intern(new),
                    local,
                    selected: BTreeSet::new(),
                };
                (self.catalog.endpoints.insert(id.clone(), entry), None)
            }
        };
        if let Some((old, was_local)) = &old {
            self.catalog.unindex(key, &id, old, *was_local);
        }
        self.catalog.index(key);
        if let Some(pod) = self.catalog.pod(key) {
            let ns_labels = self.catalog.namespace_labels(&id.namespace);
            self.sets.endpoint_changed(
                key,
                old.as_ref().map(|(data, _)| Pod { id: &id, data }),
                Some(pod),
                &ns_labels,
                &mut self.state.ip_sets,
            );
        }
        let was_local = old.as_ref().is_some_and(|(_, l)| *l);
        if let Some((data, _)) = old {
            self.catalog.release(data);
        }
        if local {
            self.reselect(key);
        } else if was_local {
            self.deselect_all(key);
        }
        if local || was_local {
            self.dirty_endpoints.insert(id);
        }
    }

    fn remove_endpoint(&mut self, id: &EndpointId) {
        let Some(key) = self.catalog.endpoints.key(id) else {
            return;
        };
        if self.catalog.endpoints.get(key).is_some_and(|e| e.local) {
            self.deselect_all(key);
            self.dirty_endpoints.insert(id.clone());
        }
        let Some((_, entry)) = self.catalog.endpoints.remove(key) else {
            return;
        };
        self.catalog.unindex(key, id, &entry.data, entry.local);
        let ns_labels = self.catalog.namespace_labels(&id.namespace);
        self.sets.endpoint_changed(
            key,
            Some(Pod {
                id,
                data: &entry.data,
            }),
            None,
            &ns_labels,
            &mut self.state.ip_sets,
        );
        self.catalog.release(entry.data);
    }

    /// Recomputes which policies select a local endpoint, from the policy index candidates
    /// and the policies that selected it so far.
    fn reselect(&mut self, ep_key: u32) {
        let Some((id, entry)) = self.catalog.endpoints.entry(ep_key) else {
            return;
        };
        let labels = &entry.data.labels;
        let ns_labels = self.catalog.namespace_labels(&id.namespace);
        let mut candidates: Vec<u32> = entry.selected.iter().copied().collect();
        self.policy_index
            .candidates(&id.namespace, labels, &mut candidates);
        candidates.sort_unstable();
        candidates.dedup();
        let now: BTreeSet<u32> = candidates
            .into_iter()
            .filter(|&pk| {
                self.policies
                    .get(pk)
                    .is_some_and(|p| p.policy.selects_pod(&id.namespace, labels, &ns_labels))
            })
            .collect();
        if now == entry.selected {
            return;
        }
        let id = id.clone();
        let before = entry.selected.clone();
        for &pk in before.difference(&now) {
            self.set_selected(pk, ep_key, false);
        }
        for &pk in now.difference(&before) {
            self.set_selected(pk, ep_key, true);
        }
        if let Some(entry) = self.catalog.endpoints.get_mut(ep_key) {
            entry.selected = now;
        }
        self.dirty_endpoints.insert(id);
    }

    /// A local endpoint leaves the node or the cluster: no policy selects it any more.
    fn deselect_all(&mut self, ep_key: u32) {
        let Some(entry) = self.catalog.endpoints.get_mut(ep_key) else {
            return;
        };
        for pk in std::mem::take(&mut entry.selected) {
            self.set_selected(pk, ep_key, false);
        }
    }

    /// Records on the policy side that it selects (or no longer selects) an endpoint.
    fn set_selected(&mut self, policy_key: u32, ep_key: u32, selected: bool) {
        if let Some(p) = self.policies.get_mut(policy_key) {
            let changed = if selected {
                p.selected.insert(ep_key)
            } else {
                p.selected.remove(&ep_key)
            };
            if changed {
                self.dirty_policies.insert(p.policy.id.clone());
            }
        }
    }

    fn upsert_policy(&mut self, policy: Policy) {
        let id = policy.id.clone();
        let compiled = compile_policy(&policy);
        let key = match self.policies.key(&id) {
            Some(key) => {
                let Some(entry) = self.policies.get_mut(key) else {
                    return;
                };
                if entry.policy == policy {
                    return;
                }
                self.policy_index.remove(
                    key,
                    entry.policy.id.namespace.as_deref(),
                    &entry.policy.selector,
                );
                entry.policy = policy;
                entry.compiled = compiled;
                key
            }
            None => self.policies.insert(
                id.clone(),
                PolicyEntry {
                    policy,
                    compiled,
                    selected: BTreeSet::new(),
                },
            ),
        };
        let Some(entry) = self.policies.get(key) else {
            return;
        };
        let policy = &entry.policy;
        self.policy_index
            .insert(key, id.namespace.as_deref(), &policy.selector);
        let now: BTreeSet<u32> = self
            .catalog
            .local(id.namespace.as_deref())
            .into_iter()
            .filter(|&ek| {
                self.catalog.endpoints.entry(ek).is_some_and(|(eid, e)| {
                    policy.selects_pod(
                        &eid.namespace,
                        &e.data.labels,
                        &self.catalog.namespace_labels(&eid.namespace),
                    )
                })
            })
            .collect();
        let before = entry.selected.clone();
        for &ek in before.difference(&now) {
            if let Some(e) = self.catalog.endpoints.get_mut(ek) {
                e.selected.remove(&key);
            }
        }
        for &ek in now.difference(&before) {
            if let Some(e) = self.catalog.endpoints.get_mut(ek) {
                e.selected.insert(key);
            }
        }
        // Order, tier membership or directions may have changed even where the selection
        // did not: every endpoint selected before or now gets its tiers recomputed.
        for ek in before.union(&now) {
            if let Some(eid) = self.catalog.endpoints.id(*ek) {
                self.dirty_endpoints.insert(eid.clone());
            }
        }
        if let Some(entry) = self.policies.get_mut(key) {
            entry.selected = now;
        }
        self.dirty_policies.insert(id);
    }

    fn remove_policy(&mut self, id: &PolicyId) {
        let Some(key) = self.policies.key(id) else {
            return;
        };
        let Some((_, entry)) = self.policies.remove(key) else {
            return;
        };
        self.policy_index.remove(
            key,
            entry.policy.id.namespace.as_deref(),
            &entry.policy.selector,
        );
        for ek in entry.selected {
            if let Some(e) = self.catalog.endpoints.get_mut(ek) {
                e.selected.remove(&key);
            }
            if let Some(eid) = self.catalog.endpoints.id(ek) {
                self.dirty_endpoints.insert(eid.clone());
            }
        }
        self.dirty_policies.insert(id.clone());
    }

    fn upsert_tier(&mut self, tier: Tier) {
        let value = (tier.order, tier.default_action);
        if self.tiers.get(&tier.name) == Some(&value) {
            return;
        }
        self.tiers.insert(tier.name, value);
        for ek in self.catalog.local(None) {
            if let Some(eid) = self.catalog.endpoints.id(ek) {
                self.dirty_endpoints.insert(eid.clone());
            }
        }
    }
}
