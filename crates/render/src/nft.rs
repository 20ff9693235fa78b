//! IR → one `nft -f` script for `table inet palisade`: named sets, two verdict maps (input and
//! output interface → endpoint chain), a base chain at the forward hook, and the same chains
//! and rules the iptables backend writes. The script starts with `add table` + `delete table`
//! + `add table`, so applying it twice gives the same kernel state, in one transaction.
//!
//! Rules reference sets, never members, so the rule count does not grow with remote pods.
//! Both backends render the same IR, which [`crate::interp`] evaluates; there is no separate
//! interpreter for this text.

use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::ir::{
    Action, Chain, CtState, Dir, DispatchKey, Family, IfaceDir, Match, Proto, Rule, Ruleset,
    SetDef, SetEntry, SetKind, SetRef,
};
use crate::names::{self, NFT_TABLE};

fn t() -> String {
    format!("inet {NFT_TABLE}")
}

/// The full script.
pub fn render(rs: &Ruleset) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "add table {}", t());
    let _ = writeln!(out, "delete table {}", t());
    let _ = writeln!(out, "add table {}", t());
    for s in &rs.sets {
        out.push_str(&add_set_line(&s.set, &s.description));
        out.push_str(&elements_line("add", &s.set.name, &set_elements(s)));
    }
    for (map, key) in dispatch_maps(rs) {
        out.push_str(&add_map_line(&map, key));
    }
    let chains: Vec<Chain> = rs.chains.iter().flat_map(with_local_copies).collect();
    for c in &chains {
        out.push_str(&add_chain_line(&c.name));
    }
    for c in &chains {
        out.push_str(&chain_rules(c));
    }
    for c in &rs.chains {
        for r in &c.rules {
            if let Action::Dispatch {
                map, targets, key, ..
            } = &r.action
            {
                let elems: Vec<String> = targets
                    .iter()
                    .map(|(i, c)| map_element(*key, i, c))
                    .collect();
                out.push_str(&elements_line("add", map, &elems));
            }
        }
    }
    out
}

fn dispatch_maps(rs: &Ruleset) -> Vec<(String, DispatchKey)> {
    rs.chains
        .iter()
        .flat_map(|c| c.rules.iter())
        .filter_map(|r| match &r.action {
            Action::Dispatch { map, key, .. } => Some((map.clone(), *key)),
            _ => None,
        })
        .collect()
}

pub fn add_set_line(set: &SetRef, description: &str) -> String {
    let addr = match set.family {
        Family::V4 => "ipv4_addr",
        Family::V6 => "ipv6_addr",
    };
    let body = match set.kind {
        SetKind::Net => format!("type {addr} ; flags interval ;"),
        SetKind::NetPort => format!("type {addr} . inet_proto . inet_service ;"),
        SetKind::NetIface => format!("type {addr} . ifname ;"),
        SetKind::Flat => format!("type {addr} . inet_proto . inet_service ; flags interval ;"),
    };
    let comment = names::sanitize(description, 100);
    format!(
        "add set {} {} {{ {body} comment \"{comment}\" ; }}\n",
        t(),
        set.name
    )
}

/// The nft type of a dispatch map's keys.
pub fn map_key_type(key: DispatchKey) -> &'static str {
    match key {
        DispatchKey::Iface => "ifname",
        DispatchKey::Addr(Family::V4) => "ipv4_addr",
        DispatchKey::Addr(Family::V6) => "ipv6_addr",
    }
}

pub fn add_map_line(map: &str, key: DispatchKey) -> String {
    format!(
        "add map {} {map} {{ type {} : verdict ; }}\n",
        t(),
        map_key_type(key)
    )
}

pub fn add_chain_line(chain: &str) -> String {
    match base_hook(chain) {
        Some(hook) => format!(
            "add chain {} {chain} {{ type filter hook {hook} priority filter ; policy accept ; }}\n",
            t()
        ),
        None => format!("add chain {} {chain}\n", t()),
    }
}

