//! The flat layout (`RenderConfig::nft_layout` = flat, nftables): a tier whose policies are
//! all enforced and whose rules in a direction are all Allow does not jump to each policy's
//! chain. Their order does not matter (any Allow accepts), so the allow rules of one endpoint,
//! direction and tier become two lookups per family, whatever the number of policies:
//!
//! ```text
//!  pal-tw-<iface>:  ip saddr @pal4a-<h>                         → accept mark   (rules allowing every protocol)
//!                   ip saddr . meta l4proto . th dport @pal4f-<h> → accept mark (protocol, port ranges)
//! ```
//!
//! (egress: `daddr`). The elements are the union of the rules' (peer, protocol, port) boxes,
//! made disjoint (nftables' concatenated interval sets take no element whose start or end lies
//! inside another one): per protocol, the port axis is cut where any box starts or ends, and
//! in each piece the addresses of the boxes covering it are merged into ranges; neighbouring
//! pieces with the same addresses are joined again. A selector set becomes the ranges of its
//! members' addresses (neighbouring pod addresses join into one range); an ipBlock with
//! exceptions becomes the ranges left after cutting them out; a named port is resolved on the
//! endpoint (ingress) or intersected with the peers (egress: the destination's port).

use std::collections::BTreeMap;

use ipnet::IpNet;
use palisade_calc::TierPolicies;
use palisade_calc::{ActivePolicy, DesiredState, IpSetMember, LocalEndpoint, RulePeer, RulePort};
use palisade_model::{Action as ModelAction, Direction};

use crate::config::{NftLayout, RenderConfig};
use crate::error::RenderError;
use crate::ir::{Dir, Family, PortRange, Proto, SetDef, SetEntry, SetKind, SetRef};
use crate::names;

/// Inclusive address range, as a number (IPv4 in the low 32 bits).
type Span = (u128, u128);

fn rules_of(policy: &ActivePolicy, direction: Direction) -> Option<&[palisade_calc::CompiledRule]> {
    match direction {
        Direction::Ingress => policy.ingress.as_deref(),
        Direction::Egress => policy.egress.as_deref(),
    }
}

/// Whether `tier` is laid out flat for `direction`: the flat layout is on and every policy of
/// the tier is enforced and has only Allow rules there.
pub(crate) fn is_flat(
    state: &DesiredState,
    cfg: &RenderConfig,
    tier: &TierPolicies,
    direction: Direction,
) -> bool {
    cfg.nft_layout == NftLayout::Flat
        && tier.policies.iter().all(|pid| {
            state.policies.get(pid).is_some_and(|p| {
                !p.staged
                    && rules_of(p, direction)
                        .is_some_and(|rs| rs.iter().all(|r| r.action == ModelAction::Allow))
            })
        })
}

/// The references of the two sets of a flat tier in one family: (any protocol, by port).
pub(crate) fn flat_refs(
    family: Family,
    direction: Direction,
    ep: &LocalEndpoint,
    tier: &str,
) -> (SetRef, SetRef) {
    let any = SetRef {
        name: names::flat_set_name(family, direction, &ep.iface, tier, true),
        family,
        kind: SetKind::Net,
    };
    let flat = SetRef {
        name: names::flat_set_name(family, direction, &ep.iface, tier, false),
        family,
        kind: SetKind::Flat,
    };
    (any, flat)
}

/// Which packet address the flat lookups look at: the peer's.
pub(crate) fn peer_dir(direction: Direction) -> Dir {
    match direction {
        Direction::Ingress => Dir::Src,
        Direction::Egress => Dir::Dst,
    }
}

/// The flat sets of `ep` in `direction`, with their elements: two per flat tier and family.
pub(crate) fn flat_sets(
    state: &DesiredState,
    cfg: &RenderConfig,
    families: &[Family],
    ep: &LocalEndpoint,
    direction: Direction,
) -> Result<Vec<SetDef>, RenderError> {
    let mut out = Vec::new();
    for tier in ep.tiers.of(direction) {
        if !is_flat(state, cfg, tier, direction) {
            continue;
        }
        for &family in families {
            let (any, by_port) = tier_boxes(state, ep, direction, tier, family)?;
            let (any_ref, flat_ref) = flat_refs(family, direction, ep, &tier.tier);
            let what = |kind: &str| {
                names::sanitize(
                    &format!("{direction} {kind} of {} in tier {}", ep.id, tier.tier),
                    200,
                )
            };
            out.push(SetDef {
                set: any_ref,
                description: what("allowed peers, every protocol"),
                members: merge(any)
                    .into_iter()
                    .flat_map(|s| span_prefixes(s, family))
                    .map(SetEntry::Net)
                    .collect(),
            });
            out.push(SetDef {
                set: flat_ref,
                description: what("allowed peers, protocols and ports"),
                members: disjoint(by_port, family),
            });
        }
    }
    Ok(out)
}

/// Boxes keyed by (protocol, first port, last port) → peer ranges.
type PortBoxes = BTreeMap<(Proto, u16, u16), Vec<Span>>;

