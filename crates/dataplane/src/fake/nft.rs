//! The fake kernel's `table inet palisade`: `nft -f` scripts in the statement forms the
//! backend writes (one transaction: all or nothing, refusing references to missing sets and
//! chains and deletion of objects in use, like the kernel) and `nft -j list table` out.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::nft::program::{canonical_element, jump_targets, BaseChain};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeNftSet {
    pub key_type: Vec<String>,
    pub map_to: Option<String>,
    pub flags: Vec<String>,
    pub elements: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeNftRule {
    pub body: String,
    pub comment: Option<String>,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeNftChain {
    pub base: Option<BaseChain>,
    pub rules: Vec<FakeNftRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeNftTable {
    pub sets: BTreeMap<String, FakeNftSet>,
    pub chains: BTreeMap<String, FakeNftChain>,
}

const TABLE: &str = "inet palisade";

fn set_refs(body: &str) -> Vec<&str> {
    body.split_whitespace()
        .filter_map(|t| t.strip_prefix('@'))
        .collect()
}

impl FakeNftTable {
    fn in_use_set(&self, name: &str) -> bool {
        self.chains
            .values()
            .flat_map(|c| &c.rules)
            .any(|r| set_refs(&r.body).contains(&name))
    }

    fn in_use_chain(&self, name: &str) -> bool {
        self.chains
            .values()
            .flat_map(|c| &c.rules)
            .any(|r| jump_targets(&r.body).contains(&name))
            || self
                .sets
                .values()
                .flat_map(|s| &s.elements)
                .any(|e| jump_targets(e).contains(&name))
    }
}

/// Parses `{ a, b }` into canonical elements.
fn element_list(s: &str) -> Result<Vec<String>, String> {
    let inner = s
        .trim()
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .ok_or("expected { elements }")?;
    Ok(inner
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(canonical_element)
        .collect())
}

fn split_name<'a>(rest: &'a str, what: &str) -> Result<(&'a str, &'a str), String> {
    let rest = rest
        .strip_prefix(TABLE)
        .ok_or_else(|| format!("Error: No such file or directory; {what} outside table {TABLE}"))?
        .trim_start();
    Ok(rest.split_once(' ').unwrap_or((rest, "")))
}

/// Applies one script as a transaction to `table` (which may not exist yet).
pub fn apply(table: &mut Option<FakeNftTable>, script: &str) -> Result<(), String> {
    let mut work = table.clone();
    for (i, raw) in script.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        statement(&mut work, line)
            .map_err(|e| format!("/dev/stdin:{}:1: Error: {e}\n{line}", i + 1))?;
    }
    *table = work;
    Ok(())
}