/// The hook of a base chain of ours: `pal-FORWARD` and its local copies.
pub fn base_hook(chain: &str) -> Option<&'static str> {
    if chain == names::FORWARD_CHAIN {
        return Some("forward");
    }
    names::LOCAL_HOOKS
        .iter()
        .find(|(_, name, _)| *name == chain)
        .map(|(_, _, hook)| *hook)
}

/// `pal-FORWARD` and, for it, its copies hooked at input and output (see
/// [`names::LOCAL_HOOKS`]); any other chain alone.
pub fn with_local_copies(chain: &Chain) -> Vec<Chain> {
    let mut out = vec![chain.clone()];
    if chain.name == names::FORWARD_CHAIN {
        for (_, name, _) in names::LOCAL_HOOKS {
            out.push(
                Chain {
                    name: name.to_string(),
                    rules: chain.rules.clone(),
                }
                .seal(),
            );
        }
    }
    out
}

pub fn flush_chain_line(chain: &str) -> String {
    format!("flush chain {} {chain}\n", t())
}

pub fn delete_chain_line(chain: &str) -> String {
    format!("delete chain {} {chain}\n", t())
}

pub fn flush_set_line(set: &str) -> String {
    format!("flush set {} {set}\n", t())
}

pub fn delete_set_line(set: &str) -> String {
    format!("delete set {} {set}\n", t())
}

/// `add element …` / `delete element …`; empty when there is nothing to change.
pub fn elements_line(verb: &str, set: &str, elems: &[String]) -> String {
    if elems.is_empty() {
        return String::new();
    }
    format!("{verb} element {} {set} {{ {} }}\n", t(), elems.join(", "))
}

/// A dispatch key as an element key: an interface name quoted, an address bare.
pub fn map_key(key: DispatchKey, k: &str) -> String {
    match key {
        DispatchKey::Iface => format!("\"{k}\""),
        DispatchKey::Addr(_) => k.to_string(),
    }
}

pub fn map_element(key: DispatchKey, k: &str, chain: &str) -> String {
    format!("{} : jump {chain}", map_key(key, k))
}

/// The elements of a set as nft writes them: a set with exceptions becomes the address
/// ranges left after removing them (nft has no `nomatch`); otherwise members that another
/// member contains are left out (an interval set rejects overlaps).
pub fn set_elements(s: &SetDef) -> Vec<String> {
    let has_nomatch = s.members.iter().any(|m| matches!(m, SetEntry::NoMatch(_)));
    if has_nomatch {
        let pos: Vec<IpNet> = s
            .members
            .iter()
            .filter_map(|m| match m {
                SetEntry::Net(n) => Some(*n),
                _ => None,
            })
            .collect();
        let neg: Vec<IpNet> = s
            .members
            .iter()
            .filter_map(|m| match m {
                SetEntry::NoMatch(n) => Some(*n),
                _ => None,
            })
            .collect();
        return difference(&pos, &neg, s.set.family)
            .into_iter()
            .map(|(a, b)| range_text(a, b, s.set.family))
            .collect();
    }
    // Only prefixes shorter than a host route can contain another member (pod sets are
    // nearly all host routes, so this stays linear in practice).
    let wide: Vec<IpNet> = s
        .members
        .iter()
        .filter_map(|m| match m {
            SetEntry::Net(n) if n.prefix_len() < n.max_prefix_len() => Some(*n),
            _ => None,
        })
        .collect();
    s.members
        .iter()
        .filter(|m| match m {
            SetEntry::Net(n) => !wide.iter().any(|o| o != n && o.contains(n)),
            _ => true,
        })
        .filter_map(entry_text)
        .collect()
}

/// One entry as an element (`None` for a `nomatch`, which [`set_elements`] handles).
pub fn entry_text(e: &SetEntry) -> Option<String> {
    let mut out = String::new();
    push_entry_text(&mut out, e).then_some(out)
}

