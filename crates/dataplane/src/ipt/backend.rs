//! The iptables + ipset backend: reads back our ipsets (`ipset list -n`, `ipset save NAME`)
//! and our chains (`iptables-save -t filter`, `ip6tables-save`), and writes the difference as
//! one `ipset restore` (create/fill before the rules), one `iptables-restore --noflush` per
//! family (only changed chains: `:pal-x - [0:0]` flushes just that chain) and one
//! `ipset restore` (destroy after the rules stopped using the sets).
//!
//! Atomicity: each `iptables-restore` is one transaction for its table. `ipset restore` is
//! not: it stops at the first failing line. A failure there happens before any rule changed,
//! so rules keep matching the sets they were written for; the sets may hold part of the new
//! members (adds are written before deletes, so a partial write only ever admits an address
//! a moment early, never drops one still allowed), and the retry re-reads the kernel and
//! writes the rest. Sets rewritten whole (full rewrite) are filled under a scratch name and
//! `swap`ped in, so they change in one step.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::error::DataplaneError;
use crate::exec::Exec;
use crate::ipt::program::{
    jump_spec, Family, IpsetSpec, IptChains, IptablesProgram, CHAIN_PREFIX, SET_PREFIX_V4,
    SET_PREFIX_V6, TEMP_SET,
};
use crate::ipt::save::{parse_ipset_save, parse_iptables_save, SavedSet, SavedTable};
use crate::report::{ApplyReport, CounterSums, RuleCounter, RuleOrigin};
use crate::table::Backend;
use std::sync::Arc;

/// Which address families the backend programs.
#[derive(Debug, Clone)]
pub struct IptablesBackend {
    families: Vec<Family>,
}

impl IptablesBackend {
    /// IPv4 and IPv6.
    pub fn new() -> Self {
        IptablesBackend {
            families: vec![Family::V4, Family::V6],
        }
    }

    /// Only the given families (the other's chains are neither read nor written).
    pub fn with_families(families: Vec<Family>) -> Self {
        IptablesBackend { families }
    }
}

impl Default for IptablesBackend {
    fn default() -> Self {
        Self::new()
    }
}

/// Our objects as the kernel holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IptView {
    pub sets: BTreeMap<String, Arc<IpsetSpec>>,
    pub v4: FamilyView,
    pub v6: FamilyView,
}

impl IptView {
    fn family(&self, f: Family) -> &FamilyView {
        match f {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }
}

/// One family's chains of ours (their rule hashes, in order) and, for each other chain that
/// holds rules with a `pal:` comment (our jumps), those rules with their positions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FamilyView {
    pub chains: BTreeMap<String, Vec<Option<String>>>,
    pub jumps: BTreeMap<String, Vec<SavedJump>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedJump {
    pub position: usize,
    pub spec: String,
}

pub fn is_our_set(name: &str) -> bool {
    name.starts_with(SET_PREFIX_V4) || name.starts_with(SET_PREFIX_V6) || name == TEMP_SET
}

fn family_view(table: &SavedTable) -> FamilyView {
    let mut v = FamilyView::default();
    for (name, rules) in &table.chains {
        if name.starts_with(CHAIN_PREFIX) {
            v.chains
                .insert(name.clone(), rules.iter().map(|r| r.hash.clone()).collect());
        } else {
            let ours: Vec<SavedJump> = rules
                .iter()
                .enumerate()
                .filter(|(_, r)| r.hash.is_some())
                .map(|(position, r)| SavedJump {
                    position,
                    spec: r.spec.clone(),
                })
                .collect();
            if !ours.is_empty() {
                v.jumps.insert(name.clone(), ours);
            }
        }
    }
    v
}

fn save(exec: &mut Exec<'_>, family: Family, counters: bool) -> Result<SavedTable, DataplaneError> {
    let program = family.save_program();
    let args: &[&str] = if counters {
        &["-c", "-t", "filter"]
    } else {
        &["-t", "filter"]
    };
    let out = exec.run(program, args, None)?;
    parse_iptables_save(program, &out)
}

impl Backend for IptablesBackend {
    type Program = IptablesProgram;
    type View = IptView;

    fn name(&self) -> &'static str {
        "iptables"
    }

    fn validate(
        program: &IptablesProgram,
        previous: &IptablesProgram,
    ) -> Result<(), DataplaneError> {
        program.validate(previous)
    }

    fn validate_patched(program: &IptablesProgram) -> Result<(), DataplaneError> {
        program.validate_patched()
    }

