//! The layout: [`DesiredState`] → [`Ruleset`].
//!
//! ```text
//!  FORWARD ─► pal-FORWARD: ct established,related → ACCEPT; ct invalid → DROP;
//!             clear accept|pass marks;
//!             by input iface  → pal-fw-<iface>  (egress of the sending endpoint; returns with
//!                                                  the accept mark set, or drops)
//!             by output iface → pal-tw-<iface>  (ingress of the receiving endpoint; ACCEPT or DROP)
//!             (an endpoint's interface is dispatched under each configured prefix's name, its
//!             aliases, all to the chains named from its primary name)
//!             accept mark set → ACCEPT           (egress allowed, receiver not on this node)
//!             otherwise return                   (not workload traffic: left alone)
//!  pal-fw-/pal-tw-<iface>, per tier: clear marks; jump to each policy chain while neither
//!             mark is set; accept mark → RETURN (fw) / ACCEPT (tw); no pass mark → [NFLOG,
//!             rate-limited] DROP (not in a tier that ends with Pass: the ClusterNetworkPolicy tiers).
//!             After the last tier (or with no tier: the namespace's default allow):
//!             fw sets the accept mark, tw accepts.
//!  pal-pi-/pal-po-<hash>: rules in order; Allow sets the accept mark and returns, Pass the
//!             pass mark, Deny [NFLOGs, rate-limited, and] drops, Log logs and continues.
//! ```
//!
//! A packet between two endpoints of this node goes through the sender's fw chain first,
//! which only marks, and then the receiver's tw chain, which decides.

pub(crate) mod flat;
mod rules;
mod staged;

use std::collections::BTreeMap;

use palisade_calc::{DesiredState, IpSet, IpSetMember, LocalEndpoint};
use palisade_model::{Direction, EndpointId, TierAction};

use crate::config::{EndpointMatch, RenderConfig};
use crate::error::RenderError;
use crate::ir::SetKind;
use crate::ir::{
    Action, Chain, CtState, Dir, DispatchKey, Family, Hook, IfaceDir, Match, Proto, Rule, Ruleset,
    SetDef, SetEntry, SetRef,
};
use crate::names;

pub(crate) use rules::staged_jump_target;
pub use rules::MULTIPORT_SLOTS;
pub(crate) use rules::{policy_chain_names, policy_chains, set_kind, split_zero};
pub(crate) use staged::staged_endpoint_chain;

/// The families the config enables, v4 first.
pub fn families(cfg: &RenderConfig) -> Vec<Family> {
    let mut f = Vec::new();
    if cfg.ipv4 {
        f.push(Family::V4);
    }
    if cfg.ipv6 {
        f.push(Family::V6);
    }
    f
}

/// The complete ruleset for a node.
pub fn build(state: &DesiredState, cfg: &RenderConfig) -> Result<Ruleset, RenderError> {
    cfg.validate()?;
    let fams = families(cfg);
    check_endpoints(state)?;
    if cfg.endpoint_match == EndpointMatch::Address {
        check_addresses(state)?;
    }
    let mut sets: Vec<SetDef> = Vec::new();
    for set in state.ip_sets.values() {
        for &f in &fams {
            sets.push(state_set(set, f));
        }
    }
    sets.extend(spoof_sets(cfg, &fams));
    let mut chains = vec![forward_chain(state, cfg), spoof_chain(&fams)];
    let mut cidr_sets: BTreeMap<String, SetDef> = BTreeMap::new();
    for policy in state.policies.values() {
        for dir in [Direction::Ingress, Direction::Egress] {
            for (chain, extra) in policy_chains(state, cfg, &fams, policy, dir)? {
                chains.push(chain);
                for s in extra {
                    cidr_sets.insert(s.set.name.clone(), s);
                }
            }
        }
    }
    for ep in state.endpoints.values() {
        for dir in [Direction::Egress, Direction::Ingress] {
            chains.extend(staged_endpoint_chain(state, cfg, ep, dir)?);
            chains.push(endpoint_chain(state, cfg, ep, dir)?);
            sets.extend(flat::flat_sets(state, cfg, &fams, ep, dir)?);
        }
    }
    sets.extend(cidr_sets.into_values());
    Ok(Ruleset {
        families: fams,
        sets,
        chains,
        hooks: hooks(),
    })
}

/// `FORWARD`, `INPUT` and `OUTPUT -j pal-FORWARD` (see [`names::LOCAL_HOOKS`]).
pub fn hooks() -> Vec<Hook> {
    std::iter::once(forward_hook())
        .chain(names::LOCAL_HOOKS.iter().map(|(kernel, _, _)| hook(kernel)))
        .collect()
}