fn statement(table: &mut Option<FakeNftTable>, line: &str) -> Result<(), String> {
    if line == format!("add table {TABLE}") {
        table.get_or_insert_with(FakeNftTable::default);
        return Ok(());
    }
    if line == format!("delete table {TABLE}") {
        return match table.take() {
            Some(_) => Ok(()),
            None => Err("No such file or directory".into()),
        };
    }
    let t = table
        .as_mut()
        .ok_or("No such file or directory: table inet palisade")?;
    let (verb, rest) = line.split_once(' ').ok_or("syntax error")?;
    let (kind, rest) = rest.split_once(' ').ok_or("syntax error")?;
    match (verb, kind) {
        ("add", "set" | "map") => {
            let (name, spec) = split_name(rest, kind)?;
            let spec = spec.trim().trim_start_matches('{').trim_end_matches('}');
            let mut key_type = Vec::new();
            let mut map_to = None;
            let mut flags = Vec::new();
            for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                if let Some(ty) = part.strip_prefix("type ") {
                    let (k, v) = match ty.split_once(" : ") {
                        Some((k, v)) => (k, Some(v.trim().to_string())),
                        None => (ty, None),
                    };
                    key_type = k.split(" . ").map(|x| x.trim().to_string()).collect();
                    map_to = v;
                } else if let Some(f) = part.strip_prefix("flags ") {
                    flags = f.split(',').map(|x| x.trim().to_string()).collect();
                    flags.sort();
                } else {
                    return Err(format!("syntax error in set declaration: {part}"));
                }
            }
            let set = FakeNftSet {
                key_type,
                map_to,
                flags,
                elements: BTreeSet::new(),
            };
            match t.sets.get(name) {
                Some(old)
                    if old.key_type != set.key_type
                        || old.map_to != set.map_to
                        || old.flags != set.flags =>
                {
                    Err(format!("Could not process rule: File exists: {name}"))
                }
                Some(_) => Ok(()),
                None => {
                    t.sets.insert(name.to_string(), set);
                    Ok(())
                }
            }
        }
        ("delete", "set" | "map") => {
            let (name, _) = split_name(rest, kind)?;
            if t.in_use_set(name) {
                return Err(format!(
                    "Could not process rule: Device or resource busy: {name}"
                ));
            }
            t.sets
                .remove(name)
                .map(|_| ())
                .ok_or_else(|| format!("No such file or directory: {name}"))
        }
        ("add", "chain") => {
            let (name, spec) = split_name(rest, kind)?;
            let base = if spec.trim().is_empty() {
                None
            } else {
                let words: Vec<&str> = spec
                    .trim()
                    .trim_start_matches('{')
                    .trim_end_matches('}')
                    .split(|c: char| c.is_whitespace() || c == ';')
                    .filter(|w| !w.is_empty())
                    .collect();
                let after = |k: &str| {
                    words
                        .iter()
                        .position(|w| *w == k)
                        .and_then(|i| words.get(i + 1))
                        .copied()
                };
                let prio = after("priority").ok_or("base chain without priority")?;
                Some(BaseChain {
                    kind: after("type").ok_or("base chain without type")?.to_string(),
                    hook: after("hook").ok_or("base chain without hook")?.to_string(),
                    priority: if prio == "filter" {
                        0
                    } else {
                        prio.parse().map_err(|_| "bad priority")?
                    },
                    policy: after("policy").unwrap_or("accept").to_string(),
                })
            };
            match t.chains.get(name) {
                Some(c) if base.is_some() && c.base != base => {
                    Err(format!("Could not process rule: File exists: {name}"))
                }
                Some(_) => Ok(()),
                None => {
                    t.chains.insert(
                        name.to_string(),
                        FakeNftChain {
                            base,
                            rules: Vec::new(),
                        },
                    );
                    Ok(())
                }
            }
        }
        ("flush", "chain") => {
            let (name, _) = split_name(rest, kind)?;
            let c = t
                .chains
                .get_mut(name)
                .ok_or_else(|| format!("No such file or directory: chain {name}"))?;
            c.rules.clear();
            Ok(())
        }
        ("delete", "chain") => {
            let (name, _) = split_name(rest, kind)?;
            if t.chains.get(name).is_some_and(|c| !c.rules.is_empty()) || t.in_use_chain(name) {
                return Err(format!(
                    "Could not process rule: Device or resource busy: chain {name}"
                ));
            }
            t.chains
                .remove(name)
                .map(|_| ())
                .ok_or_else(|| format!("No such file or directory: chain {name}"))
        }
        ("add", "rule") => {
            let (chain, body) = split_name(rest, kind)?;
            let (body, comment) = match body.rsplit_once(" comment \"") {
                Some((b, c)) => (
                    b.trim().to_string(),
                    Some(c.trim_end_matches('"').to_string()),
                ),
                None => (body.trim().to_string(), None),
            };
            for s in set_refs(&body) {
                if !t.sets.contains_key(s) {
                    return Err(format!(
                        "Could not process rule: No such file or directory: set {s}"
                    ));
                }
            }
            for j in jump_targets(&body) {
                if !t.chains.contains_key(j) {
                    return Err(format!(
                        "Could not process rule: No such file or directory: chain {j}"
                    ));
                }
            }
            let c = t
                .chains
                .get_mut(chain)
                .ok_or_else(|| format!("No such file or directory: chain {chain}"))?;
            c.rules.push(FakeNftRule {
                body,
                comment,
                packets: 0,
                bytes: 0,
            });
            Ok(())
        }
        (verb @ ("add" | "delete"), "element") => {
            let (name, list) = split_name(rest, kind)?;
            let elems = element_list(list)?;
            for e in &elems {
                for j in jump_targets(e) {
                    if !t.chains.contains_key(j) {
                        return Err(format!(
                            "Could not process rule: No such file or directory: chain {j}"
                        ));
                    }
                }
            }
            let set = t
                .sets
                .get_mut(name)
                .ok_or_else(|| format!("No such file or directory: set {name}"))?;
            for e in elems {
                if verb == "add" {
                    set.elements.insert(e);
                } else if !set.elements.remove(&e) {
                    return Err(format!(
                        "Could not process rule: No such file or directory: element {e}"
                    ));
                }
            }
            Ok(())
        }
        _ => Err(format!("syntax error, unexpected {verb} {kind}")),
    }
}

