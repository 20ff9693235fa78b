//! The flat layout's part of a plan (`RenderConfig::nft_layout` = flat; nothing otherwise).
//! An endpoint's flat sets (see `crate::build::flat`) are recomputed whole, from the next
//! state, when the batch names the endpoint, changes a policy of one of its tiers, or changes
//! the members of a set that a rule of one of its flat tiers uses: [`Plan::set_fills`] then
//! says what each set holds after the batch (the dataplane writes the difference). A set
//! whose tier became flat is created, one whose tier stopped being flat (or went) destroyed;
//! the endpoint's chains are rewritten when their lookups or jumps changed.

use std::collections::BTreeSet;

use palisade_calc::{ActivePolicy, DesiredState, IpSetId, RulePeer, RulePort};
use palisade_model::{Direction, EndpointId, PolicyId};

use super::Plan;
use crate::build::endpoint_chain;
use crate::build::flat::{flat_refs, flat_sets, is_flat};
use crate::config::{NftLayout, RenderConfig};
use crate::error::RenderError;
use crate::ir::{Family, SetRef};

const DIRS: [Direction; 2] = [Direction::Egress, Direction::Ingress];

/// The endpoints of `next` whose flat sets or chains a batch may change although it does not
/// name them: a tier holds a changed policy, or a flat tier's rule uses a set whose members
/// changed.
pub(super) fn touched<'a>(
    next: &'a DesiredState,
    cfg: &RenderConfig,
    policies: &BTreeSet<&PolicyId>,
    sets: &BTreeSet<&IpSetId>,
) -> BTreeSet<&'a EndpointId> {
    let mut out = BTreeSet::new();
    if cfg.nft_layout != NftLayout::Flat || (policies.is_empty() && sets.is_empty()) {
        return out;
    }
    // The policies whose rules use a changed set, per direction.
    let users = |dir: Direction| -> BTreeSet<&PolicyId> {
        if sets.is_empty() {
            return BTreeSet::new();
        }
        next.policies
            .values()
            .filter(|p| uses_any(p, dir, sets))
            .map(|p| &p.id)
            .collect()
    };
    let users = [users(DIRS[0]), users(DIRS[1])];
    for ep in next.endpoints.values() {
        let hit = DIRS.iter().zip(&users).any(|(&dir, users)| {
            ep.tiers.of(dir).iter().any(|tier| {
                tier.policies.iter().any(|p| policies.contains(p))
                    || (!users.is_empty()
                        && tier.policies.iter().any(|p| users.contains(p))
                        && is_flat(next, cfg, tier, dir))
            })
        });
        if hit {
            out.insert(&ep.id);
        }
    }
    out
}

/// Whether a rule of `policy` in `dir` uses one of `sets` (as peers or as a named port).
fn uses_any(policy: &ActivePolicy, dir: Direction, sets: &BTreeSet<&IpSetId>) -> bool {
    let rules = match dir {
        Direction::Ingress => policy.ingress.as_deref(),
        Direction::Egress => policy.egress.as_deref(),
    };
    rules.unwrap_or_default().iter().any(|r| {
        r.peers
            .iter()
            .any(|p| matches!(p, RulePeer::Set(id) if sets.contains(id)))
            || r.ports
                .iter()
                .any(|p| matches!(p, RulePort::Named { set, .. } if sets.contains(set)))
    })
}

/// Rewrites the chains of an endpoint the batch does not name where they changed (a tier
/// became flat or stopped being flat).
pub(super) fn plan_chains(
    prev: &DesiredState,
    next: &DesiredState,
    cfg: &RenderConfig,
    id: &EndpointId,
    plan: &mut Plan,
) -> Result<(), RenderError> {
    let (Some(old), Some(new)) = (prev.endpoints.get(id), next.endpoints.get(id)) else {
        return Ok(());
    };
    for dir in DIRS {
        let chain = endpoint_chain(next, cfg, new, dir)?;
        let before = endpoint_chain(prev, cfg, old, dir).ok();
        if before.as_ref() != Some(&chain) {
            plan.chains_rewrite.push(chain);
        }
    }
    Ok(())
}

/// The flat sets of one endpoint: created, refilled or destroyed.
pub(super) fn plan_sets(
    prev: &DesiredState,
    next: &DesiredState,
    cfg: &RenderConfig,
    fams: &[Family],
    id: &EndpointId,
    plan: &mut Plan,
) -> Result<(), RenderError> {
    if cfg.nft_layout != NftLayout::Flat {
        return Ok(());
    }
    let mut had: Vec<SetRef> = Vec::new();
    if let Some(old) = prev.endpoints.get(id) {
        for dir in DIRS {
            for tier in old.tiers.of(dir) {
                if is_flat(prev, cfg, tier, dir) {
                    for &f in fams {
                        let (a, b) = flat_refs(f, dir, old, &tier.tier);
                        had.extend([a, b]);
                    }
                }
            }
        }
    }
    let mut now: Vec<String> = Vec::new();
    if let Some(new) = next.endpoints.get(id) {
        for dir in DIRS {
            for set in flat_sets(next, cfg, fams, new, dir)? {
                now.push(set.set.name.clone());
                if had.iter().any(|r| r.name == set.set.name) {
                    plan.set_fills.push(set);
                } else {
                    plan.set_creates.push(set);
                }
            }
        }
    }
    plan.set_destroys
        .extend(had.into_iter().filter(|r| !now.contains(&r.name)));
    Ok(())
}
