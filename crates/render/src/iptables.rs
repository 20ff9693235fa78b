//! IR → `ipset restore` text and `iptables-restore --noflush` text (filter table), per
//! family. Backend limits (multiport, name lengths) were settled when the IR was built; this
//! module only spells it.

use std::fmt::Write as _;

use serde::Serialize;

use crate::ir::{
    Action, Chain, CtState, Dir, DispatchKey, Family, Hook, IfaceDir, Match, Proto, Rule, Ruleset,
    SetDef, SetEntry, SetKind, SetRef,
};
use crate::names;

/// The text for one node: ipset first, then one filter table per family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IptablesText {
    pub ipset: String,
    /// For `iptables-restore --noflush`; `None` when IPv4 is off.
    pub v4: Option<String>,
    /// For `ip6tables-restore --noflush`; `None` when IPv6 is off.
    pub v6: Option<String>,
}

/// Renders a whole ruleset. `with_hooks` adds the one `-I FORWARD` jump per family (only for a
/// fresh table: the dataplane checks for an existing jump before it inserts one).
pub fn render(rs: &Ruleset, with_hooks: bool) -> IptablesText {
    let filter = |f: Family| {
        rs.families
            .contains(&f)
            .then(|| filter_table(rs, f, with_hooks))
    };
    IptablesText {
        ipset: ipset_restore(&rs.sets),
        v4: filter(Family::V4),
        v6: filter(Family::V6),
    }
}

/// `create … -exist`, `flush`, `add` for every set.
pub fn ipset_restore(sets: &[SetDef]) -> String {
    let mut out = String::new();
    for s in sets {
        out.push_str(&create_line(&s.set));
        let _ = writeln!(out, "flush {}", s.set.name);
        for m in &s.members {
            push_member_line(&mut out, "add", &s.set.name, m);
        }
    }
    out
}

pub fn create_line(set: &SetRef) -> String {
    let ty = match set.kind {
        SetKind::Net => "hash:net",
        SetKind::NetPort => "hash:ip,port",
        SetKind::NetIface => "hash:net,iface",
        // The flat layout is built for nftables only (`RenderConfig::nft_layout`); the same
        // entries as an ipset would be a `hash:net,port`.
        SetKind::Flat => "hash:net,port",
    };
    let fam = match set.family {
        Family::V4 => "inet",
        Family::V6 => "inet6",
    };
    format!("create {} {ty} family {fam} -exist\n", set.name)
}

/// `add`/`del` line for one entry (`-exist` so a repeated change is harmless).
pub fn member_line(verb: &str, set: &str, entry: &SetEntry) -> String {
    let mut out = String::new();
    push_member_line(&mut out, verb, set, entry);
    out
}

/// [`member_line`], appended to `out` (no allocation per line: a new set writes thousands).
pub fn push_member_line(out: &mut String, verb: &str, set: &str, entry: &SetEntry) {
    let _ = match entry {
        SetEntry::Net(n) | SetEntry::NoMatch(n) => {
            let nomatch = matches!(entry, SetEntry::NoMatch(_)) && verb == "add";
            let flag = if nomatch { " nomatch" } else { "" };
            if n.prefix_len() == n.max_prefix_len() {
                writeln!(out, "{verb} {set} {}{flag} -exist", n.addr())
            } else {
                writeln!(out, "{verb} {set} {n}{flag} -exist")
            }
        }
        SetEntry::NetPort { ip, proto, port } => {
            writeln!(
                out,
                "{verb} {set} {ip},{}:{port} -exist",
                proto_name(*proto)
            )
        }
        // The routing layer sees a bridged pod's traffic come in on the bridge; its port is
        // checked one layer down, in the agent's `table bridge palisade` (an ipset
        // `physdev:` entry never matches from `-m set`, which cannot ask for the port).
        SetEntry::NetIface { ip, iface, .. } => writeln!(out, "{verb} {set} {ip},{iface} -exist"),
        SetEntry::Flat {
            start,
            end,
            proto,
            ports,
        } => writeln!(
            out,
            "{verb} {set} {start}-{end},{}:{} -exist",
            proto_name(*proto),
            ports.text("-")
        ),
    };
}

pub fn destroy_line(set: &str) -> String {
    format!("destroy {set}\n")
}

/// `*filter … COMMIT` with a declaration line and the rules of every chain.
pub fn filter_table(rs: &Ruleset, family: Family, with_hooks: bool) -> String {
    let mut out = String::from("*filter\n");
    for c in &rs.chains {
        out.push_str(&declare_line(&c.name));
    }
    for c in &rs.chains {
        out.push_str(&chain_rules(c, family));
    }
    if with_hooks {
        for h in &rs.hooks {
            out.push_str(&hook_line(h));
        }
    }
    out.push_str("COMMIT\n");
    out
}

/// `:name - [0:0]` (creates the chain, or flushes it under `--noflush`).
pub fn declare_line(chain: &str) -> String {
    format!(":{chain} - [0:0]\n")
}

pub fn hook_line(h: &Hook) -> String {
    format!(
        "-I {} 1 -m comment --comment \"{}\" -j {}\n",
        h.kernel_chain, h.comment, h.target
    )
}

