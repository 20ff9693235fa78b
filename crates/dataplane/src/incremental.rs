//! Incremental programs: instead of rendering the whole node for every batch, the renderer's
//! [`palisade_render::delta::plan`] says which sets, members and chains a batch of calc
//! [`Delta`]s changes, and only those are converted and patched into the nftables or the
//! iptables + ipset program the [`crate::Table`] holds. The plan needs the state before the
//! batch; [`Incremental`] keeps the part of it the plan reads (policies, endpoints, set kinds:
//! no members) and the members of every rendered set (an nftables interval set's elements
//! depend on all its members).
//!
//! The patched program equals a full render of the new state (checked by the tests and, when
//! asked, after every patch); the agent still renders everything at start, after a failure
//! and at every resync, so any drift would be corrected.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use palisade_calc::{Delta, DesiredState, IpSet};
use palisade_model::{EndpointId, PolicyId};
use palisade_render::build::families;
use palisade_render::delta::Plan;
use palisade_render::ir::{Chain, SetDef, SetEntry, SetRef};
use palisade_render::{nft, RenderConfig, Ruleset};

use crate::error::DataplaneError;
use crate::from_ir::{
    dispatch_elements, family, ipset_member, ipset_spec, ipt_chain, nft_chain, nft_set, verdict_map,
};
use crate::ipt::program::{canonical_member, IptablesProgram};
use crate::nft::program::{canonical_element, NftProgram};
use crate::origins::{chain_origins, Origins};

/// One rendered set's members.
#[derive(Debug, Clone)]
struct IrSet {
    set: SetRef,
    members: BTreeSet<SetEntry>,
}

impl IrSet {
    /// Elements are the members one for one (no exception, no prefix that may contain
    /// another member), so a member change is one element change.
    fn simple(&self) -> bool {
        !self.members.iter().any(|m| match m {
            SetEntry::NoMatch(_) => true,
            SetEntry::Net(n) => n.prefix_len() < n.max_prefix_len(),
            // Flat entries are disjoint ranges, each one element.
            SetEntry::NetPort { .. } | SetEntry::NetIface { .. } | SetEntry::Flat { .. } => false,
        })
    }

    fn def(&self) -> SetDef {
        SetDef {
            set: self.set.clone(),
            description: String::new(),
            members: self.members.iter().cloned().collect(),
        }
    }
}

/// What an incremental apply needs from the last applied state.
#[derive(Debug, Clone, Default)]
pub struct Incremental {
    /// The last applied state, set members left out (the plan reads only set kinds).
    prev: DesiredState,
    /// Every rendered set (by kernel name) with its members (nftables: an interval set is
    /// converted from all its members; ipset members change one for one).
    sets: HashMap<String, IrSet>,
}

fn without_members(s: &IpSet) -> IpSet {
    IpSet {
        id: s.id.clone(),
        kind: s.kind,
        description: String::new(),
        members: BTreeSet::new(),
    }
}

/// The endpoints and policies a batch names.
pub fn named_ids(deltas: &[Delta]) -> (Vec<&EndpointId>, Vec<&PolicyId>) {
    let mut eps = BTreeSet::new();
    let mut pols = BTreeSet::new();
    for d in deltas {
        match d {
            Delta::EndpointChanged { id } | Delta::EndpointRemoved { id } => {
                eps.insert(id);
            }
            Delta::PolicyChanged { id } | Delta::PolicyRemoved { id } => {
                pols.insert(id);
            }
            _ => {}
        }
    }
    (eps.into_iter().collect(), pols.into_iter().collect())
}

impl Incremental {
    /// After a full render of `state` to `rs`.
    pub fn new(state: &DesiredState, rs: Ruleset) -> Incremental {
        let prev = DesiredState {
            ip_sets: state
                .ip_sets
                .iter()
                .map(|(id, s)| (id.clone(), without_members(s)))
                .collect(),
            policies: state.policies.clone(),
            endpoints: state.endpoints.clone(),
        };
        let sets = rs
            .sets
            .into_iter()
            .map(|s| {
                (
                    s.set.name.clone(),
                    IrSet {
                        set: s.set,
                        members: s.members.into_iter().collect(),
                    },
                )
            })
            .collect();
        Incremental { prev, sets }
    }

