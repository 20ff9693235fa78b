//! Incremental rendering: a batch of [`Delta`]s between two [`DesiredState`]s becomes the few
//! commands that turn the kernel from one into the other. A set member change is one `add` or
//! `del` line (ipset) or one `add element`/`delete element` (nftables); a policy or endpoint
//! change rewrites only that policy's or endpoint's chains (and, for iptables, the dispatch in
//! `pal-FORWARD` when an endpoint comes or goes; nftables edits its verdict maps instead).
//!
//! Order inside a batch: sets are created and filled first, chains are declared, rewritten and
//! only then unreferenced chains and sets are removed, so no rule ever names a missing object.

use std::collections::{BTreeMap, BTreeSet};

use palisade_calc::{Delta, DesiredState, IpSetId, RulePeer};
use palisade_model::{Direction, EndpointId, PolicyId};
use serde::Serialize;

use crate::build::{
    check_endpoints, endpoint_chain, families, forward_chain, member_entries, policy_chain, set_ref,
};
use crate::config::RenderConfig;
use crate::error::RenderError;
use crate::ir::{Chain, Family, IfaceDir, SetDef, SetEntry, SetRef};
use crate::names;
use crate::{iptables, nft};

/// What a batch changes, backend-neutral.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// New sets, with their initial members.
    pub set_creates: Vec<SetDef>,
    pub member_adds: Vec<(SetRef, SetEntry)>,
    pub member_dels: Vec<(SetRef, SetEntry)>,
    /// Chains that did not exist before.
    pub chains_new: Vec<Chain>,
    /// Chains that exist and get new contents.
    pub chains_rewrite: Vec<Chain>,
    /// Chains to flush and delete once nothing refers to them.
    pub chains_delete: Vec<String>,
    /// (map, interface, chain) entries of the dispatch maps to remove / add.
    pub dispatch_dels: Vec<(String, String, String)>,
    pub dispatch_adds: Vec<(String, String, String)>,
    /// `pal-FORWARD` as it must be after the batch, when its dispatch changed (iptables).
    pub forward: Option<Chain>,
    /// Sets to destroy after the chains no longer refer to them.
    pub set_destroys: Vec<SetRef>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        *self == Plan::default()
    }
}

/// Works out what `deltas` (from `prev` to `next`) change.
pub fn plan(
    prev: &DesiredState,
    next: &DesiredState,
    deltas: &[Delta],
    cfg: &RenderConfig,
) -> Result<Plan, RenderError> {
    cfg.validate()?;
    check_endpoints(next)?;
    let fams = families(cfg);
    let mut plan = Plan::default();
    let mut policies: BTreeSet<&PolicyId> = BTreeSet::new();
    let mut endpoints: BTreeSet<&EndpointId> = BTreeSet::new();
    let kind_of = |id: &IpSetId| {
        next.ip_sets
            .get(id)
            .or_else(|| prev.ip_sets.get(id))
            .map(|s| s.kind)
            .ok_or_else(|| RenderError::unknown_set(&id.0))
    };
    for d in deltas {
        match d {
            Delta::SetCreated { id, kind } => {
                for &f in &fams {
                    plan.set_creates.push(SetDef {
                        set: set_ref(id, *kind, f),
                        description: next
                            .ip_sets
                            .get(id)
                            .map(|s| names::sanitize(&s.description, 200))
                            .unwrap_or_default(),
                        members: vec![],
                    });
                }
            }
            Delta::SetMemberAdded { id, member } | Delta::SetMemberRemoved { id, member } => {
                let kind = kind_of(id)?;
                for &f in &fams {
                    for e in member_entries(member, f) {
                        let r = set_ref(id, kind, f);
                        if matches!(d, Delta::SetMemberAdded { .. }) {
                            plan.member_adds.push((r, e));
                        } else {
                            plan.member_dels.push((r, e));
                        }
                    }
                }
            }
            // Removed and created again in the same batch: the set stays.
            Delta::SetRemoved { id } if next.ip_sets.contains_key(id) => {}
            Delta::SetRemoved { id } => {
                let kind = kind_of(id)?;
                for &f in &fams {
                    plan.set_destroys.push(set_ref(id, kind, f));
                }
            }
            Delta::PolicyChanged { id } | Delta::PolicyRemoved { id } => {
                policies.insert(id);
            }
            Delta::EndpointChanged { id } | Delta::EndpointRemoved { id } => {
                endpoints.insert(id);
            }
        }
    }
    if !policies.is_empty() {
        plan_policies(prev, next, cfg, &fams, &policies, &mut plan)?;
    }
    for id in endpoints {
        plan_endpoint(prev, next, cfg, id, &mut plan)?;
    }
    if !plan.dispatch_adds.is_empty() || !plan.dispatch_dels.is_empty() {
        plan.forward = Some(forward_chain(next, cfg));
    }
    Ok(plan)
}

