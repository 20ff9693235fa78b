//! The fake kernel's ipsets: `ipset restore [-exist]` (line by line, stopping at the first
//! error like the real one: not atomic), `ipset list -n`, `ipset save [NAME]`, and single
//! commands for tests that simulate drift.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::ipt::program::canonical_member;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeSet {
    pub kind: String,
    pub family: String,
    pub members: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeIpsets {
    pub sets: BTreeMap<String, FakeSet>,
}

impl FakeIpsets {
    /// One command (`create`, `add`, `del`, `destroy`, `flush`, `swap`) as words.
    pub fn command(
        &mut self,
        words: &[&str],
        exist: bool,
        in_use: &BTreeSet<String>,
    ) -> Result<(), String> {
        let name = words.get(1).copied().unwrap_or("");
        match words.first().copied() {
            Some("create") => {
                let kind = words.get(2).copied().ok_or("create without type")?;
                let mut family = "inet".to_string();
                if let Some(i) = words.iter().position(|w| *w == "family") {
                    family = words.get(i + 1).copied().unwrap_or("inet").to_string();
                }
                if let Some(s) = self.sets.get(name) {
                    if exist && s.kind == kind && s.family == family {
                        return Ok(());
                    }
                    return Err(format!(
                        "Set cannot be created: set with the same name already exists: {name}"
                    ));
                }
                self.sets.insert(
                    name.to_string(),
                    FakeSet {
                        kind: kind.to_string(),
                        family,
                        members: BTreeSet::new(),
                    },
                );
                Ok(())
            }
            Some(op @ ("add" | "del")) => {
                let set = self
                    .sets
                    .get_mut(name)
                    .ok_or_else(|| format!("The set with the given name does not exist: {name}"))?;
                let member = words[2..].join(" ");
                let canon = canonical_member(&member)
                    .ok_or_else(|| format!("Syntax error: cannot parse {member}"))?;
                let v6 = canon
                    .split([',', '/', ' '])
                    .next()
                    .unwrap_or("")
                    .contains(':');
                if v6 != (set.family == "inet6") {
                    return Err(format!(
                        "Syntax error: {member} is not of family {}",
                        set.family
                    ));
                }
                let key = canon.split_whitespace().next().unwrap_or("").to_string();
                let existing = set
                    .members
                    .iter()
                    .find(|m| m.split_whitespace().next() == Some(key.as_str()))
                    .cloned();
                if op == "add" {
                    match existing {
                        Some(_) if !exist => Err(format!(
                            "Element cannot be added to the set: it's already added: {member}"
                        )),
                        Some(_) => Ok(()),
                        None => {
                            set.members.insert(canon);
                            Ok(())
                        }
                    }
                } else {
                    match existing {
                        Some(m) => {
                            set.members.remove(&m);
                            Ok(())
                        }
                        None if exist => Ok(()),
                        None => Err(format!(
                            "Element cannot be deleted from the set: it's not added: {member}"
                        )),
                    }
                }
            }
            Some("destroy") => {
                if in_use.contains(name) {
                    return Err(format!(
                        "Set cannot be destroyed: it is in use by a kernel component: {name}"
                    ));
                }
                if self.sets.remove(name).is_none() && !exist {
                    return Err(format!(
                        "The set with the given name does not exist: {name}"
                    ));
                }
                Ok(())
            }
            Some("flush") => {
                let set = self
                    .sets
                    .get_mut(name)
                    .ok_or_else(|| format!("The set with the given name does not exist: {name}"))?;
                set.members.clear();
                Ok(())
            }
            Some("swap") => {
                let other = words.get(2).copied().unwrap_or("");
                let (a, b) = match (self.sets.get(name), self.sets.get(other)) {
                    (Some(a), Some(b)) => (a.clone(), b.clone()),
                    _ => {
                        return Err(format!(
                            "The set with the given name does not exist: {name} or {other}"
                        ))
                    }
                };
                if a.kind != b.kind || a.family != b.family {
                    return Err("The sets cannot be swapped: their type does not match".into());
                }
                self.sets.insert(name.to_string(), b);
                self.sets.insert(other.to_string(), a);
                Ok(())
            }
            _ => Err(format!("unknown ipset command {:?}", words.first())),
        }
    }

    /// `ipset restore`: stops at the first failing line, keeping what came before.
    pub fn restore(
        &mut self,
        text: &str,
        exist: bool,
        in_use: &BTreeSet<String>,
    ) -> Result<(), String> {
        for (i, line) in text.lines().enumerate() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.is_empty() || words[0].starts_with('#') || words[0] == "COMMIT" {
                continue;
            }
            self.command(&words, exist, in_use)
                .map_err(|e| format!("ipset v7.17: Error in line {}: {e}", i + 1))?;
        }
        Ok(())
    }

    pub fn list_names(&self) -> String {
        self.sets.keys().map(|n| format!("{n}\n")).collect()
    }

    pub fn save(&self, name: Option<&str>) -> Result<String, String> {
        let mut out = String::new();
        for (n, s) in &self.sets {
            if name.is_some_and(|x| x != n) {
                continue;
            }
            let _ = writeln!(
                out,
                "create {n} {} family {} hashsize 1024 maxelem 65536",
                s.kind, s.family
            );
            for m in &s.members {
                let _ = writeln!(out, "add {n} {m}");
            }
        }
        if let Some(n) = name {
            if !self.sets.contains_key(n) {
                return Err(format!(
                    "ipset v7.17: The set with the given name does not exist: {n}"
                ));
            }
        }
        Ok(out)
    }
}
