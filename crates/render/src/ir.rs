//! The typed rule IR: what both backends render from and what [`crate::interp`] evaluates.
//! No strings of iptables arguments here: matches and actions are enums, and backend syntax
//! and limits are the renderers' business.
//!
//! One [`Ruleset`] covers both address families. A rule whose matches name one family (a
//! `pal4-` set, an IPv4 CIDR, ICMP) only ever matches packets of that family; the iptables
//! renderer therefore writes it only into that family's table, the nftables renderer writes it
//! into the one `inet` table where the match itself restricts the family, and the interpreter
//! skips it for packets of the other family.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv6() {
            Family::V6
        } else {
            Family::V4
        }
    }

    pub fn of_net(net: &IpNet) -> Family {
        Family::of(&net.addr())
    }
}

/// Transport protocol as the kernel sees it (ICMP differs by family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Icmpv6,
}

impl Proto {
    /// The kernel protocol for a model protocol in a family.
    pub fn from_model(p: palisade_model::Protocol, family: Family) -> Proto {
        use palisade_model::Protocol as P;
        match (p, family) {
            (P::Tcp, _) => Proto::Tcp,
            (P::Udp, _) => Proto::Udp,
            (P::Sctp, _) => Proto::Sctp,
            (P::Icmp, Family::V4) => Proto::Icmp,
            (P::Icmp, Family::V6) => Proto::Icmpv6,
        }
    }

    /// The family a protocol restricts a rule to, if any.
    pub fn family(self) -> Option<Family> {
        match self {
            Proto::Icmp => Some(Family::V4),
            Proto::Icmpv6 => Some(Family::V6),
            _ => None,
        }
    }

    /// The IP protocol number (`meta l4proto`).
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
            Proto::Icmp => 1,
            Proto::Icmpv6 => 58,
        }
    }

    pub fn has_ports(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Udp | Proto::Sctp)
    }
}

/// An inclusive destination port range (`start == end` for one port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    /// `80`, or `start<sep>end` for a range (`:` in iptables, `-` in nftables).
    pub fn text(&self, sep: &str) -> String {
        if self.start == self.end {
            self.start.to_string()
        } else {
            format!("{}{sep}{}", self.start, self.end)
        }
    }

    /// Slots the range takes in an iptables multiport match (a range counts 2).
    pub fn slots(&self) -> usize {
        if self.start == self.end {
            1
        } else {
            2
        }
    }
}

/// Which address of the packet a match looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Dir {
    Src,
    Dst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum SetKind {
    /// Addresses and prefixes (ipset `hash:net`, nft `ipv4_addr`/`ipv6_addr` interval set),
    /// with `nomatch` entries for exceptions.
    Net,
    /// Destination address, protocol and destination port (ipset `hash:ip,port`, nft
    /// concatenation `ipv4_addr . inet_proto . inet_service`).
    NetPort,
    /// Source address and the interface the packet came in on (ipset `hash:net,iface` with
    /// `src,src`; nft concatenation `ipv4_addr . ifname`). For a bridged pod the interface is
    /// the bridge: both backends see the bridge, not its port, which the agent's bridge-family
    /// table checks (the interpreter checks both).
    NetIface,
    /// The flat layout's lookup (nftables only): the peer address (`dir` of the match),
    /// protocol and destination port, each an interval (`ipv4_addr . inet_proto .
    /// inet_service`, `flags interval`). Entries are [`SetEntry::Flat`], disjoint.
    Flat,
}

/// A reference to a set from a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct SetRef {
    pub name: String,
    pub family: Family,
    pub kind: SetKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum SetEntry {
    Net(IpNet),
    /// An exception: addresses in it do not match even if a wider entry contains them (the
    /// most specific entry decides, as in ipset's `nomatch`).
    NoMatch(IpNet),
    NetPort {
        ip: IpAddr,
        proto: Proto,
        port: u16,
    },
    /// `ip` entering on `iface` (checked by [`crate::names::iface_ok`]); with `port`, on a
    /// bridge `iface` through its port `port`.
    NetIface {
        ip: IpAddr,
        iface: String,
        port: Option<String>,
    },
    /// Addresses `start..=end` with protocol `proto` on destination ports `ports` (all of
    /// them, `0-65535`, when the rule names no port).
    Flat {
        start: IpAddr,
        end: IpAddr,
        proto: Proto,
        ports: PortRange,
    },
}

