//! An interpreter of the IR for one packet, so the rendered rules can be checked against the
//! engine without root: chains, jumps, gotos, returns, marks, set membership (the most
//! specific entry decides, `nomatch` included) and conntrack state. It starts at the entry
//! chain (`pal-FORWARD`, where the kernel's FORWARD jumps) and reports the verdict and the
//! rules that matched on the way. Rules of the other address family are skipped, as their
//! backends do (iptables: other table; nftables: the family-specific match fails).

use std::net::IpAddr;

use palisade_model::Protocol;

use crate::ir::{
    Action, CtState, Dir, DispatchKey, Family, IfaceDir, Match, Proto, Rule, Ruleset, SetEntry,
};
use crate::names;

/// The packet: addresses, protocol, destination port (for ICMP: the message type, 0 for an
/// echo test), interfaces, conntrack state and the mark it arrives with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: Protocol,
    pub dst_port: u16,
    pub in_iface: String,
    pub out_iface: String,
    pub ct: CtState,
    pub mark: u32,
    /// The bridge port the packet came in through, when `in_iface` is a bridge.
    pub in_port: Option<String>,
    /// The node's own addresses (its network namespace's local addresses), which
    /// [`Match::LocalAddr`] tests: set them for a packet from or to the node itself.
    pub local: Vec<IpAddr>,
}

impl Packet {
    /// A new connection's first packet.
    pub fn new(
        src: IpAddr,
        dst: IpAddr,
        protocol: Protocol,
        dst_port: u16,
        in_iface: &str,
        out_iface: &str,
    ) -> Packet {
        Packet {
            src,
            dst,
            protocol,
            dst_port,
            in_iface: in_iface.into(),
            out_iface: out_iface.into(),
            ct: CtState::New,
            mark: 0,
            in_port: None,
            local: Vec::new(),
        }
    }

    fn family(&self) -> Family {
        Family::of(&self.src)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    /// Fell off the entry chain: the kernel chain goes on (our rules left the packet alone).
    NoVerdict,
}

/// One rule that matched: chain, position, comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub chain: String,
    pub index: usize,
    pub comment: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub path: Vec<Step>,
    /// NFLOG prefixes logged on the way.
    pub logs: Vec<String>,
    pub mark: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpError {
    #[error("chain {0:?} does not exist")]
    NoChain(String),
    #[error("set {0:?} does not exist")]
    NoSet(String),
    #[error("more than {0} nested jumps (a loop?)")]
    TooDeep(usize),
}

const MAX_DEPTH: usize = 64;

/// Evaluates `packet` from the entry chain.
pub fn evaluate(rs: &Ruleset, packet: &Packet) -> Result<Outcome, InterpError> {
    let mut st = State {
        rs,
        p: packet,
        mark: packet.mark,
        path: Vec::new(),
        logs: Vec::new(),
    };
    let verdict = match st.run(names::FORWARD_CHAIN, 0)? {
        Flow::Verdict(v) => v,
        Flow::Return => Verdict::NoVerdict,
    };
    Ok(Outcome {
        verdict,
        path: st.path,
        logs: st.logs,
        mark: st.mark,
    })
}

enum Flow {
    Verdict(Verdict),
    Return,
}

struct State<'a> {
    rs: &'a Ruleset,
    p: &'a Packet,
    mark: u32,
    path: Vec<Step>,
    logs: Vec<String>,
}

