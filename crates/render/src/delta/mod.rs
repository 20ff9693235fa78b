//! Incremental rendering: a batch of [`Delta`]s between two [`DesiredState`]s becomes the few
//! commands that turn the kernel from one into the other. A set member change is one `add` or
//! `del` line (ipset) or one `add element`/`delete element` (nftables); a policy or endpoint
//! change rewrites only that policy's or endpoint's chains. When an endpoint comes or goes,
//! iptables deletes or inserts its dispatch lines in `pal-FORWARD` (one per direction and
//! interface name: the primary one and its aliases under the other prefixes; never the whole
//! chain) and nftables edits its verdict maps.
//!
//! The work is proportional to what the deltas name: a changed policy's chains and ipBlock
//! sets (the other policies are read only when one of its dedicated ipBlock sets may be shared
//! with them), a changed endpoint's chains, and one set name per run of member deltas.
//!
//! Order inside a batch: sets are created and filled first, chains are declared, rewritten and
//! only then unreferenced chains and sets are removed, so no rule ever names a missing object.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use palisade_calc::{Delta, DesiredState, IpSetId};
use palisade_model::{Direction, EndpointId, PolicyId};
use serde::Serialize;

use crate::build::{
    check_changed_addresses, check_changed_endpoints, dispatch_entries, endpoint_chain, families,
    for_each_member_entry, forward_chain, policy_chain_names, policy_chains, set_ref,
    staged_endpoint_chain,
};
use crate::config::{EndpointMatch, RenderConfig};
use crate::error::RenderError;
use crate::ir::{Action, Chain, Family, IfaceDir, Rule, SetDef, SetEntry, SetRef};
use crate::names;
use crate::{iptables, nft};

mod cidr;
mod flat;