    fn read(&self, exec: &mut Exec<'_>) -> Result<IptView, DataplaneError> {
        let mut view = IptView::default();
        let names = exec.run("ipset", &["list", "-n"], None)?;
        for name in names.lines().map(str::trim).filter(|n| is_our_set(n)) {
            let out = exec.run("ipset", &["save", name], None)?;
            view.sets.extend(
                parse_ipset_save("ipset save", &out)?
                    .into_iter()
                    .map(|(n, s)| (n, Arc::new(spec_of(s)))),
            );
        }
        for &f in &self.families {
            let fv = family_view(&save(exec, f, false)?);
            match f {
                Family::V4 => view.v4 = fv,
                Family::V6 => view.v6 = fv,
            }
        }
        Ok(view)
    }

    fn write(
        &self,
        exec: &mut Exec<'_>,
        program: &IptablesProgram,
        view: &IptView,
        full: bool,
        report: &mut ApplyReport,
    ) -> Result<(), DataplaneError> {
        let before = ipset_before(program, view, full, report);
        if !before.is_empty() {
            exec.run("ipset", &["restore", "-exist"], Some(&before))?;
        }
        for &f in &self.families {
            if let Some(text) = restore_text(program.chains(f), view.family(f), full, report) {
                exec.run(f.restore_program(), &["--noflush"], Some(&text))?;
            }
        }
        let after = ipset_after(program, view, report);
        if !after.is_empty() {
            exec.run("ipset", &["restore", "-exist"], Some(&after))?;
        }
        Ok(())
    }

    fn project(&self, program: &IptablesProgram) -> IptView {
        let mut view = IptView {
            sets: program.sets.clone(),
            ..IptView::default()
        };
        for &f in &self.families {
            let c = program.chains(f);
            let fv = FamilyView {
                chains: c
                    .chains
                    .iter()
                    .map(|(n, rules)| {
                        (
                            n.clone(),
                            rules.iter().map(|r| Some(r.hash.clone())).collect(),
                        )
                    })
                    .collect(),
                jumps: c
                    .hooks
                    .iter()
                    .map(|(k, t)| {
                        (
                            k.clone(),
                            vec![SavedJump {
                                position: 0,
                                spec: jump_spec(k, t),
                            }],
                        )
                    })
                    .collect(),
            };
            match f {
                Family::V4 => view.v4 = fv,
                Family::V6 => view.v6 = fv,
            }
        }
        view
    }

    fn counters(
        &self,
        exec: &mut Exec<'_>,
        program: &IptablesProgram,
    ) -> Result<Vec<RuleCounter>, DataplaneError> {
        let mut origins: BTreeMap<(Family, &str, &str), &RuleOrigin> = BTreeMap::new();
        for &f in &self.families {
            for (chain, rules) in &program.chains(f).chains {
                for r in rules {
                    if let Some(o) = &r.origin {
                        origins.insert((f, chain.as_str(), r.hash.as_str()), o);
                    }
                }
            }
        }
        let mut sums = CounterSums::default();
        for &f in &self.families {
            let table = save(exec, f, true)?;
            for (chain, rules) in &table.chains {
                for r in rules {
                    let Some(h) = &r.hash else { continue };
                    if let Some(o) = origins.get(&(f, chain.as_str(), h.as_str())) {
                        sums.add(o, r.packets, r.bytes);
                    }
                }
            }
        }
        Ok(sums.finish())
    }
}

/// A set as read back. A family other than `inet`/`inet6` shows up in the type, so that it
/// never equals a desired set and gets replaced.
fn spec_of(s: SavedSet) -> IpsetSpec {
    let (kind, family) = match s.family.as_str() {
        "inet" => (s.kind, Family::V4),
        "inet6" => (s.kind, Family::V6),
        other => (format!("{} family {other}", s.kind), Family::V4),
    };
    IpsetSpec {
        kind,
        family,
        members: s.members,
    }
}

/// The key of a member without its `nomatch` flag.
fn member_key(m: &str) -> &str {
    m.split_whitespace().next().unwrap_or(m)
}