    /// What `deltas` (from the last applied state to `next`) change.
    pub fn plan(
        &self,
        next: &DesiredState,
        deltas: &[Delta],
        cfg: &RenderConfig,
    ) -> Result<Plan, DataplaneError> {
        Ok(palisade_render::delta::plan(&self.prev, next, deltas, cfg)?)
    }

    /// Remembers `next` as the last applied state (only what `deltas` name changed).
    pub fn advance(&mut self, next: &DesiredState, deltas: &[Delta]) {
        for d in deltas {
            match d {
                Delta::SetCreated { id, .. } | Delta::SetRemoved { id } => {
                    match next.ip_sets.get(id) {
                        Some(s) => self.prev.ip_sets.insert(id.clone(), without_members(s)),
                        None => self.prev.ip_sets.remove(id),
                    };
                }
                Delta::PolicyChanged { id } | Delta::PolicyRemoved { id } => {
                    match next.policies.get(id) {
                        Some(p) => self.prev.policies.insert(id.clone(), p.clone()),
                        None => self.prev.policies.remove(id),
                    };
                }
                Delta::EndpointChanged { id } | Delta::EndpointRemoved { id } => {
                    match next.endpoints.get(id) {
                        Some(e) => self.prev.endpoints.insert(id.clone(), e.clone()),
                        None => self.prev.endpoints.remove(id),
                    };
                }
                Delta::SetMemberAdded { .. } | Delta::SetMemberRemoved { .. } => {}
            }
        }
    }

    /// Applies `plan` to `program` (the nftables program of the last applied state), giving
    /// the program of `next`. `endpoints` and `policies`: the ids the batch names.
    pub fn patch_nft(
        &mut self,
        program: &mut NftProgram,
        plan: &Plan,
        next: &DesiredState,
        cfg: &RenderConfig,
        endpoints: &[&EndpointId],
        policies: &[&PolicyId],
    ) -> Result<(), DataplaneError> {
        // Sets: created ones whole; member changes one element each while the set stays
        // simple, else the set is converted again from all its members.
        let mut rebuild: BTreeSet<String> = BTreeSet::new();
        for s in plan.set_creates.iter().chain(&plan.set_fills) {
            self.sets.insert(
                s.set.name.clone(),
                IrSet {
                    set: s.set.clone(),
                    members: s.members.iter().cloned().collect(),
                },
            );
            rebuild.insert(s.set.name.clone());
        }
        let mut ops: BTreeMap<&str, Vec<(bool, &SetEntry)>> = BTreeMap::new();
        for (add, list) in [(true, &plan.member_adds), (false, &plan.member_dels)] {
            for (r, e) in list {
                ops.entry(r.name.as_str()).or_default().push((add, e));
            }
        }
        for (name, changes) in ops {
            let set = self.sets.get_mut(name).ok_or_else(|| {
                DataplaneError::invalid(format!("set {name}"), "member change to an unknown set")
            })?;
            let simple_before = set.simple();
            for (add, e) in &changes {
                if *add {
                    set.members.insert((*e).clone());
                } else {
                    set.members.remove(*e);
                }
            }
            if rebuild.contains(name) || !simple_before || !set.simple() {
                rebuild.insert(name.to_string());
                continue;
            }
            let Some(target) = program.sets.get_mut(name) else {
                rebuild.insert(name.to_string());
                continue;
            };
            let target = Arc::make_mut(target);
            for (add, e) in changes {
                let Some(text) = nft::entry_text(e) else {
                    continue;
                };
                let el = canonical_element(&text);
                check_element(name, &el)?;
                if add {
                    target.elements.insert(el);
                } else {
                    target.elements.remove(&el);
                }
            }
        }
        for name in &rebuild {
            let set = self.sets.get(name).ok_or_else(|| {
                DataplaneError::invalid(format!("set {name}"), "rebuild of an unknown set")
            })?;
            let converted = nft_set(&set.def())?;
            for el in &converted.elements {
                check_element(name, el)?;
            }
            program.sets.insert(name.clone(), Arc::new(converted));
        }
        // Chains: the new and rewritten ones converted, with their rules' origins.
        let (changed, origins) = changed_chains(plan, next, cfg, endpoints, policies);
        for c in changed
            .iter()
            .flat_map(|c| palisade_render::nft::with_local_copies(c))
        {
            program
                .chains
                .insert(c.name.clone(), nft_chain(&c, &origins));
        }
        if let Some(fwd) = &plan.forward {
            // The verdict maps are filled from `pal-FORWARD`'s dispatch rules.
            let mut maps = BTreeMap::new();
            dispatch_elements(fwd, &mut maps);
            for (name, (key, elements)) in maps {
                program
                    .sets
                    .insert(name, Arc::new(verdict_map(key, elements)));
            }
        }
        for c in &plan.chains_delete {
            program.chains.remove(c);
        }
        for s in &plan.set_destroys {
            program.sets.remove(&s.name);
            self.sets.remove(&s.name);
        }
        // The chains converted here are checked here: the table checks only set names and
        // types of a patched program (`NftProgram::validate_patched`).
        for c in &changed {
            if let Some(chain) = program.chains.get(&c.name) {
                program.validate_chain(&c.name, chain)?;
            }
        }
        Ok(())
    }
}