use cidr::{cidr_sets_of, held_by_others, CidrSet};

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
    /// Sets that exist and get these members instead of theirs (the flat layout's sets of the
    /// endpoints a batch touches, recomputed whole: see [`flat`]).
    pub set_fills: Vec<SetDef>,
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
    // The kernel names of the set the previous member delta was about: a batch lists a set's
    // members one after another, and a name is a hash, so it is worked out once per run.
    let mut refs: Option<(&IpSetId, Vec<SetRef>)> = None;
    let mut members_of: BTreeSet<&IpSetId> = BTreeSet::new();
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
                members_of.insert(id);
                let set_refs = match &refs {
                    Some((last, r)) if *last == id => r,
                    _ => {
                        let kind = kind_of(id)?;
                        let r = fams.iter().map(|&f| set_ref(id, kind, f)).collect();
                        &refs.insert((id, r)).1
                    }
                };
                let list = if matches!(d, Delta::SetMemberAdded { .. }) {
                    &mut plan.member_adds
                } else {
                    &mut plan.member_dels
                };
                for (&f, r) in fams.iter().zip(set_refs) {
                    for_each_member_entry(member, f, |e| list.push((r.clone(), e)));
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
    // Endpoints the batch does not name are as they were, and were checked then.
    check_changed_endpoints(next, endpoints.iter().copied())?;
    if cfg.endpoint_match == EndpointMatch::Address {
        check_changed_addresses(next, endpoints.iter().copied())?;
    }
    if !policies.is_empty() {
        plan_policies(prev, next, cfg, &fams, &policies, &mut plan)?;
        endpoints.extend(retargeted(prev, next, cfg, &policies));
    }
    let flat_touched = flat::touched(next, cfg, &policies, &members_of);
    for id in &flat_touched {
        if !endpoints.contains(id) {
            flat::plan_chains(prev, next, cfg, id, &mut plan)?;
        }
    }
    for id in &endpoints {
        plan_endpoint(prev, next, cfg, id, &mut plan)?;
    }
    for id in endpoints
        .iter()
        .chain(flat_touched.iter())
        .collect::<BTreeSet<_>>()
    {
        flat::plan_sets(prev, next, cfg, &fams, id, &mut plan)?;
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
    // Only the changed policies' ipBlock sets are looked at: every other policy is the same
    // in `prev` and `next`, so it neither creates nor frees a set.
    let mut before: BTreeMap<String, CidrSet> = BTreeMap::new();
    let mut now: BTreeMap<String, CidrSet> = BTreeMap::new();
    for id in ids {
        if let Some(p) = prev.policies.get(*id) {
            cidr_sets_of(p, fams, &mut before);
        }
        if let Some(p) = next.policies.get(*id) {
            cidr_sets_of(p, fams, &mut now);
        }
    }
    let mut created: Vec<SetDef> = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for id in ids {
        for dir in [Direction::Ingress, Direction::Egress] {
            // A policy has its enforced chain and, staged or with Deny/Log rules, its
            // staged-evaluation chain: each one is new, rewritten or gone on its own.
            let existed = prev
                .policies
                .get(*id)
                .map(|p| policy_chain_names(p, dir))
                .unwrap_or_default();
            let built = match next.policies.get(*id) {
                Some(p) => policy_chains(next, cfg, fams, p, dir)?,
                None => Vec::new(),
            };
            for name in &existed {
                if !built.iter().any(|(c, _)| c.name == *name) {
                    plan.chains_delete.push(name.clone());
                }
            }
            for (chain, sets) in built {
                for s in sets {
                    if !before.contains_key(&s.set.name) && seen.insert(s.set.name.clone()) {
                        created.push(s);
                    }
                }
                if existed.contains(&chain.name) {
                    plan.chains_rewrite.push(chain);
                } else {
                    plan.chains_new.push(chain);
                }
            }
        }
    }
    // A set new to the changed policies may already be held by an unchanged one, and a set
    // they dropped may still be: only then are the other policies read.
    let new_sets: BTreeMap<&str, &CidrSet> = created
        .iter()
        .filter_map(|s| now.get_key_value(&s.set.name))
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let held = held_by_others(prev, ids, fams, &new_sets);
    plan.set_creates
        .extend(created.into_iter().filter(|s| !held.contains(&s.set.name)));
    let dropped: BTreeMap<&str, &CidrSet> = before
        .iter()
        .filter(|(name, _)| !now.contains_key(*name))
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let held = held_by_others(next, ids, fams, &dropped);
    plan.set_destroys.extend(
        dropped
            .into_iter()
            .filter(|(name, _)| !held.contains(*name))
            .map(|(_, c)| c.set.clone()),
    );
    Ok(())
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
    // The chains are named from the primary interface: they stay while it does. The dispatch
    // entries are one per interface name (aliases included) or one per address; while the
    // chains stay, only the keys that went or came are edited.
    let same_iface = matches!((old, new), (Some(o), Some(n)) if o.iface == n.iface);
    let old_entries = old.map(|o| dispatch_entries(o, cfg)).unwrap_or_default();
    let new_entries = new.map(|n| dispatch_entries(n, cfg)).unwrap_or_default();
    for e in &old_entries {
        if !same_iface || !new_entries.contains(e) {
            plan.dispatch_dels
                .push((e.0.into(), e.1.clone(), e.2.clone()));
        }
    }
    if let Some(old) = old {
        if !same_iface {
            for dir in [Direction::Egress, Direction::Ingress] {
                plan.chains_delete
                    .push(names::endpoint_chain(dir, &old.iface));
            }
        }
    }
    // The staged-evaluation chains: new, rewritten or gone with the endpoint's staged tiers.
    for dir in [Direction::Egress, Direction::Ingress] {
        let had = old.filter(|o| staged_logged(cfg, o, dir));
        let built = match new {
            Some(n) => staged_endpoint_chain(next, cfg, n, dir)?,
            None => None,
        };
        let had_name = had.map(|o| names::staged_endpoint_chain(dir, &o.iface));
        if let Some(name) = &had_name {
            if built.as_ref().is_none_or(|c| c.name != *name) {
                plan.chains_delete.push(name.clone());
            }
        }
        if let Some(chain) = built {
            if had_name.as_deref() == Some(chain.name.as_str()) {
                plan.chains_rewrite.push(chain);
            } else {
                plan.chains_new.push(chain);
            }
        }
    }
    if let Some(new) = new {
        for dir in [Direction::Egress, Direction::Ingress] {
            let chain = endpoint_chain(next, cfg, new, dir)?;
            if same_iface {
                plan.chains_rewrite.push(chain);
            } else {
                plan.chains_new.push(chain);
            }
        }
    }
    for e in &new_entries {
        if !same_iface || !old_entries.contains(e) {
            plan.dispatch_adds
                .push((e.0.into(), e.1.clone(), e.2.clone()));
        }
    }
    Ok(())
}

/// The endpoints whose staged-evaluation chains must be rewritten although the batch does not
/// name them: they jump to a changed policy whose staged-evaluation target changed (it gained
/// or lost its Deny/Log rules). Rare, so a scan of the endpoints is fine.
fn retargeted<'a>(
    prev: &DesiredState,
    next: &'a DesiredState,
    cfg: &RenderConfig,
    policies: &BTreeSet<&PolicyId>,
) -> Vec<&'a EndpointId> {
    if cfg.drop_log_group.is_none() {
        return Vec::new();
    }
    let dirs = [Direction::Ingress, Direction::Egress];
    let target = |s: &DesiredState, id: &PolicyId, dir| {
        s.policies
            .get(id)
            .map(|p| crate::build::staged_jump_target(p, dir))
    };
    let changed: Vec<(&PolicyId, Direction)> = policies
        .iter()
        .flat_map(|id| dirs.map(|d| (*id, d)))
        .filter(|(id, d)| {
            let (a, b) = (target(prev, id, *d), target(next, id, *d));
            a.is_some() && b.is_some() && a != b
        })
        .collect();
    if changed.is_empty() {
        return Vec::new();
    }
    next.endpoints
        .values()
        .filter(|ep| {
            changed.iter().any(|(id, d)| {
                ep.tiers
                    .staged(*d)
                    .is_some_and(|tiers| tiers.iter().any(|t| t.policies.contains(id)))
            })
        })
        .map(|ep| &ep.id)
        .collect()
}

