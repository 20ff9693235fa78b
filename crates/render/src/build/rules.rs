//! One compiled policy rule → IR rules of a policy chain. A rule becomes one IR rule per
//! (family, peer, port group) alternative: peers are ORed, port groups are ORed (protocols
//! apart, multiport chunks of at most 15 slots, one per named port), and every alternative
//! carries the rule's action. Allow and Pass set their mark and are followed by one
//! `mark → RETURN` rule; Deny drops (logged first, rate-limited, when drops are logged); Log logs and continues.

use ipnet::IpNet;
use palisade_calc::{ActivePolicy, CompiledRule, DesiredState, IpSetKind, RulePeer, RulePort};
use palisade_model::{Action as ModelAction, Direction, Protocol};

use crate::config::RenderConfig;
use crate::error::RenderError;
use crate::ir::{
    Action, Chain, Dir, Family, Match, PortRange, Proto, Rule, SetDef, SetEntry, SetKind, SetRef,
};
use crate::names;

/// Most slots one iptables multiport match takes.
pub const MULTIPORT_SLOTS: usize = 15;

/// Whether `policy` gets a staged-evaluation chain (`pal-si-`/`pal-so-`) for `direction`: when
/// it is staged, or when its rules there do more than mark (Deny drops, Log logs), which a
/// staged evaluation must not do. Otherwise staged evaluation jumps to its enforced chain.
pub(crate) fn has_staged_chain(policy: &ActivePolicy, direction: Direction) -> bool {
    let rules = match direction {
        Direction::Ingress => policy.ingress.as_ref(),
        Direction::Egress => policy.egress.as_ref(),
    };
    rules.is_some_and(|rules| {
        policy.staged
            || rules
                .iter()
                .any(|r| matches!(r.action, ModelAction::Deny | ModelAction::Log))
    })
}

/// The chain a staged evaluation jumps to for `policy`.
pub(crate) fn staged_jump_target(policy: &ActivePolicy, direction: Direction) -> String {
    if has_staged_chain(policy, direction) {
        names::staged_policy_chain(direction, &policy.id)
    } else {
        names::policy_chain(direction, &policy.id)
    }
}

/// The names of the chains [`policy_chains`] builds for `policy` and `direction`.
pub(crate) fn policy_chain_names(policy: &ActivePolicy, direction: Direction) -> Vec<String> {
    let applies = match direction {
        Direction::Ingress => policy.ingress.is_some(),
        Direction::Egress => policy.egress.is_some(),
    };
    let mut out = Vec::new();
    if applies && !policy.staged {
        out.push(names::policy_chain(direction, &policy.id));
    }
    if has_staged_chain(policy, direction) {
        out.push(names::staged_policy_chain(direction, &policy.id));
    }
    out
}

/// Every chain of `policy` for `direction`: the enforced one (not for a staged policy) and the
/// staged-evaluation one ([`has_staged_chain`]), with the ipBlock sets they need.
pub(crate) fn policy_chains(
    state: &DesiredState,
    cfg: &RenderConfig,
    families: &[Family],
    policy: &ActivePolicy,
    direction: Direction,
) -> Result<Vec<(Chain, Vec<SetDef>)>, RenderError> {
    let mut out = Vec::new();
    if !policy.staged {
        out.extend(policy_chain(
            state, cfg, families, policy, direction, false,
        )?);
    }
    if has_staged_chain(policy, direction) {
        out.extend(policy_chain(state, cfg, families, policy, direction, true)?);
    }
    Ok(out)
}

