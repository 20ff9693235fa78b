//! Model policy → [`ActivePolicy`] (selectors replaced by set ids), and the ordering of the
//! policies that select an endpoint into [`EndpointTiers`]. Both the incremental calculator
//! and [`crate::compute_full`] use these, so they agree by construction on the parts that
//! are a function of one policy.

use palisade_model::{Direction, Peer, Policy, PortMatch, PortSpec, Rule, TierAction};

use crate::setdef::SetDef;
use crate::state::{
    ActivePolicy, CompiledRule, EndpointTiers, IpSetId, RulePeer, RulePort, TierPolicies,
};

/// A compiled policy and the sets it refers to (each once, in first-use order, with its id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    pub policy: ActivePolicy,
    pub sets: Vec<(IpSetId, SetDef)>,
}

/// Compiles a policy: peers that select endpoints become [`RulePeer::Set`], ipBlocks stay
/// inline with host bits masked, named ports become [`RulePort::Named`] with their set.
pub fn compile_policy(policy: &Policy) -> Compiled {
    let mut sets = Vec::new();
    let mut compile_dir = |dir| {
        policy.rules(dir).map(|rules| {
            rules
                .iter()
                .filter_map(|r| compile_rule(r, &mut sets))
                .collect::<Vec<_>>()
        })
    };
    let ingress = compile_dir(Direction::Ingress);
    let egress = compile_dir(Direction::Egress);
    Compiled {
        policy: ActivePolicy {
            id: policy.id.clone(),
            order: policy.order,
            staged: policy.staged,
            ingress,
            egress,
        },
        sets,
    }
}

fn use_set(sets: &mut Vec<(IpSetId, SetDef)>, def: SetDef) -> IpSetId {
    let id = def.id();
    if !sets.iter().any(|(known, _)| *known == id) {
        sets.push((id.clone(), def));
    }
    id
}

/// A rule compiled; `None` for a rule that matches nothing here: every peer it names is a
/// domain-name peer, which address-based enforcement cannot see. Node peers become sets of
/// the matching nodes' addresses.
fn compile_rule(rule: &Rule, sets: &mut Vec<(IpSetId, SetDef)>) -> Option<CompiledRule> {
    let peers: Vec<RulePeer> = rule
        .peers
        .iter()
        .filter_map(|peer| match peer {
            Peer::Endpoints(ep) => Some(RulePeer::Set(use_set(sets, SetDef::Peer(ep.clone())))),
            Peer::Cidr { cidr, except } => Some(RulePeer::Cidr {
                cidr: cidr.trunc(),
                except: except.iter().map(|e| e.trunc()).collect(),
            }),
            Peer::Nodes(sel) => Some(RulePeer::Set(use_set(sets, SetDef::Nodes(sel.clone())))),
            Peer::DomainNames(_) => None,
        })
        .collect();
    if peers.is_empty() && !rule.peers.is_empty() {
        return None;
    }
    let ports = rule
        .ports
        .iter()
        .map(|spec| compile_port(spec, sets))
        .collect();
    Some(CompiledRule {
        action: rule.action,
        peers,
        ports,
    })
}

fn compile_port(spec: &PortSpec, sets: &mut Vec<(IpSetId, SetDef)>) -> RulePort {
    match &spec.port {
        PortMatch::Any => RulePort::Protocol(spec.protocol),
        PortMatch::Range { start, end } => RulePort::Range {
            protocol: spec.protocol,
            start: *start,
            end: *end,
        },
        PortMatch::Named(name) => RulePort::Named {
            protocol: spec.protocol,
            name: name.clone(),
            set: use_set(
                sets,
                SetDef::NamedPort {
                    name: name.clone(),
                    protocol: spec.protocol,
                },
            ),
        },
    }
}