fn atom_json(a: &str) -> Value {
    if let Ok(n) = a.parse::<u64>() {
        return json!(n);
    }
    if let Some((addr, len)) = a.split_once('/') {
        if let Ok(len) = len.parse::<u8>() {
            return json!({"prefix": {"addr": addr, "len": len}});
        }
    }
    if let Some((x, y)) = a.split_once('-') {
        if x.parse::<std::net::IpAddr>().is_ok() {
            return json!({"range": [x, y]});
        }
    }
    json!(a.trim_matches('"'))
}

fn element_json(e: &str) -> Value {
    let (key, value) = match e.split_once(" : ") {
        Some((k, v)) => (k, Some(v)),
        None => (e, None),
    };
    let parts: Vec<&str> = key.split(" . ").collect();
    let k = if parts.len() > 1 {
        json!({"concat": parts.iter().map(|p| atom_json(p)).collect::<Vec<_>>()})
    } else {
        atom_json(key)
    };
    match value {
        Some(v) => {
            let mut w = v.split_whitespace();
            let verdict = w.next().unwrap_or("");
            let target = match w.next() {
                Some(t) => json!({ verdict: {"target": t} }),
                None => json!({ verdict: null }),
            };
            json!([k, target])
        }
        None => k,
    }
}

/// `nft -j list table inet palisade`, in the shape nft 1.0.6 prints.
pub fn list_json(t: &FakeNftTable) -> String {
    let mut items = vec![
        json!({"metainfo": {"version": "fake", "json_schema_version": 1}}),
        json!({"table": {"family": "inet", "name": "palisade", "handle": 1}}),
    ];
    let mut handle = 2;
    for (name, s) in &t.sets {
        let ty = if s.key_type.len() == 1 {
            json!(s.key_type[0])
        } else {
            json!(s.key_type)
        };
        let mut o = json!({"family": "inet", "name": name, "table": "palisade", "type": ty, "handle": handle});
        handle += 1;
        if !s.flags.is_empty() {
            o["flags"] = json!(s.flags);
        }
        if let Some(m) = &s.map_to {
            o["map"] = json!(m);
        }
        if !s.elements.is_empty() {
            o["elem"] = Value::Array(s.elements.iter().map(|e| element_json(e)).collect());
        }
        let kind = if s.map_to.is_some() { "map" } else { "set" };
        items.push(json!({ kind: o }));
    }
    for (name, c) in &t.chains {
        let mut o = json!({"family": "inet", "table": "palisade", "name": name, "handle": handle});
        handle += 1;
        if let Some(b) = &c.base {
            o["type"] = json!(b.kind);
            o["hook"] = json!(b.hook);
            o["prio"] = json!(b.priority);
            o["policy"] = json!(b.policy);
        }
        items.push(json!({"chain": o}));
    }
    for (name, c) in &t.chains {
        for r in &c.rules {
            let mut expr = vec![json!({"fake": r.body})];
            if r.body.split_whitespace().any(|w| w == "counter") {
                expr.push(json!({"counter": {"packets": r.packets, "bytes": r.bytes}}));
            }
            let mut o = json!({"family": "inet", "table": "palisade", "chain": name, "handle": handle, "expr": expr});
            handle += 1;
            if let Some(cm) = &r.comment {
                o["comment"] = json!(cm);
            }
            items.push(json!({"rule": o}));
        }
    }
    json!({"nftables": items}).to_string()
}