/// The `-A` lines of one chain for one family.
pub fn chain_rules(chain: &Chain, family: Family) -> String {
    let mut out = String::new();
    for r in chain.rules.iter().filter(|r| r.applies_to(family)) {
        for line in rule_lines(&chain.name, r) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// One IR rule as `-A` lines (one, or one per interface for a dispatch).
pub fn rule_lines(chain: &str, rule: &Rule) -> Vec<String> {
    let matches = matches_text(rule);
    match &rule.action {
        Action::Dispatch {
            dir, key, targets, ..
        } => targets
            .iter()
            .map(|(iface, target)| {
                let flag = match (key, dir) {
                    (DispatchKey::Iface, IfaceDir::In) => "-i",
                    (DispatchKey::Iface, IfaceDir::Out) => "-o",
                    (DispatchKey::Addr(_), IfaceDir::In) => "-s",
                    (DispatchKey::Addr(_), IfaceDir::Out) => "-d",
                };
                format!(
                    "-A {chain} -m comment --comment \"{}\"{matches} {flag} {iface} -j {target}",
                    dispatch_comment(&rule.comment, iface)
                )
            })
            .collect(),
        action => vec![format!(
            "-A {chain} -m comment --comment \"{}\"{matches} {}",
            rule.comment,
            action_text(action)
        )],
    }
}

/// The comment of one interface's line of a dispatch rule.
pub fn dispatch_comment(rule_comment: &str, iface: &str) -> String {
    format!("pal:{}", names::hash_hex(&[rule_comment, iface], 16))
}

fn matches_text(rule: &Rule) -> String {
    let proto = rule.matches.iter().find_map(|m| match m {
        Match::Protocol(p) => Some(*p),
        _ => None,
    });
    let mut s = String::new();
    for m in &rule.matches {
        s.push(' ');
        match m {
            Match::InIface(i) => {
                let _ = write!(s, "-i {i}");
            }
            Match::OutIface(i) => {
                let _ = write!(s, "-o {i}");
            }
            Match::Set { set, dir } => {
                let flags = match (set.kind, dir) {
                    (SetKind::NetPort, _) => "dst,dst",
                    (SetKind::Flat, Dir::Src) => "src,dst",
                    (SetKind::Flat, Dir::Dst) => "dst,dst",
                    (SetKind::NetIface, Dir::Src) => "src,src",
                    (SetKind::NetIface, Dir::Dst) => "dst,dst",
                    (SetKind::Net, Dir::Src) => "src",
                    (SetKind::Net, Dir::Dst) => "dst",
                };
                let _ = write!(s, "-m set --match-set {} {flags}", set.name);
            }
            Match::Net { net, dir } => {
                let flag = match dir {
                    Dir::Src => "-s",
                    Dir::Dst => "-d",
                };
                let _ = write!(s, "{flag} {net}");
            }
            Match::Protocol(p) => {
                let _ = write!(s, "-p {}", proto_name(*p));
            }
            Match::DstPorts(ranges) => {
                let list: Vec<String> = ranges.iter().map(|r| r.text(":")).collect();
                match (ranges.len(), proto) {
                    (1, Some(p)) => {
                        let _ = write!(s, "-m {} --dport {}", proto_name(p), list[0]);
                    }
                    _ => {
                        let _ = write!(s, "-m multiport --dports {}", list.join(","));
                    }
                }
            }
            Match::CtState(states) => {
                let list: Vec<&str> = states
                    .iter()
                    .map(|c| match c {
                        CtState::New => "NEW",
                        CtState::Established => "ESTABLISHED",
                        CtState::Related => "RELATED",
                        CtState::Invalid => "INVALID",
                    })
                    .collect();
                let _ = write!(s, "-m conntrack --ctstate {}", list.join(","));
            }
            Match::Icmpv6Type(t) => {
                let _ = write!(s, "-m icmp6 --icmpv6-type {t}");
            }
            Match::LocalAddr(dir) => {
                let flag = match dir {
                    Dir::Src => "--src-type",
                    Dir::Dst => "--dst-type",
                };
                let _ = write!(s, "-m addrtype {flag} LOCAL");
            }
            Match::Mark { value, mask } => {
                let _ = write!(s, "-m mark --mark {value:#x}/{mask:#x}");
            }
            Match::Limit { per_second, burst } => {
                let _ = write!(s, "-m limit --limit {per_second}/sec --limit-burst {burst}");
            }
        }
    }
    s
}

fn action_text(a: &Action) -> String {
    match a {
        Action::Accept => "-j ACCEPT".into(),
        Action::Drop => "-j DROP".into(),
        Action::Return => "-j RETURN".into(),
        Action::Jump(c) => format!("-j {c}"),
        Action::Goto(c) => format!("-g {c}"),
        Action::SetMark(b) => format!("-j MARK --set-xmark {b:#x}/{b:#x}"),
        Action::ClearMark(b) => format!("-j MARK --set-xmark 0x0/{b:#x}"),
        Action::Log { group, prefix } => {
            format!("-j NFLOG --nflog-group {group} --nflog-prefix \"{prefix}\"")
        }
        // Expanded by `rule_lines`.
        Action::Dispatch { .. } => String::new(),
    }
}

/// Protocol name for iptables and ipset.
pub fn proto_name(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
        Proto::Sctp => "sctp",
        Proto::Icmp => "icmp",
        Proto::Icmpv6 => "ipv6-icmp",
    }
}