/// Orders the policies that select an endpoint: tiers by `tier_of`'s order (then name), inside a
/// tier by policy order, then name, then namespace. A tier appears in a direction only if
/// one of its policies applies to that direction. Staged policies are left out of the
/// enforced tiers; in a direction that a staged policy applies to, the tiers of every
/// selecting policy (staged ones as if enforced) are the staged tiers of that direction.
pub fn endpoint_tiers<'a>(
    policies: impl IntoIterator<Item = &'a Policy>,
    tier_of: impl Fn(&str) -> (u32, TierAction),
) -> EndpointTiers {
    let all: Vec<&Policy> = policies.into_iter().collect();
    if !all.iter().any(|p| p.staged) {
        return ordered_tiers(all, tier_of);
    }
    let mut tiers = ordered_tiers(all.iter().copied().filter(|p| !p.staged), &tier_of);
    let as_if = ordered_tiers(all.iter().copied(), &tier_of);
    let staged_in = |dir| all.iter().any(|p| p.staged && p.rules(dir).is_some());
    if staged_in(Direction::Ingress) {
        tiers.staged_ingress = Some(as_if.ingress);
    }
    if staged_in(Direction::Egress) {
        tiers.staged_egress = Some(as_if.egress);
    }
    tiers
}

fn ordered_tiers<'a>(
    policies: impl IntoIterator<Item = &'a Policy>,
    tier_of: impl Fn(&str) -> (u32, TierAction),
) -> EndpointTiers {
    // The tier is looked up once per policy, not once per comparison.
    let mut keyed: Vec<((u32, TierAction), &Policy)> = policies
        .into_iter()
        .map(|p| (tier_of(&p.id.tier), p))
        .collect();
    keyed.sort_by(|((ta, _), a), ((tb, _), b)| {
        let key = |t: &u32, p: &'a Policy| (*t, &p.id.tier, p.order, &p.id.name, &p.id.namespace);
        key(ta, a).cmp(&key(tb, b))
    });
    EndpointTiers {
        ingress: group(&keyed, Direction::Ingress),
        egress: group(&keyed, Direction::Egress),
        ..EndpointTiers::default()
    }
}

fn group(sorted: &[((u32, TierAction), &Policy)], dir: Direction) -> Vec<TierPolicies> {
    let mut out: Vec<TierPolicies> = Vec::new();
    for ((_, action), p) in sorted.iter().filter(|(_, p)| p.rules(dir).is_some()) {
        match out.last_mut() {
            Some(t) if t.tier == p.id.tier => t.policies.push(p.id.clone()),
            _ => out.push(TierPolicies {
                tier: p.id.tier.clone(),
                policies: vec![p.id.clone()],
                default_action: *action,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_model::{Action, EndpointPeer, NamespaceMatch, PolicyId, Protocol, Selector};

    #[test]
    fn a_peer_used_twice_is_one_set_reference() {
        let peer = Peer::Endpoints(EndpointPeer {
            namespaces: NamespaceMatch::Name("a".into()),
            pods: Selector::All,
        });
        let named = PortSpec {
            protocol: Protocol::Tcp,
            port: PortMatch::Named("http".into()),
        };
        let rule = Rule {
            action: Action::Allow,
            peers: vec![peer.clone(), peer],
            ports: vec![named.clone(), named],
        };
        let policy = Policy {
            id: PolicyId {
                tier: "default".into(),
                namespace: Some("a".into()),
                name: "p".into(),
            },
            order: 7,
            selector: Selector::All,
            namespace_selector: Selector::All,
            staged: false,
            ingress: Some(vec![rule.clone()]),
            egress: Some(vec![rule]),
        };
        let c = compile_policy(&policy);
        assert_eq!(c.sets.len(), 2);
        assert_eq!(c.policy.order, 7);
        let ingress = c.policy.ingress.unwrap();
        assert_eq!(ingress[0].peers.len(), 2);
        assert_eq!(ingress[0].peers[0], RulePeer::Set(c.sets[0].0.clone()));
        assert!(
            matches!(ingress[0].ports[0], RulePort::Named { ref set, .. } if *set == c.sets[1].0)
        );
    }
}
