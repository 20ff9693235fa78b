//! Parsing what `iptables-save -c -t filter` and `ipset save NAME` print, keeping only what
//! identifies our objects: chain names, `pal:` hashes, counters, set members.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::DataplaneError;
use crate::ipt::program::canonical_member;

/// One rule as `iptables-save` printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRule {
    /// The `pal:` hash of its comment, if it has one.
    pub hash: Option<String>,
    /// Everything after `-A <chain>`.
    pub spec: String,
    pub packets: u64,
    pub bytes: u64,
}

/// The filter table: every chain (kernel and user) with its rules, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedTable {
    pub chains: BTreeMap<String, Vec<SavedRule>>,
}

/// Parses the `*filter` section of `iptables-save` output (with or without `-c`).
pub fn parse_iptables_save(command: &str, text: &str) -> Result<SavedTable, DataplaneError> {
    let mut table = SavedTable::default();
    let mut in_filter = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let err = |reason: &str| DataplaneError::Parse {
            command: command.to_string(),
            line_no: i + 1,
            line: line.to_string(),
            reason: reason.to_string(),
        };
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            in_filter = name == "filter";
            continue;
        }
        if !in_filter || line == "COMMIT" {
            continue;
        }
        if let Some(decl) = line.strip_prefix(':') {
            let name = decl
                .split_whitespace()
                .next()
                .ok_or_else(|| err("chain declaration without a name"))?;
            table.chains.entry(name.to_string()).or_default();
            continue;
        }
        let (packets, bytes, rest) = if let Some(after) = line.strip_prefix('[') {
            let (counts, rest) = after
                .split_once(']')
                .ok_or_else(|| err("unclosed counter"))?;
            let (p, b) = counts
                .split_once(':')
                .ok_or_else(|| err("counter without ':'"))?;
            let p = p.parse().map_err(|_| err("bad packet count"))?;
            let b = b.parse().map_err(|_| err("bad byte count"))?;
            (p, b, rest.trim_start())
        } else {
            (0, 0, line)
        };
        let Some(rest) = rest.strip_prefix("-A ") else {
            return Err(err("expected -A"));
        };
        let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
        table
            .chains
            .entry(chain.to_string())
            .or_default()
            .push(SavedRule {
                hash: pal_comment(spec).map(str::to_string),
                spec: spec.to_string(),
                packets,
                bytes,
            });
    }
    Ok(table)
}

/// The hash in the first `--comment "pal:<hash>"` (quoted or not) of a rule specification.
pub fn pal_comment(spec: &str) -> Option<&str> {
    let mut rest = spec;
    while let Some(pos) = rest.find("--comment ") {
        let after = &rest[pos + "--comment ".len()..];
        let value = if let Some(q) = after.strip_prefix('"') {
            q.split('"').next().unwrap_or("")
        } else {
            after.split_whitespace().next().unwrap_or("")
        };
        if let Some(h) = value.strip_prefix("pal:") {
            return Some(h);
        }
        rest = after;
    }
    None
}

/// One ipset as `ipset save NAME` printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedSet {
    pub kind: String,
    /// `inet` or `inet6`.
    pub family: String,
    pub members: BTreeSet<String>,
}

/// Parses `ipset save` output (one or several sets).
pub fn parse_ipset_save(
    command: &str,
    text: &str,
) -> Result<BTreeMap<String, SavedSet>, DataplaneError> {
    let mut sets: BTreeMap<String, SavedSet> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let err = |reason: &str| DataplaneError::Parse {
            command: command.to_string(),
            line_no: i + 1,
            line: line.to_string(),
            reason: reason.to_string(),
        };
        let mut words = line.split_whitespace();
        match words.next() {
            None => continue,
            Some("create") => {
                let name = words.next().ok_or_else(|| err("create without a name"))?;
                let kind = words.next().ok_or_else(|| err("create without a type"))?;
                let mut family = "inet".to_string();
                while let Some(w) = words.next() {
                    if w == "family" {
                        family = words.next().unwrap_or("inet").to_string();
                    }
                }
                sets.insert(
                    name.to_string(),
                    SavedSet {
                        kind: kind.to_string(),
                        family,
                        members: BTreeSet::new(),
                    },
                );
            }
            Some("add") => {
                let name = words.next().ok_or_else(|| err("add without a set"))?;
                let member: Vec<&str> = words.collect();
                let member = member.join(" ");
                let canon = canonical_member(&member).unwrap_or(member);
                sets.get_mut(name)
                    .ok_or_else(|| err("add before create"))?
                    .members
                    .insert(canon);
            }
            Some(_) => return Err(err("expected create or add")),
        }
    }
    Ok(sets)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = "# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [3:180]
:OUTPUT ACCEPT [0:0]
:pal-FORWARD - [0:0]
[5:300] -A FORWARD -m comment --comment \"pal:jmp\" -j pal-FORWARD
[0:0] -A FORWARD -s 192.0.2.1/32 -j DROP
[1:60] -A pal-FORWARD -p tcp -m comment --comment pal:zz -m tcp --dport 80 -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
-A PREROUTING -m comment --comment \"pal:notfilter\" -j ACCEPT
COMMIT
";

    #[test]
    fn reads_chains_hashes_and_counters() {
        let t = parse_iptables_save("iptables-save", SAVE).unwrap();
        assert_eq!(t.chains.len(), 4);
        let fwd = &t.chains["FORWARD"];
        assert_eq!(fwd[0].hash.as_deref(), Some("jmp"));
        assert_eq!((fwd[0].packets, fwd[0].bytes), (5, 300));
        assert_eq!(fwd[1].hash, None);
        assert_eq!(t.chains["pal-FORWARD"][0].hash.as_deref(), Some("zz"));
        assert!(!t.chains.contains_key("PREROUTING"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_iptables_save("x", "*filter\n[1:x] -A FORWARD\n").is_err());
        assert!(parse_iptables_save("x", "*filter\n-Z\n").is_err());
    }

    #[test]
    fn reads_ipset_save() {
        let s = parse_ipset_save(
            "ipset save",
            "create pal4-a hash:net family inet hashsize 1024 maxelem 65536\nadd pal4-a 10.0.0.1\nadd pal4-a 10.1.2.0/24 nomatch\n",
        )
        .unwrap();
        let a = &s["pal4-a"];
        assert_eq!(a.kind, "hash:net");
        assert_eq!(a.family, "inet");
        assert!(a.members.contains("10.1.2.0/24 nomatch"));
        assert!(parse_ipset_save("x", "add pal4-b 1.2.3.4\n").is_err());
    }
}