fn plan_policies(
    prev: &DesiredState,
    next: &DesiredState,
    cfg: &RenderConfig,
    fams: &[Family],
    ids: &BTreeSet<&PolicyId>,
    plan: &mut Plan,
) -> Result<(), RenderError> {
    let before = cidr_set_names(prev, fams);
    let after = cidr_set_names(next, fams);
    let mut created: BTreeSet<String> = BTreeSet::new();
    for id in ids {
        for dir in [Direction::Ingress, Direction::Egress] {
            let existed = prev.policies.get(*id).is_some_and(|p| match dir {
                Direction::Ingress => p.ingress.is_some(),
                Direction::Egress => p.egress.is_some(),
            });
            let built = match next.policies.get(*id) {
                Some(p) => policy_chain(next, cfg, fams, p, dir)?,
                None => None,
            };
            match (built, existed) {
                (Some((chain, sets)), existed) => {
                    for s in sets {
                        if !before.contains_key(&s.set.name) && created.insert(s.set.name.clone()) {
                            plan.set_creates.push(s);
                        }
                    }
                    if existed {
                        plan.chains_rewrite.push(chain);
                    } else {
                        plan.chains_new.push(chain);
                    }
                }
                (None, true) => plan.chains_delete.push(names::policy_chain(dir, id)),
                (None, false) => {}
            }
        }
    }
    for (name, set) in before {
        if !after.contains_key(&name) {
            plan.set_destroys.push(set);
        }
    }
    Ok(())
}

/// The dedicated ipBlock sets every policy of `state` uses, by name.
fn cidr_set_names(state: &DesiredState, fams: &[Family]) -> BTreeMap<String, SetRef> {
    let mut out = BTreeMap::new();
    let rules = state
        .policies
        .values()
        .flat_map(|p| p.ingress.iter().chain(p.egress.iter()))
        .flatten();
    for rule in rules {
        for peer in &rule.peers {
            let RulePeer::Cidr { cidr, except } = peer else {
                continue;
            };
            for &f in fams {
                let ex: Vec<_> = except
                    .iter()
                    .filter(|e| Family::of_net(e) == f)
                    .map(|e| e.trunc())
                    .collect();
                if Family::of_net(cidr) == f && !ex.is_empty() {
                    let set = crate::build::cidr_set(f, &cidr.trunc(), &ex).set;
                    out.insert(set.name.clone(), set);
                }
            }
        }
    }
    out
}

fn plan_endpoint(
    prev: &DesiredState,
    next: &DesiredState,
    cfg: &RenderConfig,
    id: &EndpointId,
    plan: &mut Plan,
) -> Result<(), RenderError> {
    let old = prev.endpoints.get(id);
    let new = next.endpoints.get(id);
    let maps = [
        (Direction::Egress, names::FROM_WORKLOAD_MAP),
        (Direction::Ingress, names::TO_WORKLOAD_MAP),
    ];
    if let Some(old) = old {
        if new.is_none_or(|n| n.iface != old.iface) {
            for (dir, map) in maps {
                let chain = names::endpoint_chain(dir, &old.iface);
                plan.dispatch_dels
                    .push((map.into(), old.iface.clone(), chain.clone()));
                plan.chains_delete.push(chain);
            }
        }
    }
    if let Some(new) = new {
        let same_iface = old.is_some_and(|o| o.iface == new.iface);
        for (dir, map) in maps {
            let chain = endpoint_chain(next, cfg, new, dir)?;
            if same_iface {
                plan.chains_rewrite.push(chain);
            } else {
                plan.dispatch_adds
                    .push((map.into(), new.iface.clone(), chain.name.clone()));
                plan.chains_new.push(chain);
            }
        }
    }
    Ok(())
}

/// The iptables form of a batch: run `ipset_pre` (`ipset restore`), then `v4`/`v6` with
/// `iptables-restore --noflush` / `ip6tables-restore --noflush` (when present), then
/// `ipset_post`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IptablesDelta {
    pub ipset_pre: String,
    pub v4: Option<String>,
    pub v6: Option<String>,
    pub ipset_post: String,
}