impl State<'_> {
    fn run(&mut self, chain: &str, depth: usize) -> Result<Flow, InterpError> {
        if depth > MAX_DEPTH {
            return Err(InterpError::TooDeep(MAX_DEPTH));
        }
        let rs = self.rs;
        let c = rs
            .chain(chain)
            .ok_or_else(|| InterpError::NoChain(chain.to_string()))?;
        let family = self.p.family();
        for (index, rule) in c.rules.iter().enumerate() {
            if !rule.applies_to(family) || !self.matches(rule)? {
                continue;
            }
            self.path.push(Step {
                chain: c.name.clone(),
                index,
                comment: rule.comment.clone(),
            });
            match &rule.action {
                Action::Accept => return Ok(Flow::Verdict(Verdict::Accept)),
                Action::Drop => return Ok(Flow::Verdict(Verdict::Drop)),
                Action::Return => return Ok(Flow::Return),
                Action::Jump(target) => {
                    if let Flow::Verdict(v) = self.run(target, depth + 1)? {
                        return Ok(Flow::Verdict(v));
                    }
                }
                Action::Goto(target) => return self.run(target, depth + 1),
                Action::SetMark(b) => self.mark |= b,
                Action::ClearMark(b) => self.mark &= !b,
                Action::Log { prefix, .. } => self.logs.push(prefix.clone()),
                Action::Dispatch {
                    dir, key, targets, ..
                } => {
                    let addr;
                    let wanted: &str = match (key, dir) {
                        (DispatchKey::Iface, IfaceDir::In) => &self.p.in_iface,
                        (DispatchKey::Iface, IfaceDir::Out) => &self.p.out_iface,
                        (DispatchKey::Addr(_), d) => {
                            addr = match d {
                                IfaceDir::In => self.p.src,
                                IfaceDir::Out => self.p.dst,
                            }
                            .to_string();
                            &addr
                        }
                    };
                    if let Some((_, target)) = targets.iter().find(|(i, _)| i == wanted) {
                        if let Flow::Verdict(v) = self.run(target, depth + 1)? {
                            return Ok(Flow::Verdict(v));
                        }
                    }
                }
            }
        }
        Ok(Flow::Return)
    }

    fn matches(&self, rule: &Rule) -> Result<bool, InterpError> {
        for m in &rule.matches {
            if !self.one(m)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn proto(&self) -> Proto {
        Proto::from_model(self.p.protocol, self.p.family())
    }

    fn one(&self, m: &Match) -> Result<bool, InterpError> {
        let p = self.p;
        let addr = |d: &Dir| match d {
            Dir::Src => p.src,
            Dir::Dst => p.dst,
        };
        Ok(match m {
            Match::InIface(i) => p.in_iface == *i,
            Match::OutIface(i) => p.out_iface == *i,
            Match::Net { net, dir } => net.contains(&addr(dir)),
            Match::Protocol(x) => self.proto() == *x,
            Match::DstPorts(ranges) => {
                self.proto().has_ports()
                    && ranges
                        .iter()
                        .any(|r| (r.start..=r.end).contains(&p.dst_port))
            }
            Match::CtState(states) => states.contains(&p.ct),
            // For ICMP the packet's `dst_port` carries the message type.
            Match::Icmpv6Type(t) => self.proto() == Proto::Icmpv6 && p.dst_port == u16::from(*t),
            Match::LocalAddr(d) => p.local.contains(&addr(d)),
            Match::Mark { value, mask } => self.mark & mask == *value,
            // A rate limit only thins out logging: taken as never exceeded.
            Match::Limit { .. } => true,
            Match::Set { set, dir } => {
                let def = self
                    .rs
                    .set(&set.name)
                    .ok_or_else(|| InterpError::NoSet(set.name.clone()))?;
                if def.set.family != p.family() {
                    return Ok(false);
                }
                match set.kind {
                    crate::ir::SetKind::Net => net_member(&def.members, addr(dir)),
                    crate::ir::SetKind::NetIface => def.members.iter().any(|e| {
                        matches!(e, SetEntry::NetIface { ip, iface, port }
                            if *ip == addr(dir) && *iface == p.in_iface
                                && port.as_ref().is_none_or(|q| p.in_port.as_ref() == Some(q)))
                    }),
                    crate::ir::SetKind::Flat => {
                        let proto = self.proto();
                        let a = addr(dir);
                        def.members.iter().any(|e| {
                            matches!(e, SetEntry::Flat { start, end, proto: q, ports }
                                if *start <= a && a <= *end && *q == proto
                                    && (ports.start..=ports.end).contains(&p.dst_port))
                        })
                    }
                    crate::ir::SetKind::NetPort => {
                        let proto = self.proto();
                        def.members.iter().any(|e| {
                            matches!(e, SetEntry::NetPort { ip, proto: q, port }
                                if *ip == p.dst && *q == proto && *port == p.dst_port)
                        })
                    }
                }
            }
        })
    }
}

/// The most specific entry containing `ip` decides; a `nomatch` wins a tie.
pub fn net_member(members: &[SetEntry], ip: IpAddr) -> bool {
    let mut best: Option<(u8, bool)> = None;
    for e in members {
        let (net, yes) = match e {
            SetEntry::Net(n) => (n, true),
            SetEntry::NoMatch(n) => (n, false),
            SetEntry::NetPort { .. } | SetEntry::NetIface { .. } | SetEntry::Flat { .. } => {
                continue
            }
        };
        if !net.contains(&ip) {
            continue;
        }
        let len = net.prefix_len();
        best = match best {
            Some((l, y)) if l > len || (l == len && !y) => Some((l, y)),
            _ => Some((len, yes)),
        };
    }
    best.is_some_and(|(_, yes)| yes)
}