/// Creates and fills sets (before the rules that use them change).
fn ipset_before(
    program: &IptablesProgram,
    view: &IptView,
    full: bool,
    report: &mut ApplyReport,
) -> String {
    let mut out = String::new();
    if full && view.sets.contains_key(TEMP_SET) {
        let _ = writeln!(out, "destroy {TEMP_SET}");
    }
    for (name, spec) in &program.sets {
        let want = &spec.members;
        let fam = spec.family.ipset_family();
        let current = view
            .sets
            .get(name)
            .filter(|s| s.kind == spec.kind && s.family == spec.family);
        match current {
            None => {
                if view.sets.contains_key(name) {
                    // Same name, other type or family: only tampering gets here.
                    let _ = writeln!(out, "destroy {name}");
                }
                let _ = writeln!(out, "create {name} {} family {fam}", spec.kind);
                for m in want {
                    let _ = writeln!(out, "add {name} {m}");
                }
                report.sets_created.push(name.clone());
                report.members_added += want.len();
            }
            Some(cur) if full => {
                let _ = writeln!(out, "create {TEMP_SET} {} family {fam}", spec.kind);
                for m in want {
                    let _ = writeln!(out, "add {TEMP_SET} {m}");
                }
                let _ = writeln!(out, "swap {TEMP_SET} {name}");
                let _ = writeln!(out, "destroy {TEMP_SET}");
                report.sets_updated.push(name.clone());
                report.members_added += want.difference(&cur.members).count();
                report.members_removed += cur.members.difference(want).count();
            }
            Some(cur) => {
                if Arc::ptr_eq(cur, spec) || cur.members == *want {
                    continue;
                }
                let added: Vec<&String> = want.difference(&cur.members).collect();
                let removed: Vec<&String> = cur.members.difference(want).collect();
                if added.is_empty() && removed.is_empty() {
                    continue;
                }
                let readded: BTreeSet<&str> = added.iter().map(|m| member_key(m)).collect();
                // A member whose nomatch flag changes is deleted and added again.
                for m in removed.iter().filter(|m| readded.contains(member_key(m))) {
                    let _ = writeln!(out, "del {name} {}", member_key(m));
                }
                for m in &added {
                    let _ = writeln!(out, "add {name} {m}");
                }
                for m in removed.iter().filter(|m| !readded.contains(member_key(m))) {
                    let _ = writeln!(out, "del {name} {}", member_key(m));
                }
                report.sets_updated.push(name.clone());
                report.members_added += added.len();
                report.members_removed += removed.len();
            }
        }
    }
    out
}

/// Destroys our sets the program no longer has (after the rules stopped using them).
fn ipset_after(program: &IptablesProgram, view: &IptView, report: &mut ApplyReport) -> String {
    let mut out = String::new();
    for name in view.sets.keys() {
        if !program.sets.contains_key(name) && name != TEMP_SET {
            let _ = writeln!(out, "destroy {name}");
            report.sets_deleted.push(name.clone());
        }
    }
    out
}

/// The `iptables-restore --noflush` input for one family, or `None` when nothing changed.
fn restore_text(
    chains: &IptChains,
    view: &FamilyView,
    full: bool,
    report: &mut ApplyReport,
) -> Option<String> {
    let changed: Vec<&String> = chains
        .chains
        .iter()
        .filter(|(name, rules)| {
            full || view.chains.get(*name).is_none_or(|have| {
                have.len() != rules.len()
                    || have
                        .iter()
                        .zip(rules.iter())
                        .any(|(h, r)| h.as_deref() != Some(r.hash.as_str()))
            })
        })
        .map(|(n, _)| n)
        .collect();
    let removed: Vec<&String> = view
        .chains
        .keys()
        .filter(|n| !chains.chains.contains_key(*n))
        .collect();
    // Kernel chains whose jumps must be rewritten: a wanted hook that is not exactly one
    // jump at position 1 with the right text, or leftover jumps where no hook is wanted.
    let mut jump_fixes: Vec<(&str, Vec<&str>, Option<String>)> = Vec::new();
    for (kernel, target) in &chains.hooks {
        let want = jump_spec(kernel, target);
        let have = view.jumps.get(kernel).map(Vec::as_slice).unwrap_or(&[]);
        let ok = !full
            && have.len() == 1
            && have[0].position == 0
            && crate::ipt::save::pal_comment(&have[0].spec) == crate::ipt::save::pal_comment(&want)
            && crate::ipt::program::jump_targets(&have[0].spec) == vec![target.as_str()];
        if !ok {
            jump_fixes.push((
                kernel,
                have.iter().map(|j| j.spec.as_str()).collect(),
                Some(want),
            ));
        }
    }
    for (kernel, have) in &view.jumps {
        if !chains.hooks.contains_key(kernel) {
            jump_fixes.push((kernel, have.iter().map(|j| j.spec.as_str()).collect(), None));
        }
    }
    if changed.is_empty() && removed.is_empty() && jump_fixes.is_empty() {
        return None;
    }
    let mut out = String::from("*filter\n");
    for name in changed.iter().chain(removed.iter()) {
        let _ = writeln!(out, ":{name} - [0:0]");
    }
    for name in &changed {
        for r in &chains.chains[*name] {
            let _ = writeln!(out, "-A {name} {}", r.spec);
        }
        report.chains_rewritten.push((*name).clone());
    }
    for (kernel, old, new) in &jump_fixes {
        for spec in old {
            let _ = writeln!(out, "-D {kernel} {spec}");
        }
        if let Some(spec) = new {
            let _ = writeln!(out, "-I {kernel} 1 {spec}");
        }
        report.jumps_written.push((*kernel).to_string());
    }
    for name in &removed {
        let _ = writeln!(out, "-X {name}");
        report.chains_deleted.push((*name).clone());
    }
    out.push_str("COMMIT\n");
    Some(out)
}