/// The peer ranges allowed every protocol, and those allowed a protocol and port range, of the
/// rules of one tier.
fn tier_boxes(
    state: &DesiredState,
    ep: &LocalEndpoint,
    direction: Direction,
    tier: &TierPolicies,
    family: Family,
) -> Result<(Vec<Span>, PortBoxes), RenderError> {
    let mut any: Vec<Span> = Vec::new();
    let mut by_port: PortBoxes = BTreeMap::new();
    let full = full_span(family);
    for pid in &tier.policies {
        let Some(policy) = state.policies.get(pid) else {
            continue;
        };
        for rule in rules_of(policy, direction).unwrap_or_default() {
            let peers: Option<Vec<Span>> = if rule.peers.is_empty() {
                None
            } else {
                Some(peer_spans(state, policy, &rule.peers, family)?)
            };
            let peers_or_all = || peers.clone().unwrap_or_else(|| vec![full]);
            if rule.ports.is_empty() {
                any.extend(peers_or_all());
                continue;
            }
            for port in &rule.ports {
                match port {
                    RulePort::Protocol(p) => {
                        let kp = Proto::from_model(*p, family);
                        by_port
                            .entry((kp, 0, u16::MAX))
                            .or_default()
                            .extend(peers_or_all());
                    }
                    RulePort::Range {
                        protocol,
                        start,
                        end,
                    } => {
                        let kp = Proto::from_model(*protocol, family);
                        if kp.has_ports() {
                            by_port
                                .entry((kp, *start.min(end), *start.max(end)))
                                .or_default()
                                .extend(peers_or_all());
                        }
                    }
                    RulePort::Named { protocol, set, .. } => {
                        let kp = Proto::from_model(*protocol, family);
                        let def =
                            state
                                .ip_sets
                                .get(set)
                                .ok_or_else(|| RenderError::MissingSet {
                                    policy: policy.id.to_string(),
                                    set: set.0.clone(),
                                })?;
                        if !kp.has_ports() {
                            continue;
                        }
                        for m in &def.members {
                            let IpSetMember::NetPort {
                                ip,
                                protocol: mp,
                                port,
                            } = m
                            else {
                                continue;
                            };
                            if mp != protocol || Family::of(ip) != family {
                                continue;
                            }
                            let a = to_u128(*ip);
                            match direction {
                                // Resolved on this endpoint: its own port of that name.
                                Direction::Ingress if ep.ips.contains(ip) => by_port
                                    .entry((kp, *port, *port))
                                    .or_default()
                                    .extend(peers_or_all()),
                                Direction::Ingress => {}
                                // Resolved on the destination: that peer on its port.
                                Direction::Egress => {
                                    let inside = peers
                                        .as_ref()
                                        .is_none_or(|ps| ps.iter().any(|s| s.0 <= a && a <= s.1));
                                    if inside {
                                        by_port.entry((kp, *port, *port)).or_default().push((a, a));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok((any, by_port))
}

/// The address ranges of a rule's peers in `family` (empty: none of this family).
fn peer_spans(
    state: &DesiredState,
    policy: &ActivePolicy,
    peers: &[RulePeer],
    family: Family,
) -> Result<Vec<Span>, RenderError> {
    let mut out = Vec::new();
    for peer in peers {
        match peer {
            RulePeer::Set(id) => {
                let set = state
                    .ip_sets
                    .get(id)
                    .ok_or_else(|| RenderError::MissingSet {
                        policy: policy.id.to_string(),
                        set: id.0.clone(),
                    })?;
                for m in &set.members {
                    if let IpSetMember::Net(n) = m {
                        if Family::of_net(n) == family {
                            out.push(bounds(&n.trunc()));
                        }
                    }
                }
            }
            RulePeer::Cidr { cidr, except } => {
                if Family::of_net(cidr) != family {
                    continue;
                }
                let except: Vec<IpNet> = except
                    .iter()
                    .filter(|e| Family::of_net(e) == family)
                    .map(IpNet::trunc)
                    .collect();
                out.extend(crate::nft::difference(&[cidr.trunc()], &except, family));
            }
        }
    }
    Ok(out)
}

/// The protocol/port boxes made disjoint: per protocol, the port axis cut at every box's
/// start and end, each piece given the merged addresses of the boxes covering it, and
/// neighbouring pieces with the same addresses joined.
fn disjoint(by_port: PortBoxes, family: Family) -> Vec<SetEntry> {
    let mut protos: BTreeMap<Proto, Vec<(u16, u16, Vec<Span>)>> = BTreeMap::new();
    for ((p, a, b), spans) in by_port {
        protos.entry(p).or_default().push((a, b, spans));
    }
    let mut out = Vec::new();
    for (proto, boxes) in protos {
        let mut cuts: Vec<u32> = boxes
            .iter()
            .flat_map(|(a, b, _)| [u32::from(*a), u32::from(*b) + 1])
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        // (first port, last port, merged addresses) of the pieces some box covers.
        let mut pieces: Vec<(u32, u32, Vec<Span>)> = Vec::new();
        for w in cuts.windows(2) {
            let (x, y) = (w[0], w[1] - 1);
            let spans: Vec<Span> = boxes
                .iter()
                .filter(|(a, b, _)| u32::from(*a) <= x && y <= u32::from(*b))
                .flat_map(|(_, _, s)| s.iter().copied())
                .collect();
            let spans = merge(spans);
            if spans.is_empty() {
                continue;
            }
            match pieces.last_mut() {
                Some(last) if last.1 + 1 == x && last.2 == spans => last.1 = y,
                _ => pieces.push((x, y, spans)),
            }
        }
        for (x, y, spans) in pieces {
            let ports = PortRange {
                start: x as u16,
                end: y as u16,
            };
            for (a, b) in spans {
                out.push(SetEntry::Flat {
                    start: from_u128(a, family),
                    end: from_u128(b, family),
                    proto,
                    ports,
                });
            }
        }
    }
    out
}

/// Sorted, disjoint, with touching ranges joined.
fn merge(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_unstable();
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for (a, b) in spans {
        match out.last_mut() {
            Some(last) if a <= last.1 || a - 1 == last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// The fewest prefixes that cover exactly `a..=b` (a `/0` as its two halves, as the
/// address sets hold it).
fn span_prefixes((a, b): Span, family: Family) -> Vec<IpNet> {
    let bits: u32 = match family {
        Family::V4 => 32,
        Family::V6 => 128,
    };
    let mut out = Vec::new();
    let mut cur = a;
    loop {
        // The largest aligned block at `cur` that stays within `b`.
        let mut size_log = if cur == 0 {
            bits
        } else {
            cur.trailing_zeros().min(bits)
        };
        while size_log > 0 && block_end(cur, size_log).is_none_or(|e| e > b) {
            size_log -= 1;
        }
        let len = (bits - size_log) as u8;
        let net = IpNet::new(from_u128(cur, family), len).expect("prefix length within bits");
        out.extend(crate::build::split_zero(&net));
        match block_end(cur, size_log) {
            Some(e) if e < b => cur = e + 1,
            _ => return out,
        }
    }
}

/// The last address of the block of 2^`size_log` addresses starting at `start` (`None` when
/// it does not fit in a u128).
fn block_end(start: u128, size_log: u32) -> Option<u128> {
    if size_log >= 128 {
        return (start == 0).then_some(u128::MAX);
    }
    start.checked_add((1u128 << size_log) - 1)
}

fn full_span(family: Family) -> Span {
    match family {
        Family::V4 => (0, u128::from(u32::MAX)),
        Family::V6 => (0, u128::MAX),
    }
}

fn bounds(n: &IpNet) -> Span {
    (to_u128(n.network()), to_u128(n.broadcast()))
}

fn to_u128(ip: std::net::IpAddr) -> u128 {
    match ip {
        std::net::IpAddr::V4(a) => u128::from(u32::from(a)),
        std::net::IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(v: u128, family: Family) -> std::net::IpAddr {
    match family {
        Family::V4 => std::net::IpAddr::V4(std::net::Ipv4Addr::from(v as u32)),
        Family::V6 => std::net::IpAddr::V6(std::net::Ipv6Addr::from(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> u128 {
        to_u128(s.parse().unwrap())
    }

    #[test]
    fn ranges_become_exact_prefixes() {
        let p = span_prefixes((ip("10.0.0.1"), ip("10.0.0.6")), Family::V4);
        let text: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
        );
        let all = span_prefixes(full_span(Family::V4), Family::V4);
        assert_eq!(all.len(), 2);
        let all6 = span_prefixes(full_span(Family::V6), Family::V6);
        assert_eq!(all6.len(), 2);
    }

    #[test]
    fn overlapping_boxes_become_disjoint_pieces() {
        let mut b: PortBoxes = BTreeMap::new();
        b.insert((Proto::Tcp, 80, 80), vec![(ip("10.0.0.1"), ip("10.0.0.1"))]);
        b.insert((Proto::Tcp, 70, 90), vec![(ip("10.0.0.2"), ip("10.0.0.2"))]);
        b.insert(
            (Proto::Tcp, 0, 65535),
            vec![(ip("10.9.0.0"), ip("10.9.0.255"))],
        );
        let e = disjoint(b, Family::V4);
        // 0-69: 10.9/24; 70-79: 10.0.0.2 + 10.9/24; 80: 10.0.0.1-2 + 10.9/24; 81-90 as 70-79;
        // 91-65535: 10.9/24.
        let text: Vec<String> = e
            .iter()
            .map(|x| match x {
                SetEntry::Flat {
                    start, end, ports, ..
                } => format!("{start}-{end}:{}", ports.text("-")),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            text,
            [
                "10.9.0.0-10.9.0.255:0-69",
                "10.0.0.2-10.0.0.2:70-79",
                "10.9.0.0-10.9.0.255:70-79",
                "10.0.0.1-10.0.0.2:80",
                "10.9.0.0-10.9.0.255:80",
                "10.0.0.2-10.0.0.2:81-90",
                "10.9.0.0-10.9.0.255:81-90",
                "10.9.0.0-10.9.0.255:91-65535",
            ]
        );
    }
}