/// `FORWARD -j pal-FORWARD`.
pub fn forward_hook() -> Hook {
    hook("FORWARD")
}

/// `<kernel> -j pal-FORWARD`.
fn hook(kernel: &str) -> Hook {
    Hook {
        kernel_chain: kernel.into(),
        target: names::FORWARD_CHAIN.into(),
        comment: format!(
            "pal:{}",
            names::hash_hex(&["hook", kernel, names::FORWARD_CHAIN], 16)
        ),
    }
}

/// Every interface name of an endpoint: the primary one (which names its chains), then its
/// aliases under the other prefixes.
pub(crate) fn iface_names(ep: &LocalEndpoint) -> impl Iterator<Item = &str> {
    std::iter::once(ep.iface.as_str()).chain(ep.iface_aliases.iter().map(String::as_str))
}

/// The interfaces of the endpoints `ids` (those of them in `state`) are valid and not shared
/// with any other endpoint of `state`: what a batch that changed only these endpoints must
/// check, in one pass over the others.
pub(crate) fn check_changed_endpoints<'a>(
    state: &DesiredState,
    ids: impl IntoIterator<Item = &'a EndpointId>,
) -> Result<(), RenderError> {
    for id in ids {
        let Some(ep) = state.endpoints.get(id) else {
            continue;
        };
        for (i, name) in iface_names(ep).enumerate() {
            names::check_iface(&ep.id, name)?;
            if iface_names(ep).take(i).any(|n| n == name) {
                return Err(duplicate(ep, ep, name));
            }
        }
        for other in state.endpoints.values().filter(|o| o.id != ep.id) {
            if let Some(name) = iface_names(ep).find(|n| iface_names(other).any(|o| o == *n)) {
                return Err(duplicate(other, ep, name));
            }
        }
    }
    Ok(())
}

/// No two endpoints share an address (address matching: one owner per key).
pub(crate) fn check_addresses(state: &DesiredState) -> Result<(), RenderError> {
    let mut seen: BTreeMap<std::net::IpAddr, &EndpointId> = BTreeMap::new();
    for ep in state.endpoints.values() {
        for ip in dedup_ips(ep) {
            if let Some(first) = seen.insert(ip, &ep.id) {
                return Err(duplicate_addr(first, &ep.id, ip));
            }
        }
    }
    Ok(())
}

/// [`check_addresses`] for the endpoints a batch changed, against every other endpoint.
pub(crate) fn check_changed_addresses<'a>(
    state: &DesiredState,
    ids: impl IntoIterator<Item = &'a EndpointId>,
) -> Result<(), RenderError> {
    for id in ids {
        let Some(ep) = state.endpoints.get(id) else {
            continue;
        };
        for other in state.endpoints.values().filter(|o| o.id != ep.id) {
            if let Some(ip) = ep.ips.iter().find(|ip| other.ips.contains(ip)) {
                return Err(duplicate_addr(&ep.id, &other.id, *ip));
            }
        }
    }
    Ok(())
}

fn duplicate_addr(a: &EndpointId, b: &EndpointId, ip: std::net::IpAddr) -> RenderError {
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    RenderError::DuplicateAddress {
        first: first.to_string(),
        second: second.to_string(),
        addr: ip.to_string(),
    }
}

/// An endpoint's addresses, each once, in order.
pub(crate) fn dedup_ips(ep: &LocalEndpoint) -> Vec<std::net::IpAddr> {
    let mut out: Vec<std::net::IpAddr> = Vec::with_capacity(ep.ips.len());
    for ip in &ep.ips {
        if !out.contains(ip) {
            out.push(*ip);
        }
    }
    out
}

/// The dispatch entries of one endpoint, `(map, key, chain)`: per direction, one per
/// interface name (interface matching) or one per address of an enabled family (address
/// matching). The chains are named from the primary interface name either way.
pub(crate) fn dispatch_entries(
    ep: &LocalEndpoint,
    cfg: &RenderConfig,
) -> Vec<(&'static str, String, String)> {
    let mut out = Vec::new();
    for (from, dir) in [(true, Direction::Egress), (false, Direction::Ingress)] {
        let chain = names::endpoint_chain(dir, &ep.iface);
        match cfg.endpoint_match {
            EndpointMatch::Interface => {
                for name in iface_names(ep) {
                    let map = names::dispatch_map(from, DispatchKey::Iface);
                    out.push((map, name.to_string(), chain.clone()));
                }
            }
            EndpointMatch::Address => {
                for ip in dedup_ips(ep) {
                    let f = Family::of(&ip);
                    if (f == Family::V4 && cfg.ipv4) || (f == Family::V6 && cfg.ipv6) {
                        let map = names::dispatch_map(from, DispatchKey::Addr(f));
                        out.push((map, ip.to_string(), chain.clone()));
                    }
                }
            }
        }
    }
    out
}

