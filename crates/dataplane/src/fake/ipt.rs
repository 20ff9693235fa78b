//! The fake kernel's filter tables: `iptables-restore [--noflush]` in (atomic per COMMIT,
//! refusing jumps to missing chains and `--match-set` on missing sets, like the kernel) and
//! `iptables-save [-c]` out.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::ipt::program::jump_targets;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeRule {
    pub spec: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeFilter {
    pub chains: BTreeMap<String, Vec<FakeRule>>,
}

pub const BUILTIN: [&str; 3] = ["INPUT", "FORWARD", "OUTPUT"];

const TARGETS: [&str; 10] = [
    "ACCEPT", "DROP", "RETURN", "REJECT", "LOG", "NFLOG", "MARK", "CONNMARK", "QUEUE", "NOTRACK",
];

fn norm(spec: &str) -> String {
    spec.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl FakeFilter {
    pub fn new() -> Self {
        let mut f = FakeFilter::default();
        for b in BUILTIN {
            f.chains.insert(b.to_string(), Vec::new());
        }
        f
    }

    /// Names of the ipsets any rule uses (`--match-set NAME`).
    pub fn sets_in_use(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for rules in self.chains.values() {
            for r in rules {
                let mut it = r.spec.split_whitespace();
                while let Some(t) = it.next() {
                    if t == "--match-set" {
                        if let Some(n) = it.next() {
                            out.insert(n.to_string());
                        }
                    }
                }
            }
        }
        out
    }

    fn check_rule(&self, spec: &str, sets: &BTreeSet<String>) -> Result<(), String> {
        for t in jump_targets(spec) {
            if !TARGETS.contains(&t) && !self.chains.contains_key(t) {
                return Err(format!(
                    "Couldn't load target `{t}':No such file or directory"
                ));
            }
        }
        let mut it = spec.split_whitespace();
        while let Some(t) = it.next() {
            if t == "--match-set" {
                let n = it.next().unwrap_or("");
                if !sets.contains(n) {
                    return Err(format!("Set {n} doesn't exist."));
                }
            }
        }
        Ok(())
    }

    /// Applies restore input; the table changes only if every line up to COMMIT succeeds.
    pub fn restore(
        &mut self,
        text: &str,
        noflush: bool,
        sets: &BTreeSet<String>,
    ) -> Result<(), String> {
        let mut work: Option<FakeFilter> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let fail = |m: String| format!("iptables-restore: line {} failed: {m}", i + 1);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(t) = line.strip_prefix('*') {
                if t != "filter" {
                    return Err(fail(format!("table {t} not supported by the fake")));
                }
                let mut w = self.clone();
                if !noflush {
                    w.chains.retain(|n, _| BUILTIN.contains(&n.as_str()));
                    for r in w.chains.values_mut() {
                        r.clear();
                    }
                }
                work = Some(w);
                continue;
            }
            let Some(w) = work.as_mut() else {
                return Err(fail("no table selected".into()));
            };
            if line == "COMMIT" {
                if let Some(w) = work.take() {
                    *self = w;
                }
                continue;
            }
            if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap_or("");
                if !BUILTIN.contains(&name) {
                    w.chains.insert(name.to_string(), Vec::new());
                }
                continue;
            }
            let (op, rest) = line.split_once(' ').unwrap_or((line, ""));
            let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
            let spec = norm(spec);
            if !w.chains.contains_key(chain) && op != "-N" {
                return Err(fail(format!("chain {chain} does not exist")));
            }
            match op {
                "-N" => {
                    w.chains.entry(chain.to_string()).or_default();
                }
                "-A" | "-I" => {
                    let (pos, spec) = if op == "-I" {
                        match spec.split_once(' ') {
                            Some((n, s)) if n.parse::<usize>().is_ok() => {
                                (n.parse::<usize>().unwrap_or(1), s.to_string())
                            }
                            _ => (1, spec.clone()),
                        }
                    } else {
                        (usize::MAX, spec.clone())
                    };
                    w.check_rule(&spec, sets).map_err(fail)?;
                    let rules = w.chains.entry(chain.to_string()).or_default();
                    let rule = FakeRule {
                        spec,
                        packets: 0,
                        bytes: 0,
                    };
                    if pos == usize::MAX {
                        rules.push(rule);
                    } else if pos >= 1 && pos <= rules.len() + 1 {
                        rules.insert(pos - 1, rule);
                    } else {
                        return Err(fail("index of insertion too big".into()));
                    }
                }
                "-D" => {
                    let rules = w.chains.entry(chain.to_string()).or_default();
                    let idx = match spec.parse::<usize>() {
                        Ok(n) if n >= 1 && n <= rules.len() => Some(n - 1),
                        Ok(_) => None,
                        Err(_) => rules.iter().position(|r| r.spec == spec),
                    };
                    match idx {
                        Some(i) => {
                            rules.remove(i);
                        }
                        None => {
                            return Err(fail(
                                "Bad rule (does a matching rule exist in that chain?)".into(),
                            ))
                        }
                    }
                }
                "-F" => {
                    if let Some(r) = w.chains.get_mut(chain) {
                        r.clear();
                    }
                }
                "-X" => {
                    if BUILTIN.contains(&chain) {
                        return Err(fail("cannot delete built-in chain".into()));
                    }
                    if w.chains.get(chain).is_some_and(|r| !r.is_empty()) {
                        return Err(fail(format!("Directory not empty: {chain}")));
                    }
                    let used = w
                        .chains
                        .values()
                        .flatten()
                        .any(|r| jump_targets(&r.spec).contains(&chain));
                    if used {
                        return Err(fail(format!(
                            "Device or resource busy: {chain} is referenced"
                        )));
                    }
                    w.chains.remove(chain);
                }
                other => return Err(fail(format!("unknown command {other}"))),
            }
        }
        if work.is_some() {
            return Err("iptables-restore: COMMIT expected at line end".into());
        }
        Ok(())
    }

    pub fn save(&self, counters: bool) -> String {
        let mut out = String::from("# Generated by the fake kernel\n*filter\n");
        for b in BUILTIN {
            let _ = writeln!(out, ":{b} ACCEPT [0:0]");
        }
        for name in self
            .chains
            .keys()
            .filter(|n| !BUILTIN.contains(&n.as_str()))
        {
            let _ = writeln!(out, ":{name} - [0:0]");
        }
        let order = BUILTIN.iter().map(|s| s.to_string()).chain(
            self.chains
                .keys()
                .filter(|n| !BUILTIN.contains(&n.as_str()))
                .cloned(),
        );
        for name in order {
            for r in self.chains.get(&name).map(Vec::as_slice).unwrap_or(&[]) {
                if counters {
                    let _ = write!(out, "[{}:{}] ", r.packets, r.bytes);
                }
                let _ = writeln!(out, "-A {name} {}", r.spec);
            }
        }
        out.push_str("COMMIT\n");
        out
    }
}