/// A set with its members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetDef {
    pub set: SetRef,
    /// Sanitized, for humans only.
    pub description: String,
    pub members: Vec<SetEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum CtState {
    New,
    Established,
    Related,
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Match {
    /// Packet arrived on this interface.
    InIface(String),
    /// Packet leaves through this interface.
    OutIface(String),
    /// Membership: for [`SetKind::Net`] the `dir` address; for [`SetKind::NetPort`] the
    /// destination address, protocol and destination port (`dir` is then `Dst`); for
    /// [`SetKind::Flat`] the `dir` address, protocol and destination port.
    Set {
        set: SetRef,
        dir: Dir,
    },
    /// The `dir` address is in `net`.
    Net {
        net: IpNet,
        dir: Dir,
    },
    Protocol(Proto),
    /// Destination port in one of the ranges (needs a preceding port-carrying `Protocol`;
    /// at most 15 slots, see [`PortRange::slots`]).
    DstPorts(Vec<PortRange>),
    /// Connection tracking state is one of these.
    CtState(Vec<CtState>),
    /// ICMPv6 message type (needs a preceding `Protocol(Icmpv6)`).
    Icmpv6Type(u8),
    /// The `dir` address is local to the node (an address of the network namespace the rules
    /// run in): nftables `fib saddr type local`, iptables `-m addrtype --src-type LOCAL`.
    LocalAddr(Dir),
    /// `(mark & mask) == value`.
    Mark {
        value: u32,
        mask: u32,
    },
    /// At most `per_second` packets a second (token bucket of `burst`), per rule: iptables
    /// `-m limit`, nftables `limit rate`. Only on log rules (the interpreter takes it as
    /// always matching).
    Limit {
        per_second: u32,
        burst: u32,
    },
}

impl Match {
    /// The family this match restricts a rule to, if any.
    pub fn family(&self) -> Option<Family> {
        match self {
            Match::Set { set, .. } => Some(set.family),
            Match::Net { net, .. } => Some(Family::of_net(net)),
            Match::Protocol(p) => p.family(),
            Match::Icmpv6Type(_) => Some(Family::V6),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum IfaceDir {
    /// By input interface (`-i`, `iifname`).
    In,
    /// By output interface (`-o`, `oifname`).
    Out,
}

/// What a dispatch looks up: the interface name, or the address of one family (the target
/// keys are then addresses in their canonical text, `10.0.0.1`, `fd00::1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum DispatchKey {
    Iface,
    Addr(Family),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Action {
    Accept,
    Drop,
    Return,
    Jump(String),
    Goto(String),
    /// Set these mark bits (leave the others).
    SetMark(u32),
    /// Clear these mark bits (leave the others).
    ClearMark(u32),
    /// NFLOG to `group` with `prefix` (sanitized), then continue.
    Log {
        group: u16,
        prefix: String,
    },
    /// Jump to the chain of the packet's interface (or address), if it has one, else
    /// continue. iptables: one `-i`/`-o` (`-s`/`-d`) rule per entry; nftables: a named verdict
    /// map `map`. `dir` In is the sending side (input interface, source address), Out the
    /// receiving side.
    Dispatch {
        dir: IfaceDir,
        key: DispatchKey,
        map: String,
        targets: Vec<(String, String)>,
    },
}

/// One rule: all matches AND, then the action. `comment` is `pal:<hash>` of the chain name,
/// position and content; read-back and diffing use it instead of parsing rule text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub action: Action,
    pub comment: String,
}

impl Rule {
    /// A rule without its comment yet (see [`Chain::seal`]).
    pub fn new(matches: Vec<Match>, action: Action) -> Rule {
        Rule {
            matches,
            action,
            comment: String::new(),
        }
    }

    /// The family the rule is restricted to, if any (by a match, or an address dispatch).
    pub fn family(&self) -> Option<Family> {
        self.matches
            .iter()
            .find_map(Match::family)
            .or_else(|| self.action_family())
    }

    fn action_family(&self) -> Option<Family> {
        match &self.action {
            Action::Dispatch {
                key: DispatchKey::Addr(f),
                ..
            } => Some(*f),
            _ => None,
        }
    }

    /// Whether the rule can match packets of `family`.
    pub fn applies_to(&self, family: Family) -> bool {
        self.matches
            .iter()
            .all(|m| m.family().is_none_or(|f| f == family))
            && self.action_family().is_none_or(|f| f == family)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chain {
    pub name: String,
    pub rules: Vec<Rule>,
}

impl Chain {
    /// Gives every rule its `pal:<hash>` comment (chain name, position, content). A dispatch
    /// is hashed without its entries: nftables edits them in the map, not in the rule.
    pub fn seal(mut self) -> Chain {
        use std::fmt::Write as _;
        // One buffer for every rule's content (`{matches:?}|{action}`): sealing runs for every
        // rule the renderer builds, incremental changes included.
        let mut content = String::new();
        for (i, rule) in self.rules.iter_mut().enumerate() {
            content.clear();
            let _ = write!(content, "{:?}|", rule.matches);
            let _ = match &rule.action {
                Action::Dispatch {
                    dir,
                    key: DispatchKey::Iface,
                    map,
                    ..
                } => write!(content, "Dispatch({dir:?}, {map})"),
                Action::Dispatch { dir, key, map, .. } => {
                    write!(content, "Dispatch({dir:?}, {key:?}, {map})")
                }
                a => write!(content, "{a:?}"),
            };
            let idx = i.to_string();
            let hash = crate::names::hash_hex(&[&self.name, &idx, &content], 16);
            let mut comment = String::with_capacity(4 + hash.len());
            comment.push_str("pal:");
            comment.push_str(&hash);
            rule.comment = comment;
        }
        self
    }
}

/// A jump from a kernel chain into ours (iptables only; nftables has its own base chain).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hook {
    pub kernel_chain: String,
    pub target: String,
    pub comment: String,
}

/// Everything one node gets: sets, then chains (the entry chain first), then the hooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ruleset {
    pub families: Vec<Family>,
    pub sets: Vec<SetDef>,
    pub chains: Vec<Chain>,
    pub hooks: Vec<Hook>,
}

impl Ruleset {
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    pub fn set(&self, name: &str) -> Option<&SetDef> {
        self.sets.iter().find(|s| s.set.name == name)
    }
}