/// The chain of `policy` for `direction` (`None` when the policy does not apply to it) and
/// the dedicated ipBlock sets its rules need. `staged`: the staged-evaluation form, where Deny
/// sets the deny mark (scratch bit 1) and returns, and Log rules are left out.
pub(crate) fn policy_chain(
    state: &DesiredState,
    cfg: &RenderConfig,
    families: &[Family],
    policy: &ActivePolicy,
    direction: Direction,
    staged: bool,
) -> Result<Option<(Chain, Vec<SetDef>)>, RenderError> {
    let rules = match direction {
        Direction::Ingress => policy.ingress.as_ref(),
        Direction::Egress => policy.egress.as_ref(),
    };
    let Some(rules) = rules else {
        return Ok(None);
    };
    let peer_dir = match direction {
        Direction::Ingress => Dir::Src,
        Direction::Egress => Dir::Dst,
    };
    let mut out = Vec::new();
    let mut sets: Vec<SetDef> = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        let mut variants: Vec<Vec<Match>> = Vec::new();
        for &family in families {
            let peers = peer_alternatives(state, policy, rule, family, peer_dir, &mut sets)?;
            let ports = port_alternatives(state, policy, rule, family)?;
            for p in &peers {
                for q in &ports {
                    let m: Vec<Match> = p.iter().chain(q.iter()).cloned().collect();
                    if !variants.contains(&m) {
                        variants.push(m);
                    }
                }
            }
        }
        if staged && rule.action == ModelAction::Log {
            continue;
        }
        let deny_mark = cfg.staged_deny_mark();
        let (action, mark) = match rule.action {
            ModelAction::Allow => (Action::SetMark(cfg.accept_mark), Some(cfg.accept_mark)),
            ModelAction::Pass => (Action::SetMark(cfg.pass_mark), Some(cfg.pass_mark)),
            ModelAction::Deny if staged => (Action::SetMark(deny_mark), Some(deny_mark)),
            ModelAction::Deny => (Action::Drop, None),
            ModelAction::Log => (
                Action::Log {
                    group: cfg.log_group,
                    prefix: names::rule_log_prefix(direction, &policy.id, index),
                },
                None,
            ),
        };
        let any = !variants.is_empty();
        let deny_log = match (rule.action, cfg.drop_log_group) {
            (ModelAction::Deny, Some(group)) if !staged => Some(Action::Log {
                group,
                prefix: names::drop_log_prefix(names::DropSite::DenyRule {
                    direction,
                    policy: &policy.id,
                    rule: index,
                }),
            }),
            _ => None,
        };
        for m in variants {
            if let Some(log) = &deny_log {
                let limited = m.iter().cloned().chain(cfg.drop_log_limit()).collect();
                out.push(Rule::new(limited, log.clone()));
            }
            out.push(Rule::new(m, action.clone()));
        }
        if let (true, Some(mark)) = (any, mark) {
            out.push(Rule::new(
                vec![Match::Mark {
                    value: mark,
                    mask: mark,
                }],
                Action::Return,
            ));
        }
    }
    let name = if staged {
        names::staged_policy_chain(direction, &policy.id)
    } else {
        names::policy_chain(direction, &policy.id)
    };
    let chain = Chain { name, rules: out }.seal();
    Ok(Some((chain, sets)))
}

fn peer_alternatives(
    state: &DesiredState,
    policy: &ActivePolicy,
    rule: &CompiledRule,
    family: Family,
    dir: Dir,
    sets: &mut Vec<SetDef>,
) -> Result<Vec<Vec<Match>>, RenderError> {
    if rule.peers.is_empty() {
        return Ok(vec![vec![]]);
    }
    let mut out = Vec::new();
    for peer in &rule.peers {
        match peer {
            RulePeer::Set(id) => {
                let kind = state.ip_sets.get(id).map(|s| s.kind).ok_or_else(|| {
                    RenderError::MissingSet {
                        policy: policy.id.to_string(),
                        set: id.0.clone(),
                    }
                })?;
                let set = SetRef {
                    name: names::set_name(family, id),
                    family,
                    kind: set_kind(kind),
                };
                out.push(vec![Match::Set { set, dir }]);
            }
            RulePeer::Cidr { cidr, except } => {
                if Family::of_net(cidr) != family {
                    continue;
                }
                let cidr = cidr.trunc();
                let except: Vec<IpNet> = except
                    .iter()
                    .filter(|e| Family::of_net(e) == family)
                    .map(IpNet::trunc)
                    .collect();
                if except.is_empty() {
                    out.push(vec![Match::Net { net: cidr, dir }]);
                } else {
                    let def = cidr_set(family, &cidr, &except);
                    let m = Match::Set {
                        set: def.set.clone(),
                        dir,
                    };
                    if !sets.iter().any(|s| s.set == def.set) {
                        sets.push(def);
                    }
                    out.push(vec![m]);
                }
            }
        }
    }
    Ok(out)
}

pub(crate) fn set_kind(kind: IpSetKind) -> SetKind {
    match kind {
        IpSetKind::Net => SetKind::Net,
        IpSetKind::NetPort => SetKind::NetPort,
    }
}

/// The dedicated set of an ipBlock with exceptions: the CIDR (a `/0` as two halves, which
/// `hash:net` needs) and every exception as a `nomatch` entry.
pub(crate) fn cidr_set(family: Family, cidr: &IpNet, except: &[IpNet]) -> SetDef {
    let mut members: Vec<SetEntry> = split_zero(cidr)
        .into_iter()
        .filter(|half| !except.iter().any(|e| e.contains(half)))
        .map(SetEntry::Net)
        .collect();
    let mut ex: Vec<IpNet> = except.to_vec();
    ex.sort();
    ex.dedup();
    members.extend(ex.into_iter().map(SetEntry::NoMatch));
    SetDef {
        set: SetRef {
            name: names::cidr_set_name(family, cidr, except),
            family,
            kind: SetKind::Net,
        },
        description: names::sanitize(&format!("ipBlock {cidr} with exceptions"), 200),
        members,
    }
}