impl Incremental {
    /// Applies `plan` to `program` (the iptables + ipset program of the last applied state),
    /// giving the program of `next`: ipset members one for one, the new and rewritten chains
    /// (and `pal-FORWARD` when its dispatch changed) converted for every family, removed
    /// chains and sets dropped. `endpoints` and `policies`: the ids the batch names.
    pub fn patch_ipt(
        &mut self,
        program: &mut IptablesProgram,
        plan: &Plan,
        next: &DesiredState,
        cfg: &RenderConfig,
        endpoints: &[&EndpointId],
        policies: &[&PolicyId],
    ) -> Result<(), DataplaneError> {
        for s in plan.set_creates.iter().chain(&plan.set_fills) {
            program
                .sets
                .insert(s.set.name.clone(), Arc::new(ipset_spec(s)?));
        }
        for (add, list) in [(true, &plan.member_adds), (false, &plan.member_dels)] {
            for (r, e) in list {
                let member = ipset_member(&r.name, e);
                let member = canonical_member(&member).ok_or_else(|| {
                    DataplaneError::invalid(
                        format!("ipset {}", r.name),
                        format!("member {member:?}"),
                    )
                })?;
                let set = program.sets.get_mut(&r.name).ok_or_else(|| {
                    DataplaneError::invalid(
                        format!("ipset {}", r.name),
                        "member change to an unknown set",
                    )
                })?;
                let set = Arc::make_mut(set);
                if add {
                    set.members.insert(member);
                } else {
                    set.members.remove(&member);
                }
            }
        }
        let (changed, origins) = changed_chains(plan, next, cfg, endpoints, policies);
        for f in families(cfg) {
            let chains = program.chains_mut(family(f));
            for c in &changed {
                chains
                    .chains
                    .insert(c.name.clone(), ipt_chain(c, f, &origins)?);
            }
            for c in &plan.chains_delete {
                chains.chains.remove(c);
            }
        }
        for s in &plan.set_destroys {
            program.sets.remove(&s.name);
        }
        // The chains converted here are checked here: the table checks only the sets and
        // hooks of a patched program (`IptablesProgram::validate_patched`).
        for f in families(cfg) {
            for c in &changed {
                if let Some(rules) = program.chains(family(f)).chains.get(&c.name) {
                    program.validate_chain(family(f), &c.name, rules)?;
                }
            }
        }
        Ok(())
    }
}

/// The chains a plan converts (new, rewritten, and `pal-FORWARD` when its dispatch changed)
/// with their rules' origins.
fn changed_chains<'p>(
    plan: &'p Plan,
    next: &DesiredState,
    cfg: &RenderConfig,
    endpoints: &[&EndpointId],
    policies: &[&PolicyId],
) -> (Vec<&'p Chain>, Origins) {
    let changed: Vec<&Chain> = plan
        .chains_new
        .iter()
        .chain(&plan.chains_rewrite)
        .chain(&plan.forward)
        .collect();
    let origins = chain_origins(next, changed.iter().copied(), cfg, endpoints, policies);
    (changed, origins)
}

/// The element check of [`NftProgram::validate`], for elements patched in (the program is
/// then validated without looking at set elements again).
fn check_element(set: &str, e: &str) -> Result<(), DataplaneError> {
    if e.contains(['\n', '\r', ',', '{', '}', ';', '#']) {
        return Err(DataplaneError::invalid(
            format!("nft set {set}"),
            format!("element {e:?} contains a separator"),
        ));
    }
    Ok(())
}