pub fn iptables(
    prev: &DesiredState,
    next: &DesiredState,
    deltas: &[Delta],
    cfg: &RenderConfig,
) -> Result<IptablesDelta, RenderError> {
    let plan = plan(prev, next, deltas, cfg)?;
    Ok(iptables_text(&plan, &families(cfg)))
}

/// Spells a [`Plan`] for iptables.
pub fn iptables_text(plan: &Plan, fams: &[Family]) -> IptablesDelta {
    let mut pre = iptables::ipset_restore(&plan.set_creates);
    for (s, e) in &plan.member_adds {
        pre.push_str(&iptables::member_line("add", &s.name, e));
    }
    for (s, e) in &plan.member_dels {
        pre.push_str(&iptables::member_line("del", &s.name, e));
    }
    let mut post = String::new();
    for s in &plan.set_destroys {
        post.push_str(&iptables::destroy_line(&s.name));
    }
    let filled: Vec<&Chain> = plan
        .chains_new
        .iter()
        .chain(plan.chains_rewrite.iter())
        .chain(plan.forward.iter())
        .collect();
    let table = |f: Family| -> Option<String> {
        if !fams.contains(&f) || (filled.is_empty() && plan.chains_delete.is_empty()) {
            return None;
        }
        let mut t = String::from("*filter\n");
        for c in &filled {
            t.push_str(&iptables::declare_line(&c.name));
        }
        for c in &plan.chains_delete {
            t.push_str(&iptables::declare_line(c));
        }
        for c in &filled {
            t.push_str(&iptables::chain_rules(c, f));
        }
        for c in &plan.chains_delete {
            t.push_str(&format!("-X {c}\n"));
        }
        t.push_str("COMMIT\n");
        Some(t)
    };
    IptablesDelta {
        ipset_pre: pre,
        v4: table(Family::V4),
        v6: table(Family::V6),
        ipset_post: post,
    }
}

/// The nftables form of a batch: one script for `nft -f` (one transaction).
pub fn nft(
    prev: &DesiredState,
    next: &DesiredState,
    deltas: &[Delta],
    cfg: &RenderConfig,
) -> Result<String, RenderError> {
    Ok(nft_text(&plan(prev, next, deltas, cfg)?))
}

/// Spells a [`Plan`] for nftables.
pub fn nft_text(plan: &Plan) -> String {
    let mut out = String::new();
    for s in &plan.set_creates {
        out.push_str(&nft::add_set_line(&s.set, &s.description));
        out.push_str(&nft::elements_line(
            "add",
            &s.set.name,
            &nft::set_elements(s),
        ));
    }
    for (verb, list) in [("add", &plan.member_adds), ("delete", &plan.member_dels)] {
        for (s, e) in list {
            if let Some(text) = nft::entry_text(e) {
                out.push_str(&nft::elements_line(verb, &s.name, &[text]));
            }
        }
    }
    for c in &plan.chains_new {
        out.push_str(&nft::add_chain_line(&c.name));
    }
    for c in &plan.chains_rewrite {
        out.push_str(&nft::flush_chain_line(&c.name));
    }
    for c in plan.chains_new.iter().chain(plan.chains_rewrite.iter()) {
        out.push_str(&nft::chain_rules(c));
    }
    for (map, iface, _) in &plan.dispatch_dels {
        out.push_str(&nft::elements_line(
            "delete",
            map,
            &[format!("\"{iface}\"")],
        ));
    }
    for (map, iface, chain) in &plan.dispatch_adds {
        out.push_str(&nft::elements_line(
            "add",
            map,
            &[nft::map_element(iface, chain)],
        ));
    }
    for c in &plan.chains_delete {
        out.push_str(&nft::flush_chain_line(c));
    }
    for c in &plan.chains_delete {
        out.push_str(&nft::delete_chain_line(c));
    }
    for s in &plan.set_destroys {
        out.push_str(&nft::delete_set_line(&s.name));
    }
    out
}

/// Which interface direction a dispatch map uses (for readers of [`Plan::dispatch_adds`]).
pub fn map_dir(map: &str) -> IfaceDir {
    if map == names::FROM_WORKLOAD_MAP {
        IfaceDir::In
    } else {
        IfaceDir::Out
    }
}