/// [`entry_text`] appended to `out`; false (and nothing written) for a `nomatch`.
fn push_entry_text(out: &mut String, e: &SetEntry) -> bool {
    let _ = match e {
        SetEntry::Net(n) if n.prefix_len() == n.max_prefix_len() => write!(out, "{}", n.addr()),
        SetEntry::Net(n) => write!(out, "{n}"),
        SetEntry::NoMatch(_) => return false,
        SetEntry::NetPort { ip, proto, port } => {
            write!(out, "{ip} . {} . {port}", proto_name(*proto))
        }
        // The inet family sees the bridge, not its port (see `crate::ir::SetKind::NetIface`).
        SetEntry::NetIface { ip, iface, .. } => write!(out, "{ip} . \"{iface}\""),
        // As nft prints it back: the address range canonical (bare, prefix or `a-b`).
        SetEntry::Flat {
            start,
            end,
            proto,
            ports,
        } => {
            let family = Family::of(start);
            let addr = range_text(to_u128(*start), to_u128(*end), family);
            let addr = match addr.split_once('-') {
                Some(_) => exact_prefix(*start, *end).unwrap_or(addr),
                None => addr,
            };
            write!(out, "{addr} . {} . {}", proto_name(*proto), ports.text("-"))
        }
    };
    true
}