fn duplicate(a: &LocalEndpoint, b: &LocalEndpoint, iface: &str) -> RenderError {
    let (first, second) = if a.id <= b.id { (a, b) } else { (b, a) };
    RenderError::DuplicateInterface {
        first: first.id.to_string(),
        second: second.id.to_string(),
        iface: iface.to_string(),
    }
}

/// Interfaces (aliases included) are valid and not shared.
pub(crate) fn check_endpoints(state: &DesiredState) -> Result<(), RenderError> {
    let mut seen: BTreeMap<&str, &EndpointId> = BTreeMap::new();
    for ep in state.endpoints.values() {
        for name in iface_names(ep) {
            names::check_iface(&ep.id, name)?;
            if let Some(first) = seen.insert(name, &ep.id) {
                return Err(RenderError::DuplicateInterface {
                    first: first.to_string(),
                    second: ep.id.to_string(),
                    iface: name.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// The members of a calc set that belong to `family`.
pub(crate) fn state_set(set: &IpSet, family: Family) -> SetDef {
    let members = set
        .members
        .iter()
        .flat_map(|m| member_entries(m, family))
        .collect();
    SetDef {
        set: set_ref(&set.id, set.kind, family),
        description: names::sanitize(&set.description, 200),
        members,
    }
}

pub(crate) fn set_ref(
    id: &palisade_calc::IpSetId,
    kind: palisade_calc::IpSetKind,
    family: Family,
) -> SetRef {
    SetRef {
        name: names::set_name(family, id),
        family,
        kind: set_kind(kind),
    }
}

/// The entries one calc member becomes in a set of `family` (none for the other family, or
/// for ICMP named ports, which cannot match).
pub(crate) fn member_entries(member: &IpSetMember, family: Family) -> Vec<SetEntry> {
    let mut out = Vec::new();
    for_each_member_entry(member, family, |e| out.push(e));
    out
}

/// [`member_entries`] without the vector (a new set's members are rendered one by one).
pub(crate) fn for_each_member_entry(
    member: &IpSetMember,
    family: Family,
    mut f: impl FnMut(SetEntry),
) {
    match member {
        IpSetMember::Net(net) if Family::of_net(net) == family => {
            let net = net.trunc();
            if net.prefix_len() == 0 {
                split_zero(&net).into_iter().map(SetEntry::Net).for_each(f);
            } else {
                f(SetEntry::Net(net));
            }
        }
        IpSetMember::NetPort { ip, protocol, port } if Family::of(ip) == family => {
            let proto = Proto::from_model(*protocol, family);
            if proto.has_ports() {
                f(SetEntry::NetPort {
                    ip: *ip,
                    proto,
                    port: *port,
                });
            }
        }
        _ => {}
    }
}

/// ICMPv6 types neighbour discovery needs (router solicitation and advertisement, neighbour
/// solicitation and advertisement): accepted under any policy, both directions. Redirect (137)
/// is not: NDP works without it, and a pod could use it to steer others' traffic.
pub const NDP_TYPES: [u8; 4] = [133, 134, 135, 136];

/// The dispatch keys the config uses, in chain order within one side.
fn dispatch_keys(cfg: &RenderConfig) -> Vec<DispatchKey> {
    match cfg.endpoint_match {
        EndpointMatch::Interface => vec![DispatchKey::Iface],
        EndpointMatch::Address => families(cfg).into_iter().map(DispatchKey::Addr).collect(),
    }
}

/// The anti-spoofing sets of each family: the bound local addresses, and the (address,
/// interface[, bridge port]) pairs they may come from (from [`RenderConfig::source_bindings`]).
pub fn spoof_sets(cfg: &RenderConfig, fams: &[Family]) -> Vec<SetDef> {
    let mut out = Vec::new();
    for &f in fams {
        let bound = cfg
            .source_bindings
            .iter()
            .filter(|(ip, _)| Family::of(ip) == f);
        let local = bound
            .clone()
            .map(|(ip, _)| SetEntry::Net(ipnet::IpNet::from(*ip)))
            .collect();
        let pairs = bound
            .filter_map(|(ip, b)| Some((ip, b.as_ref()?)))
            .map(|(ip, b)| SetEntry::NetIface {
                ip: *ip,
                iface: b.iface.clone(),
                port: b.bridge_port.clone(),
            })
            .collect();
        out.push(SetDef {
            set: SetRef {
                name: names::local_set_name(f),
                family: f,
                kind: SetKind::Net,
            },
            description: "local pod addresses with a known interface".into(),
            members: local,
        });
        out.push(SetDef {
            set: SetRef {
                name: names::bind_set_name(f),
                family: f,
                kind: SetKind::NetIface,
            },
            description: "local pod address and the interface it may enter on".into(),
            members: pairs,
        });
    }
    out
}

/// `pal-spoof`: a packet from a bound local address returns only when it came in where its
/// binding says; otherwise it is dropped (the drop's counter counts spoofed packets).
pub fn spoof_chain(fams: &[Family]) -> Chain {
    let mut rules = Vec::new();
    for &f in fams {
        let set = |name: String, kind| SetRef {
            name,
            family: f,
            kind,
        };
        rules.push(Rule::new(
            vec![Match::Set {
                set: set(names::bind_set_name(f), SetKind::NetIface),
                dir: Dir::Src,
            }],
            Action::Return,
        ));
        rules.push(Rule::new(
            vec![Match::Set {
                set: set(names::local_set_name(f), SetKind::Net),
                dir: Dir::Src,
            }],
            Action::Drop,
        ));
    }
    Chain {
        name: names::SPOOF_CHAIN.into(),
        rules,
    }
    .seal()
}

/// `pal-FORWARD`: anti-spoofing, conntrack, NDP, then dispatch by interface or by address.
pub(crate) fn forward_chain(state: &DesiredState, cfg: &RenderConfig) -> Chain {
    let mut targets: BTreeMap<&'static str, Vec<(String, String)>> = BTreeMap::new();
    for ep in state.endpoints.values() {
        for (map, key, chain) in dispatch_entries(ep, cfg) {
            targets.entry(map).or_default().push((key, chain));
        }
    }
    // Before conntrack: a spoofed packet must not ride on its victim's connection.
    let mut rules = vec![
        Rule::new(vec![], Action::Jump(names::SPOOF_CHAIN.into())),
        Rule::new(
            vec![Match::CtState(vec![CtState::Related, CtState::Established])],
            Action::Accept,
        ),
    ];
    if cfg.ipv6 {
        for t in NDP_TYPES {
            rules.push(Rule::new(
                vec![Match::Protocol(Proto::Icmpv6), Match::Icmpv6Type(t)],
                Action::Accept,
            ));
        }
    }
    rules.push(Rule::new(
        vec![Match::CtState(vec![CtState::Invalid])],
        Action::Drop,
    ));
    rules.push(Rule::new(vec![], Action::ClearMark(cfg.verdict_marks())));
    for (from, dir) in [(true, IfaceDir::In), (false, IfaceDir::Out)] {
        for key in dispatch_keys(cfg) {
            let map = names::dispatch_map(from, key);
            rules.push(Rule::new(
                vec![],
                Action::Dispatch {
                    dir,
                    key,
                    map: map.into(),
                    targets: targets.remove(map).unwrap_or_default(),
                },
            ));
        }
    }
    rules.push(Rule::new(
        vec![Match::Mark {
            value: cfg.accept_mark,
            mask: cfg.accept_mark,
        }],
        Action::Accept,
    ));
    Chain {
        name: names::FORWARD_CHAIN.into(),
        rules,
    }
    .seal()
}

/// The ingress (`pal-tw-`) or egress (`pal-fw-`) chain of a local endpoint. With staged tiers
/// in `direction` (and drop logging on), it first runs the staged evaluation
/// ([`staged_endpoint_chain`]), which leaves the staged-accept mark set when the staged tiers
/// accept, and logs, rate-limited, where the enforced verdict differs: an accept the staged
/// tiers would drop ([`names::DropSite::StagedDrop`]), an end-of-tier drop they would accept
/// ([`names::DropSite::StagedAllow`]). The enforced verdict is the same as without them.
pub(crate) fn endpoint_chain(
    state: &DesiredState,
    cfg: &RenderConfig,
    ep: &LocalEndpoint,
    direction: Direction,
) -> Result<Chain, RenderError> {
    let tiers = ep.tiers.of(direction);
    let verdict = cfg.verdict_marks();
    let on_accept = match direction {
        Direction::Ingress => Action::Accept,
        Direction::Egress => Action::Return,
    };
    let staged = staged::logging(cfg, ep, direction);
    let mut rules = Vec::new();
    if let Some(log) = &staged {
        rules.extend(log.prologue(cfg));
    }
    let undecided = || Match::Mark {
        value: 0,
        mask: verdict,
    };
    for tier in tiers {
        rules.push(Rule::new(vec![], Action::ClearMark(verdict)));
        for pid in &tier.policies {
            check_applies(state, ep, direction, &tier.tier, pid)?;
        }
        if tier.tier == palisade_model::DEFAULT_TIER {
            rules.push(node_local_pass(cfg, direction));
        }
        if flat::is_flat(state, cfg, tier, direction) {
            // One lookup per family and kind instead of a jump per policy (skipped, as the
            // jumps are, once a mark is set).
            for f in families(cfg) {
                let (any, by_port) = flat::flat_refs(f, direction, ep, &tier.tier);
                for set in [any, by_port] {
                    rules.push(Rule::new(
                        vec![
                            undecided(),
                            Match::Set {
                                set,
                                dir: flat::peer_dir(direction),
                            },
                        ],
                        Action::SetMark(cfg.accept_mark),
                    ));
                }
            }
        } else {
            for pid in &tier.policies {
                rules.push(Rule::new(
                    vec![undecided()],
                    Action::Jump(names::policy_chain(direction, pid)),
                ));
            }
        }
        if let Some(log) = &staged {
            rules.push(log.would_drop(cfg, cfg.accept_mark));
        }
        rules.push(Rule::new(
            vec![Match::Mark {
                value: cfg.accept_mark,
                mask: cfg.accept_mark,
            }],
            on_accept.clone(),
        ));
        // A tier that ends with Pass (the ClusterNetworkPolicy tiers) lets what no rule decided
        // go on to the next tier; one that ends with Deny drops it.
        if tier.default_action == TierAction::Pass {
            continue;
        }
        let no_pass = Match::Mark {
            value: 0,
            mask: cfg.pass_mark,
        };
        if let Some(group) = cfg.drop_log_group {
            // With staged tiers: either the staged-allow log or the plain drop log.
            let mut log_when = no_pass.clone();
            if let Some(log) = &staged {
                rules.push(log.would_allow(cfg, ep, &tier.tier));
                log_when = Match::Mark {
                    value: 0,
                    mask: cfg.pass_mark | cfg.staged_accept_mark(),
                };
            }
            let site = names::DropSite::EndOfTier {
                direction,
                endpoint: &ep.id,
                tier: &tier.tier,
            };
            rules.push(Rule::new(
                std::iter::once(log_when)
                    .chain(cfg.drop_log_limit())
                    .collect(),
                Action::Log {
                    group,
                    prefix: names::drop_log_prefix(site),
                },
            ));
        }
        rules.push(Rule::new(vec![no_pass], Action::Drop));
    }
    // No tier, or every tier passed: the namespace's default allow.
    if let Some(log) = &staged {
        rules.push(log.would_drop(cfg, 0));
    }
    rules.push(match direction {
        Direction::Ingress => Rule::new(vec![], Action::Accept),
        Direction::Egress => Rule::new(vec![], Action::SetMark(cfg.accept_mark)),
    });
    Ok(Chain {
        name: names::endpoint_chain(direction, &ep.iface),
        rules,
    }
    .seal())
}

/// NetworkPolicies do not judge traffic between a pod and its own node (Kubernetes: "traffic
/// to and from the node where a Pod is running is always allowed"): at the start of the
/// NetworkPolicy tier, a packet whose far end is an address of the node (the source on the
/// ingress side: the node's OUTPUT; the destination on the egress side: its INPUT) gets the
/// pass mark, so the tier's policies are skipped and its end does not drop it. A pod sending
/// from its node's address: IPv4 drops such packets as martians (`accept_local=0`); IPv6 has no
/// such check and `pal-spoof` does not drop them yet (docs/agent.md, "Which traffic is judged").
pub(crate) fn node_local_pass(cfg: &RenderConfig, direction: Direction) -> Rule {
    let far = match direction {
        Direction::Ingress => Dir::Src,
        Direction::Egress => Dir::Dst,
    };
    Rule::new(vec![Match::LocalAddr(far)], Action::SetMark(cfg.pass_mark))
}

/// A policy an endpoint's tiers name exists in `state` and applies to `direction`.
pub(crate) fn check_applies(
    state: &DesiredState,
    ep: &LocalEndpoint,
    direction: Direction,
    tier: &str,
    pid: &palisade_model::PolicyId,
) -> Result<(), RenderError> {
    let applies = state.policies.get(pid).is_some_and(|p| match direction {
        Direction::Ingress => p.ingress.is_some(),
        Direction::Egress => p.egress.is_some(),
    });
    if applies {
        Ok(())
    } else {
        Err(RenderError::MissingPolicy {
            endpoint: ep.id.to_string(),
            direction,
            tier: tier.to_string(),
            policy: pid.to_string(),
        })
    }
}
