//! End of a batch: turn the dirty policies and endpoints into the new [`DesiredState`] and
//! the [`Delta`]s that lead there, in dependency-safe order:
//!
//! 1. sets created (each followed by its members), then member changes of existing sets;
//! 2. policies changed (they may now refer to the new sets);
//! 3. endpoints changed (they may now refer to the changed policies);
//! 4. endpoints removed, policies removed, sets removed (the reverse order).

use std::collections::BTreeSet;

use palisade_model::EndpointId;

use super::Calculator;
use crate::catalog::EpEntry;
use crate::compile::endpoint_tiers;
use crate::state::{Delta, LocalEndpoint};

impl Calculator {
    pub(super) fn flush(&mut self) -> Vec<Delta> {
        let mut created = BTreeSet::new();
        let mut unused = BTreeSet::new();
        let mut policies_changed = Vec::new();
        let mut policies_removed = Vec::new();
        for pid in std::mem::take(&mut self.dirty_policies) {
            let new = self
                .policies
                .by_id(&pid)
                .filter(|e| !e.selected.is_empty())
                .map(|e| &e.compiled);
            if self.state.policies.get(&pid) == new.map(|c| &c.policy) {
                continue;
            }
            let old_refs = self.active_refs.remove(&pid).unwrap_or_default();
            match new {
                Some(compiled) => {
                    for (id, def) in &compiled.sets {
                        if self
                            .sets
                            .incref(id, def, &self.catalog, &mut self.state.ip_sets)
                        {
                            created.insert(id.clone());
                        }
                    }
                    let refs = compiled.sets.iter().map(|(id, _)| id.clone()).collect();
                    self.active_refs.insert(pid.clone(), refs);
                    self.state
                        .policies
                        .insert(pid.clone(), compiled.policy.clone());
                    policies_changed.push(pid);
                }
                None => {
                    self.state.policies.remove(&pid);
                    policies_removed.push(pid);
                }
            }
            for id in old_refs {
                if self.sets.decref(&id) {
                    unused.insert(id);
                }
            }
        }

        let mut endpoints_changed = Vec::new();
        let mut endpoints_removed = Vec::new();
        for eid in std::mem::take(&mut self.dirty_endpoints) {
            let new = self
                .catalog
                .endpoints
                .by_id(&eid)
                .filter(|e| e.local)
                .map(|e| self.local_endpoint(&eid, e));
            match new {
                Some(new) => {
                    if self.state.endpoints.get(&eid) != Some(&new) {
                        self.state.endpoints.insert(eid.clone(), new);
                        endpoints_changed.push(eid);
                    }
                }
                None => {
                    if self.state.endpoints.remove(&eid).is_some() {
                        endpoints_removed.push(eid);
                    }
                }
            }
        }

        let sets_removed: Vec<_> = unused
            .into_iter()
            .filter(|id| self.sets.remove_if_unused(id, &mut self.state.ip_sets))
            .collect();
        let journal = self.sets.take_journal();

        let mut deltas = Vec::new();
        for id in &created {
            let Some(set) = self.state.ip_sets.get(id) else {
                continue;
            };
            deltas.push(Delta::SetCreated {
                id: id.clone(),
                kind: set.kind,
            });
            deltas.extend(set.members.iter().map(|m| Delta::SetMemberAdded {
                id: id.clone(),
                member: m.clone(),
            }));
        }
        for (id, changes) in journal {
            if created.contains(&id) || !self.state.ip_sets.contains_key(&id) {
                continue;
            }
            for (member, net) in changes {
                let id = id.clone();
                match net.signum() {
                    1 => deltas.push(Delta::SetMemberAdded { id, member }),
                    -1 => deltas.push(Delta::SetMemberRemoved { id, member }),
                    _ => {}
                }
            }
        }
        deltas.extend(
            policies_changed
                .into_iter()
                .map(|id| Delta::PolicyChanged { id }),
        );
        deltas.extend(
            endpoints_changed
                .into_iter()
                .map(|id| Delta::EndpointChanged { id }),
        );
        deltas.extend(
            endpoints_removed
                .into_iter()
                .map(|id| Delta::EndpointRemoved { id }),
        );
        deltas.extend(
            policies_removed
                .into_iter()
                .map(|id| Delta::PolicyRemoved { id }),
        );
        deltas.extend(sets_removed.into_iter().map(|id| Delta::SetRemoved { id }));
        deltas
    }

    fn local_endpoint(&self, id: &EndpointId, entry: &EpEntry) -> LocalEndpoint {
        let policies = entry
            .selected
            .iter()
            .filter_map(|&pk| self.policies.get(pk))
            .map(|p| &p.policy);
        let tiers = endpoint_tiers(policies, |t| Self::tier_of(&self.tiers, t));
        // The interface names are hashes of the id under fixed prefixes: reuse the ones
        // computed when the endpoint first appeared.
        let (iface, iface_aliases) = match self.state.endpoints.get(id) {
            Some(known) => (known.iface.clone(), known.iface_aliases.clone()),
            None => {
                let iface = self.config.iface(id);
                let aliases = self.config.iface_aliases(id, &iface);
                (iface, aliases)
            }
        };
        LocalEndpoint {
            id: id.clone(),
            iface,
            iface_aliases,
            ips: entry.data.ips.to_vec(),
            tiers,
        }
    }
}