/// `hash:net` cannot hold a `/0`: it becomes its two `/1` halves.
pub(crate) fn split_zero(net: &IpNet) -> Vec<IpNet> {
    if net.prefix_len() == 0 {
        net.subnets(1).map(|s| s.collect()).unwrap_or_default()
    } else {
        vec![*net]
    }
}

fn port_alternatives(
    state: &DesiredState,
    policy: &ActivePolicy,
    rule: &CompiledRule,
    family: Family,
) -> Result<Vec<Vec<Match>>, RenderError> {
    if rule.ports.is_empty() {
        return Ok(vec![vec![]]);
    }
    // Protocols in order of first appearance.
    let mut protocols: Vec<Protocol> = Vec::new();
    for p in &rule.ports {
        let proto = match p {
            RulePort::Protocol(p) | RulePort::Range { protocol: p, .. } => *p,
            RulePort::Named { protocol, .. } => *protocol,
        };
        if !protocols.contains(&proto) {
            protocols.push(proto);
        }
    }
    let mut out = Vec::new();
    for proto in protocols {
        let kproto = Proto::from_model(proto, family);
        let specs = rule.ports.iter().filter(|p| match p {
            RulePort::Protocol(p) | RulePort::Range { protocol: p, .. } => *p == proto,
            RulePort::Named { protocol, .. } => *protocol == proto,
        });
        let mut any = false;
        let mut ranges: Vec<PortRange> = Vec::new();
        let mut named = Vec::new();
        for spec in specs {
            match spec {
                RulePort::Protocol(_) => any = true,
                RulePort::Range { start, end, .. } => ranges.push(PortRange {
                    start: *start.min(end),
                    end: *start.max(end),
                }),
                RulePort::Named { set, .. } => {
                    if !state.ip_sets.contains_key(set) {
                        return Err(RenderError::MissingSet {
                            policy: policy.id.to_string(),
                            set: set.0.clone(),
                        });
                    }
                    named.push(set.clone());
                }
            }
        }
        if any {
            out.push(vec![Match::Protocol(kproto)]);
            continue;
        }
        if !kproto.has_ports() {
            // ICMP has no ports: a port or named port of it matches nothing.
            continue;
        }
        ranges.sort();
        ranges.dedup();
        for chunk in chunk_ports(&ranges) {
            out.push(vec![Match::Protocol(kproto), Match::DstPorts(chunk)]);
        }
        named.sort();
        named.dedup();
        for id in named {
            let set = SetRef {
                name: names::set_name(family, &id),
                family,
                kind: SetKind::NetPort,
            };
            out.push(vec![
                Match::Protocol(kproto),
                Match::Set { set, dir: Dir::Dst },
            ]);
        }
    }
    Ok(out)
}

/// Splits port ranges into groups of at most [`MULTIPORT_SLOTS`] slots (a range takes 2).
pub(crate) fn chunk_ports(ranges: &[PortRange]) -> Vec<Vec<PortRange>> {
    let mut out: Vec<Vec<PortRange>> = Vec::new();
    let mut cur: Vec<PortRange> = Vec::new();
    let mut used = 0;
    for r in ranges {
        if used + r.slots() > MULTIPORT_SLOTS {
            out.push(std::mem::take(&mut cur));
            used = 0;
        }
        used += r.slots();
        cur.push(*r);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiport_chunks_count_ranges_twice() {
        let singles: Vec<PortRange> = (1..=16).map(|p| PortRange { start: p, end: p }).collect();
        let c = chunk_ports(&singles);
        assert_eq!(c.iter().map(Vec::len).collect::<Vec<_>>(), vec![15, 1]);
        let ranges: Vec<PortRange> = (0..8)
            .map(|i| PortRange {
                start: i * 10 + 1,
                end: i * 10 + 5,
            })
            .collect();
        let c = chunk_ports(&ranges);
        assert_eq!(c.iter().map(Vec::len).collect::<Vec<_>>(), vec![7, 1]);
        assert!(c
            .iter()
            .all(|g| g.iter().map(PortRange::slots).sum::<usize>() <= MULTIPORT_SLOTS));
    }

    #[test]
    fn zero_prefix_is_split() {
        let v4: IpNet = "0.0.0.0/0".parse().unwrap();
        assert_eq!(
            split_zero(&v4),
            vec![
                "0.0.0.0/1".parse::<IpNet>().unwrap(),
                "128.0.0.0/1".parse().unwrap()
            ]
        );
        let v6: IpNet = "::/0".parse().unwrap();
        assert_eq!(split_zero(&v6).len(), 2);
    }
}