/// Whether an endpoint had (or has) a staged-evaluation chain in `dir`.
fn staged_logged(cfg: &RenderConfig, ep: &palisade_calc::LocalEndpoint, dir: Direction) -> bool {
    cfg.drop_log_group.is_some() && ep.tiers.staged(dir).is_some()
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
        iptables::push_member_line(&mut pre, "add", &s.name, e);
    }
    for (s, e) in &plan.member_dels {
        iptables::push_member_line(&mut pre, "del", &s.name, e);
    }
    for s in &plan.set_fills {
        let _ = writeln!(pre, "flush {}", s.set.name);
        for m in &s.members {
            iptables::push_member_line(&mut pre, "add", &s.set.name, m);
        }
    }
    let mut post = String::new();
    for s in &plan.set_destroys {
        post.push_str(&iptables::destroy_line(&s.name));
    }
    let filled: Vec<&Chain> = plan
        .chains_new
        .iter()
        .chain(plan.chains_rewrite.iter())
        .collect();
    let table = |f: Family| -> Option<String> {
        if !fams.contains(&f)
            || (filled.is_empty() && plan.chains_delete.is_empty() && plan.forward.is_none())
        {
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
        if let Some(forward) = &plan.forward {
            t.push_str(&dispatch_edits(plan, forward, f));
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

/// The dispatch changes of a batch as single-rule edits of `pal-FORWARD`: `-D` for each
/// interface that went, then, dispatch rule by dispatch rule in chain order, `-I` at the
/// start of that rule's block for each interface that came. A batch touching one endpoint so
/// writes two lines instead of the whole chain (one line per local endpoint and direction).
/// Inside a block the interfaces' order does not matter (each line matches one interface);
/// the blocks stay in chain order, which is what the fw-before-tw layout needs.
fn dispatch_edits(plan: &Plan, forward: &Chain, family: Family) -> String {
    let one = |rule: &Rule, iface: &str, target: &str| -> Option<String> {
        let Action::Dispatch { dir, key, map, .. } = &rule.action else {
            return None;
        };
        let single = Rule {
            matches: rule.matches.clone(),
            action: Action::Dispatch {
                dir: *dir,
                key: *key,
                map: map.clone(),
                targets: vec![(iface.to_string(), target.to_string())],
            },
            comment: rule.comment.clone(),
        };
        iptables::rule_lines(&forward.name, &single)
            .into_iter()
            .next()
    };
    let dispatch_of = |want: &str| {
        forward.rules.iter().find(|r| {
            matches!(&r.action, Action::Dispatch { map, .. } if map == want) && r.applies_to(family)
        })
    };
    let mut out = String::new();
    for (map, iface, target) in &plan.dispatch_dels {
        let line = dispatch_of(map).and_then(|r| one(r, iface, target));
        if let Some(rest) = line.as_deref().and_then(|l| l.strip_prefix("-A ")) {
            out.push_str("-D ");
            out.push_str(rest);
            out.push('\n');
        }
    }
    // 1-based position of the current rule's first line in the chain as it ends up.
    let mut position = 1;
    for rule in forward.rules.iter().filter(|r| r.applies_to(family)) {
        let Action::Dispatch { map, targets, .. } = &rule.action else {
            position += 1;
            continue;
        };
        let prefix = format!("-A {} ", forward.name);
        for (m, iface, target) in plan.dispatch_adds.iter().filter(|(m, ..)| m == map) {
            let line = dispatch_of(m).and_then(|r| one(r, iface, target));
            if let Some(rest) = line.as_deref().and_then(|l| l.strip_prefix(&prefix)) {
                let _ = writeln!(out, "-I {} {position} {rest}", forward.name);
            }
        }
        position += targets.len();
    }
    out
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
    for s in &plan.set_fills {
        out.push_str(&nft::flush_set_line(&s.set.name));
        out.push_str(&nft::elements_line(
            "add",
            &s.set.name,
            &nft::set_elements(s),
        ));
    }
    // One `add element`/`delete element` per run of entries of the same set (a new set's
    // members come as one run).
    for (verb, list) in [("add", &plan.member_adds), ("delete", &plan.member_dels)] {
        let mut rest = list.as_slice();
        while let Some((first, _)) = rest.first() {
            let run = rest
                .iter()
                .position(|(s, _)| s.name != first.name)
                .unwrap_or(rest.len());
            nft::push_elements_line(
                &mut out,
                verb,
                &first.name,
                rest[..run].iter().map(|(_, e)| e),
            );
            rest = &rest[run..];
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
    for (map, key, _) in &plan.dispatch_dels {
        out.push_str(&nft::elements_line(
            "delete",
            map,
            &[nft::map_key(names::dispatch_map_kind(map).1, key)],
        ));
    }
    for (map, iface, chain) in &plan.dispatch_adds {
        out.push_str(&nft::elements_line(
            "add",
            map,
            &[nft::map_element(
                names::dispatch_map_kind(map).1,
                iface,
                chain,
            )],
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

/// Which side a dispatch map uses (for readers of [`Plan::dispatch_adds`]).
pub fn map_dir(map: &str) -> IfaceDir {
    if names::dispatch_map_kind(map).0 {
        IfaceDir::In
    } else {
        IfaceDir::Out
    }
}

#[cfg(test)]
mod tests;