/// [`elements_line`] for set entries, appended to `out` without a string per element
/// (`nomatch` entries are left out; nothing is written when no element is left).
pub fn push_elements_line<'a>(
    out: &mut String,
    verb: &str,
    set: &str,
    entries: impl IntoIterator<Item = &'a SetEntry>,
) {
    let start = out.len();
    let _ = write!(out, "{verb} element {} {set} {{ ", t());
    let head = out.len();
    for e in entries {
        let before = out.len();
        if before > head {
            out.push_str(", ");
        }
        if !push_entry_text(out, e) {
            out.truncate(before);
        }
    }
    if out.len() == head {
        out.truncate(start);
    } else {
        out.push_str(" }\n");
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(v: u128, family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(std::net::Ipv4Addr::from(v as u32)),
        Family::V6 => IpAddr::V6(std::net::Ipv6Addr::from(v)),
    }
}

fn bounds(n: &IpNet) -> (u128, u128) {
    (to_u128(n.network()), to_u128(n.broadcast()))
}

/// Inclusive ranges covered by `pos` and by none of `neg`, sorted and disjoint.
pub fn difference(pos: &[IpNet], neg: &[IpNet], _family: Family) -> Vec<(u128, u128)> {
    let mut ranges: Vec<(u128, u128)> = pos.iter().map(bounds).collect();
    ranges.sort();
    let mut merged: Vec<(u128, u128)> = Vec::new();
    for (a, b) in ranges {
        match merged.last_mut() {
            // Overlapping or adjacent (`a > last.1` implies `a >= 1`).
            Some(last) if a <= last.1 || a - 1 == last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    for cut in neg.iter().map(bounds) {
        let mut next = Vec::new();
        for (a, b) in merged {
            if cut.1 < a || cut.0 > b {
                next.push((a, b));
                continue;
            }
            if cut.0 > a {
                next.push((a, cut.0 - 1));
            }
            if cut.1 < b {
                next.push((cut.1 + 1, b));
            }
        }
        merged = next;
    }
    merged
}

/// `a-b` as a prefix when it is exactly one.
fn exact_prefix(a: IpAddr, b: IpAddr) -> Option<String> {
    let (x, y) = (to_u128(a), to_u128(b));
    let bits = match a {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let size = (y - x).checked_add(1)?;
    (size.is_power_of_two() && x % size == 0)
        .then(|| format!("{a}/{}", bits - size.trailing_zeros()))
}

fn range_text(a: u128, b: u128, family: Family) -> String {
    if a == b {
        from_u128(a, family).to_string()
    } else {
        format!("{}-{}", from_u128(a, family), from_u128(b, family))
    }
}

/// `add rule` lines of one chain.
pub fn chain_rules(chain: &Chain) -> String {
    let mut out = String::new();
    for r in &chain.rules {
        let _ = writeln!(out, "add rule {} {} {}", t(), chain.name, rule_text(r));
    }
    out
}

/// One rule's body: matches, `counter`, the verdict or statement, the comment.
pub fn rule_text(rule: &Rule) -> String {
    let mut parts: Vec<String> = rule.matches.iter().map(match_text).collect();
    parts.push("counter".into());
    parts.push(action_text(&rule.action));
    parts.push(format!("comment \"{}\"", rule.comment));
    parts.join(" ")
}

fn addr_kw(f: Family) -> &'static str {
    match f {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

fn dir_kw(d: Dir) -> &'static str {
    match d {
        Dir::Src => "saddr",
        Dir::Dst => "daddr",
    }
}

fn match_text(m: &Match) -> String {
    match m {
        Match::InIface(i) => format!("iifname \"{i}\""),
        Match::OutIface(i) => format!("oifname \"{i}\""),
        Match::Set { set, dir } => match set.kind {
            SetKind::Net => format!("{} {} @{}", addr_kw(set.family), dir_kw(*dir), set.name),
            SetKind::NetPort => format!(
                "{} daddr . meta l4proto . th dport @{}",
                addr_kw(set.family),
                set.name
            ),
            SetKind::Flat => format!(
                "{} {} . meta l4proto . th dport @{}",
                addr_kw(set.family),
                dir_kw(*dir),
                set.name
            ),
            SetKind::NetIface => match dir {
                Dir::Src => format!("{} saddr . iifname @{}", addr_kw(set.family), set.name),
                Dir::Dst => format!("{} daddr . oifname @{}", addr_kw(set.family), set.name),
            },
        },
        Match::Net { net, dir } => {
            format!("{} {} {net}", addr_kw(Family::of_net(net)), dir_kw(*dir))
        }
        Match::Protocol(p) => match p {
            Proto::Icmp => "meta nfproto ipv4 meta l4proto icmp".into(),
            Proto::Icmpv6 => "meta nfproto ipv6 meta l4proto ipv6-icmp".into(),
            p => format!("meta l4proto {}", proto_name(*p)),
        },
        Match::DstPorts(ranges) => {
            let list: Vec<String> = ranges.iter().map(|r| r.text("-")).collect();
            if list.len() == 1 {
                format!("th dport {}", list[0])
            } else {
                format!("th dport {{ {} }}", list.join(", "))
            }
        }
        Match::CtState(states) => {
            let list: Vec<&str> = states
                .iter()
                .map(|c| match c {
                    CtState::New => "new",
                    CtState::Established => "established",
                    CtState::Related => "related",
                    CtState::Invalid => "invalid",
                })
                .collect();
            format!("ct state {{ {} }}", list.join(", "))
        }
        Match::Icmpv6Type(t) => format!("icmpv6 type {t}"),
        Match::LocalAddr(dir) => format!("fib {} type local", dir_kw(*dir)),
        Match::Mark { value, mask } => format!("meta mark & {mask:#010x} == {value:#010x}"),
        Match::Limit { per_second, burst } => {
            format!("limit rate {per_second}/second burst {burst} packets")
        }
    }
}

fn action_text(a: &Action) -> String {
    match a {
        Action::Accept => "accept".into(),
        Action::Drop => "drop".into(),
        Action::Return => "return".into(),
        Action::Jump(c) => format!("jump {c}"),
        Action::Goto(c) => format!("goto {c}"),
        Action::SetMark(b) => format!("meta mark set meta mark | {b:#010x}"),
        Action::ClearMark(b) => format!("meta mark set meta mark & {:#010x}", !b),
        Action::Log { group, prefix } => format!("log prefix \"{prefix}\" group {group}"),
        Action::Dispatch { dir, key, map, .. } => match (key, dir) {
            (DispatchKey::Iface, IfaceDir::In) => format!("iifname vmap @{map}"),
            (DispatchKey::Iface, IfaceDir::Out) => format!("oifname vmap @{map}"),
            (DispatchKey::Addr(f), IfaceDir::In) => format!("{} saddr vmap @{map}", addr_kw(*f)),
            (DispatchKey::Addr(f), IfaceDir::Out) => format!("{} daddr vmap @{map}", addr_kw(*f)),
        },
    }
}

fn proto_name(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
        Proto::Sctp => "sctp",
        Proto::Icmp => "icmp",
        Proto::Icmpv6 => "ipv6-icmp",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_is_judged_at_input_and_output_too() {
        let fwd = Chain {
            name: names::FORWARD_CHAIN.into(),
            rules: vec![Rule::new(vec![], Action::Accept)],
        }
        .seal();
        let all = with_local_copies(&fwd);
        let named: Vec<(&str, Option<&str>)> = all
            .iter()
            .map(|c| (c.name.as_str(), base_hook(&c.name)))
            .collect();
        assert_eq!(
            named,
            [
                ("pal-FORWARD", Some("forward")),
                ("pal-INPUT", Some("input")),
                ("pal-OUTPUT", Some("output"))
            ]
        );
        // Same rules, each chain's own comments.
        assert_eq!(all[1].rules.len(), 1);
        assert_ne!(all[1].rules[0].comment, fwd.rules[0].comment);
        assert!(add_chain_line("pal-OUTPUT").contains("hook output priority filter"));
        let other = Chain {
            name: "pal-spoof".into(),
            rules: vec![],
        };
        assert_eq!(with_local_copies(&other).len(), 1);
        assert_eq!(base_hook("pal-spoof"), None);
        // iptables: a jump from each kernel chain.
        let kernel: Vec<String> = crate::build::hooks()
            .into_iter()
            .map(|h| format!("{}->{}", h.kernel_chain, h.target))
            .collect();
        assert_eq!(
            kernel,
            [
                "FORWARD->pal-FORWARD",
                "INPUT->pal-FORWARD",
                "OUTPUT->pal-FORWARD"
            ]
        );
    }

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn contained_members_are_left_out() {
        use crate::ir::{SetKind, SetRef};
        let def = SetDef {
            set: SetRef {
                name: "pal4-x".into(),
                family: Family::V4,
                kind: SetKind::Net,
            },
            description: String::new(),
            members: vec![
                SetEntry::Net(n("10.0.0.0/24")),
                SetEntry::Net(n("10.0.0.7/32")),
                SetEntry::Net(n("10.0.1.7/32")),
            ],
        };
        assert_eq!(set_elements(&def), vec!["10.0.0.0/24", "10.0.1.7"]);
    }

    #[test]
    fn pushed_elements_line_matches_elements_line() {
        let entries = [
            SetEntry::NoMatch(n("10.0.0.0/8")),
            SetEntry::Net(n("10.0.0.7/32")),
            SetEntry::NoMatch(n("10.1.0.0/16")),
            SetEntry::Net(n("10.2.0.0/16")),
            SetEntry::NetPort {
                ip: "fd00::1".parse().unwrap(),
                proto: Proto::Tcp,
                port: 80,
            },
            SetEntry::NoMatch(n("10.3.0.0/16")),
        ];
        for k in 0..=entries.len() {
            let texts: Vec<String> = entries[..k].iter().filter_map(entry_text).collect();
            let mut out = String::from("x\n");
            push_elements_line(&mut out, "add", "pal4-s", &entries[..k]);
            assert_eq!(
                out,
                format!("x\n{}", elements_line("add", "pal4-s", &texts))
            );
        }
        let only_nomatch = [SetEntry::NoMatch(n("10.0.0.0/8"))];
        let mut out = String::new();
        push_elements_line(&mut out, "delete", "pal4-s", &only_nomatch);
        assert!(out.is_empty());
    }

    #[test]
    fn difference_cuts_exceptions() {
        let r = difference(
            &[n("10.0.0.0/24")],
            &[n("10.0.0.16/28"), n("10.0.0.0/32")],
            Family::V4,
        );
        let text: Vec<String> = r
            .iter()
            .map(|(a, b)| range_text(*a, *b, Family::V4))
            .collect();
        assert_eq!(text, vec!["10.0.0.1-10.0.0.15", "10.0.0.32-10.0.0.255"]);
        let all = difference(
            &[n("0.0.0.0/1"), n("128.0.0.0/1")],
            &[n("10.0.0.0/8")],
            Family::V4,
        );
        assert_eq!(all, vec![(0, 0x09ff_ffff), (0x0b00_0000, 0xffff_ffff)]);
        let none = difference(&[n("10.0.0.0/8")], &[n("10.0.0.0/8")], Family::V4);
        assert!(none.is_empty());
    }
}
