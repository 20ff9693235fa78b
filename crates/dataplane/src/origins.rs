//! Which policy rule (or endpoint drop) each rendered rule stands for, so kernel counters can
//! be attributed. The IR carries no such metadata yet, so it is worked out here from the
//! [`DesiredState`] and the chain layout of `palisade_render::build`: endpoint chains are named
//! after their interface and end with the drop; a policy chain holds the rendered
//! alternatives of its compiled rules in order, each alternative using only that rule's sets
//! and networks and its action (Allow/Pass followed by one `mark → RETURN`).

use std::collections::{BTreeSet, HashMap};

use palisade_calc::{ActivePolicy, CompiledRule, DesiredState, LocalEndpoint, RulePeer, RulePort};
use palisade_model::{Action as ModelAction, Direction, EndpointId, PolicyId};
use palisade_render::ir::{Action, Chain, Family, Match, Rule, Ruleset};
use palisade_render::{names, RenderConfig};

use crate::report::{CounterKind, RuleOrigin};

/// (chain, rule comment without `pal:`) → origin.
pub type Origins = HashMap<(String, String), RuleOrigin>;

/// The origins of every attributable rule of `rs`.
pub fn rule_origins(state: &DesiredState, rs: &Ruleset, cfg: &RenderConfig) -> Origins {
    origins_of(
        rs.chains.iter(),
        cfg,
        state.endpoints.values(),
        state.policies.values(),
    )
}

/// The origins of the rules of `chains` only, which belong to the endpoints `endpoints` and
/// the policies `policies` (or to neither, like `pal-FORWARD`): the same entries
/// [`rule_origins`] gives for these chains, without naming every chain of the node.
pub fn chain_origins<'a>(
    state: &'a DesiredState,
    chains: impl IntoIterator<Item = &'a Chain>,
    cfg: &RenderConfig,
    endpoints: &[&EndpointId],
    policies: &[&PolicyId],
) -> Origins {
    origins_of(
        chains,
        cfg,
        endpoints.iter().filter_map(|id| state.endpoints.get(*id)),
        policies.iter().filter_map(|id| state.policies.get(*id)),
    )
}

fn origins_of<'a>(
    chains: impl IntoIterator<Item = &'a Chain>,
    cfg: &RenderConfig,
    endpoints: impl Iterator<Item = &'a LocalEndpoint>,
    policies: impl Iterator<Item = &'a ActivePolicy>,
) -> Origins {
    let mut out = Origins::new();
    let mut endpoint_chains = HashMap::new();
    for ep in endpoints {
        for dir in [Direction::Ingress, Direction::Egress] {
            endpoint_chains.insert(names::endpoint_chain(dir, &ep.iface), (ep, dir));
        }
    }
    let mut policy_chains = HashMap::new();
    for p in policies {
        for dir in [Direction::Ingress, Direction::Egress] {
            policy_chains.insert(names::policy_chain(dir, &p.id), (p, dir));
        }
    }
    for chain in chains {
        if chain.name == names::SPOOF_CHAIN {
            for r in chain.rules.iter().filter(|r| r.action == Action::Drop) {
                out.insert(
                    key(&chain.name, r),
                    RuleOrigin {
                        kind: CounterKind::SpoofDrop,
                        policy: None,
                        direction: Direction::Egress,
                        rule_index: None,
                        endpoint: None,
                    },
                );
            }
        } else if let Some((ep, dir)) = endpoint_chains.get(&chain.name) {
            for r in chain.rules.iter().filter(|r| r.action == Action::Drop) {
                out.insert(
                    key(&chain.name, r),
                    RuleOrigin {
                        kind: CounterKind::EndpointDrop,
                        policy: None,
                        direction: *dir,
                        rule_index: None,
                        endpoint: Some(ep.id.clone()),
                    },
                );
            }
        } else if let Some((p, dir)) = policy_chains.get(&chain.name) {
            let rules = match dir {
                Direction::Ingress => p.ingress.as_deref(),
                Direction::Egress => p.egress.as_deref(),
            }
            .unwrap_or(&[]);
            let mut next = 0usize;
            for r in &chain.rules {
                if r.action == Action::Return {
                    // Closes the Allow/Pass rule before it.
                    continue;
                }
                let Some(found) =
                    (next..rules.len()).find(|&i| compatible(p, *dir, i, &rules[i], r, cfg))
                else {
                    continue;
                };
                next = found;
                out.insert(
                    key(&chain.name, r),
                    RuleOrigin {
                        kind: CounterKind::PolicyRule,
                        policy: Some(p.id.clone()),
                        direction: *dir,
                        rule_index: Some(found),
                        endpoint: None,
                    },
                );
            }
        }
    }
    out
}

fn key(chain: &str, r: &Rule) -> (String, String) {
    (
        chain.to_string(),
        r.comment
            .strip_prefix("pal:")
            .unwrap_or(&r.comment)
            .to_string(),
    )
}

/// Whether IR rule `r` can be an alternative of compiled rule `c` (index `i`).
fn compatible(
    p: &ActivePolicy,
    dir: Direction,
    i: usize,
    c: &CompiledRule,
    r: &Rule,
    cfg: &RenderConfig,
) -> bool {
    let action_ok = match (&c.action, &r.action) {
        (ModelAction::Allow, Action::SetMark(m)) => *m == cfg.accept_mark,
        (ModelAction::Pass, Action::SetMark(m)) => *m == cfg.pass_mark,
        (ModelAction::Deny, Action::Drop) => true,
        (ModelAction::Log, Action::Log { prefix, .. }) => {
            *prefix == names::rule_log_prefix(dir, &p.id, i)
        }
        _ => false,
    };
    if !action_ok {
        return false;
    }
    let mut sets = BTreeSet::new();
    let mut cidrs = Vec::new();
    for f in [Family::V4, Family::V6] {
        for peer in &c.peers {
            match peer {
                RulePeer::Set(id) => {
                    sets.insert(names::set_name(f, id));
                }
                RulePeer::Cidr { cidr, except } => {
                    sets.insert(names::cidr_set_name(f, cidr, except));
                    cidrs.push(*cidr);
                }
            }
        }
        for port in &c.ports {
            if let RulePort::Named { set, .. } = port {
                sets.insert(names::set_name(f, set));
            }
        }
    }
    r.matches.iter().all(|m| match m {
        Match::Set { set, .. } => sets.contains(&set.name),
        Match::Net { net, .. } => cidrs.iter().any(|c| c.contains(net)),
        _ => true,
    })
}
