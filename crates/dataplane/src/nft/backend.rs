//! The nftables backend: reads `table inet palisade` back as JSON and writes the difference.
//! Without writers, as one `nft -f` transaction (atomic: all of it or none): new sets and
//! chains first, then element deletions and additions, then changed chains flushed and
//! refilled, then removed chains and sets. With an element writer and a script writer (the
//! agent's setup), an update goes in phases (see [`crate::nft::phased`]) through libnftables
//! and netlink. A changed set type or hook, a missing table, or a full rewrite replaces the
//! whole table in one single transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use crate::error::DataplaneError;
use crate::exec::Exec;
use crate::nft::json::{parse_table, NftView, ViewChain, ViewRule};
use crate::nft::libnft::ScriptWriter;
use crate::nft::netlink::{parse_element, ElementOp, ElementWriter};
use crate::nft::phased::{phases, Phases};
use crate::nft::program::{NftChain, NftProgram, NftSet, TABLE_FAMILY, TABLE_NAME};
use crate::report::{ApplyReport, CounterSums, RuleCounter, RuleOrigin};
use crate::table::Backend;

/// The nftables backend; with an [`ElementWriter`], element-only changes skip the `nft` tool;
/// with a [`ScriptWriter`] too, every update is written in phases (see [`crate::nft::phased`])
/// and scripts run in-process.
#[derive(Clone, Default)]
pub struct NftBackend {
    elements: Option<Arc<dyn ElementWriter>>,
    scripts: Option<Arc<dyn ScriptWriter>>,
}

impl std::fmt::Debug for NftBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NftBackend")
            .field("element_writer", &self.elements.is_some())
            .field("script_writer", &self.scripts.is_some())
            .finish()
    }
}

impl NftBackend {
    /// Everything through `nft -f`.
    pub fn new() -> Self {
        NftBackend::default()
    }

    /// Element-only changes go through `writer` (see [`crate::nft::netlink`]).
    pub fn with_element_writer(writer: Arc<dyn ElementWriter>) -> Self {
        NftBackend {
            elements: Some(writer),
            scripts: None,
        }
    }

    /// Element changes through `elements`, scripts through `scripts` (see
    /// [`crate::nft::libnft`]), updates in phases (see [`crate::nft::phased`]).
    pub fn with_writers(elements: Arc<dyn ElementWriter>, scripts: Arc<dyn ScriptWriter>) -> Self {
        NftBackend {
            elements: Some(elements),
            scripts: Some(scripts),
        }
    }

    /// Runs the phases of an update, logging each as a command.
    fn write_phases(
        &self,
        exec: &mut Exec<'_>,
        elements: &dyn ElementWriter,
        scripts: &dyn ScriptWriter,
        p: &Phases,
    ) -> Result<(), DataplaneError> {
        let script = |exec: &mut Exec<'_>, phase: &str, text: &str| {
            if text.is_empty() {
                return Ok(());
            }
            let start = std::time::Instant::now();
            let result = scripts.run(text);
            log(exec, "libnftables", phase, text.to_string(), &result, start);
            result
        };
        let netlink = |exec: &mut Exec<'_>, phase: &str, ops: &[ElementOp]| {
            if ops.is_empty() {
                return Ok(());
            }
            let start = std::time::Instant::now();
            let result = elements.write(ops);
            let text = format!("{} element changes", ops.len());
            log(exec, "netlink", phase, text, &result, start);
            result
        };
        netlink(exec, "elements", &p.elements)?;
        script(exec, "structure", &p.structure)?;
        netlink(exec, "maps", &p.maps)?;
        script(exec, "remove", &p.remove)
    }
}

fn log(
    exec: &mut Exec<'_>,
    program: &str,
    phase: &str,
    stdin: String,
    result: &Result<(), DataplaneError>,
    start: std::time::Instant,
) {
    exec.log.push(crate::runner::CommandRecord {
        program: program.into(),
        args: vec![phase.into()],
        stdin: Some(stdin),
        status: if result.is_ok() { 0 } else { 1 },
        elapsed: start.elapsed(),
    });
}

/// Most element changes sent through the element writer in one batch (it must fit the
/// socket's send buffer: about 100 KiB here).
const FAST_PATH_MAX: usize = 1500;

/// The changes as element operations, when they are nothing else (no set, map or chain to
/// create, change or remove) and every element can be expressed; `None` otherwise.
fn element_only(program: &NftProgram, view: &NftView) -> Option<Vec<ElementOp>> {
    if !view.exists
        || program.sets.len() != view.sets.len()
        || program.chains.len() != view.chains.len()
    {
        return None;
    }
    for (name, c) in &program.chains {
        let v = view.chains.get(name)?;
        if v.base != c.base || !same_rules(v, c) {
            return None;
        }
    }
    let mut dels = Vec::new();
    let mut adds = Vec::new();
    for (name, s) in &program.sets {
        let v = view.sets.get(name)?;
        if !v.same_shape(s) {
            return None;
        }
        if Arc::ptr_eq(v, s) || v.elements == s.elements {
            continue;
        }
        if s.map_to.is_some() {
            return None;
        }
        let interval = s.flags.iter().any(|f| f == "interval");
        for (list, add, elems) in [
            (&mut dels, false, v.elements.difference(&s.elements)),
            (&mut adds, true, s.elements.difference(&v.elements)),
        ] {
            for e in elems {
                list.push(ElementOp {
                    set: name.clone(),
                    add,
                    key: parse_element(&s.key_type, interval, e)?,
                });
                if list.len() > FAST_PATH_MAX {
                    return None;
                }
            }
        }
    }
    dels.extend(adds);
    Some(dels)
}

pub(crate) const T: &str = "inet palisade";

fn list(exec: &mut Exec<'_>) -> Result<NftView, DataplaneError> {
    match exec.run(
        "nft",
        &["-j", "list", "table", TABLE_FAMILY, TABLE_NAME],
        None,
    ) {
        // An empty answer (the no-op runner) means no table.
        Ok(out) if out.trim().is_empty() => Ok(NftView::default()),
        Ok(out) => parse_table(&out),
        Err(DataplaneError::CommandFailed { stderr, .. })
            if stderr.contains("No such file or directory") =>
        {
            Ok(NftView::default())
        }
        Err(e) => Err(e),
    }
}

pub(crate) fn set_decl(out: &mut String, name: &str, s: &NftSet) {
    let kind = if s.map_to.is_some() { "map" } else { "set" };
    let _ = write!(
        out,
        "add {kind} {T} {name} {{ type {}",
        s.key_type.join(" . ")
    );
    if let Some(m) = &s.map_to {
        let _ = write!(out, " : {m}");
    }
    out.push(';');
    if !s.flags.is_empty() {
        let _ = write!(out, " flags {};", s.flags.join(","));
    }
    out.push_str(" }\n");
}

pub(crate) fn chain_decl(out: &mut String, name: &str, c: &NftChain) {
    match &c.base {
        Some(b) => {
            let _ = writeln!(
                out,
                "add chain {T} {name} {{ type {} hook {} priority {}; policy {}; }}",
                b.kind, b.hook, b.priority, b.policy
            );
        }
        None => {
            let _ = writeln!(out, "add chain {T} {name}");
        }
    }
}

fn elements(out: &mut String, verb: &str, name: &str, elems: &[&String]) {
    for chunk in elems.chunks(1000) {
        let list: Vec<&str> = chunk.iter().map(|e| e.as_str()).collect();
        let _ = writeln!(out, "{verb} element {T} {name} {{ {} }}", list.join(", "));
    }
}

pub(crate) fn rules(out: &mut String, name: &str, c: &NftChain) {
    for r in &c.rules {
        let _ = writeln!(
            out,
            "add rule {T} {name} {} comment \"pal:{}\"",
            r.body, r.hash
        );
    }
}

fn full_script(program: &NftProgram, view: &NftView, report: &mut ApplyReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "add table {T}\ndelete table {T}\nadd table {T}");
    for (name, s) in &program.sets {
        set_decl(&mut out, name, s);
    }
    for (name, c) in &program.chains {
        chain_decl(&mut out, name, c);
    }
    for (name, s) in &program.sets {
        let v = s;
        let all: Vec<&String> = v.elements.iter().collect();
        elements(&mut out, "add", name, &all);
        match view.sets.get(name) {
            Some(old) => {
                report.sets_updated.push(name.clone());
                report.members_added += v.elements.difference(&old.elements).count();
                report.members_removed += old.elements.difference(&v.elements).count();
            }
            None => {
                report.sets_created.push(name.clone());
                report.members_added += v.elements.len();
            }
        }
    }
    for (name, c) in &program.chains {
        rules(&mut out, name, c);
        report.chains_rewritten.push(name.clone());
    }
    report.chains_deleted.extend(
        view.chains
            .keys()
            .filter(|n| !program.chains.contains_key(*n))
            .cloned(),
    );
    report.sets_deleted.extend(
        view.sets
            .keys()
            .filter(|n| !program.sets.contains_key(*n))
            .cloned(),
    );
    out
}

/// Whether the kernel's chain holds exactly the desired rules (by `pal:` hash, in order).
pub(crate) fn same_rules(v: &ViewChain, c: &NftChain) -> bool {
    v.rules.len() == c.rules.len()
        && v.rules
            .iter()
            .zip(&c.rules)
            .all(|(h, r)| h.hash.as_deref() == Some(r.hash.as_str()))
}

/// Writes the removal of what `view` holds and `program` no longer wants, in an order one
/// transaction accepts: the chains flushed, then the sets and maps (a removed map's elements
/// may jump to removed chains), then the chains deleted. Returns the sets and the chains
/// removed.
pub(crate) fn removals(
    out: &mut String,
    program: &NftProgram,
    view: &NftView,
) -> (Vec<String>, Vec<String>) {
    let chains: Vec<String> = view
        .chains
        .keys()
        .filter(|n| !program.chains.contains_key(*n))
        .cloned()
        .collect();
    for name in &chains {
        let _ = writeln!(out, "flush chain {T} {name}");
    }
    let mut sets = Vec::new();
    for (name, s) in view
        .sets
        .iter()
        .filter(|(n, _)| !program.sets.contains_key(*n))
    {
        let kind = if s.map_to.is_some() { "map" } else { "set" };
        let _ = writeln!(out, "delete {kind} {T} {name}");
        sets.push(name.clone());
    }
    for name in &chains {
        let _ = writeln!(out, "delete chain {T} {name}");
    }
    (sets, chains)
}

/// The transaction that turns `view` into `program`; empty when nothing differs.
pub(crate) fn script(
    program: &NftProgram,
    view: &NftView,
    full: bool,
    report: &mut ApplyReport,
) -> String {
    let needs_full = full
        || !view.exists
        || program
            .sets
            .iter()
            .any(|(n, s)| view.sets.get(n).is_some_and(|v| !v.same_shape(s)))
        || program
            .chains
            .iter()
            .any(|(n, c)| view.chains.get(n).is_some_and(|v| v.base != c.base));
    if needs_full {
        return full_script(program, view, report);
    }
    let mut out = String::new();
    for (name, s) in &program.sets {
        if !view.sets.contains_key(name) {
            set_decl(&mut out, name, s);
            report.sets_created.push(name.clone());
        }
    }
    for (name, c) in &program.chains {
        if !view.chains.contains_key(name) {
            chain_decl(&mut out, name, c);
        }
    }
    // Deletions before additions: in one transaction nothing is seen half-done, and an
    // interval set must lose an old prefix before it can take an overlapping new one.
    let empty = BTreeSet::new();
    let mut adds = Vec::new();
    for (name, s) in &program.sets {
        let want = s;
        if view
            .sets
            .get(name)
            .is_some_and(|v| Arc::ptr_eq(v, s) || v.elements == s.elements)
        {
            continue;
        }
        let have = view.sets.get(name).map(|v| &v.elements).unwrap_or(&empty);
        let removed: Vec<&String> = have.difference(&want.elements).collect();
        let added: Vec<String> = want.elements.difference(have).cloned().collect();
        elements(&mut out, "delete", name, &removed);
        if view.sets.contains_key(name) && !(removed.is_empty() && added.is_empty()) {
            report.sets_updated.push(name.clone());
        }
        report.members_added += added.len();
        report.members_removed += removed.len();
        adds.push((name, added));
    }
    for (name, added) in adds {
        let added: Vec<&String> = added.iter().collect();
        elements(&mut out, "add", name, &added);
    }
    for (name, c) in &program.chains {
        let changed = view.chains.get(name).is_none_or(|v| !same_rules(v, c));
        if changed {
            if view.chains.contains_key(name) {
                let _ = writeln!(out, "flush chain {T} {name}");
            }
            rules(&mut out, name, c);
            report.chains_rewritten.push(name.clone());
        }
    }
    let (sets, chains) = removals(&mut out, program, view);
    report.sets_deleted.extend(sets);
    report.chains_deleted.extend(chains);
    out
}

impl Backend for NftBackend {
    type Program = NftProgram;
    type View = NftView;

    fn name(&self) -> &'static str {
        "nftables"
    }

    fn validate(program: &NftProgram, previous: &NftProgram) -> Result<(), DataplaneError> {
        program.validate(previous)
    }

    fn validate_patched(program: &NftProgram) -> Result<(), DataplaneError> {
        program.validate_patched()
    }

    fn read(&self, exec: &mut Exec<'_>) -> Result<NftView, DataplaneError> {
        list(exec)
    }

    fn write(
        &self,
        exec: &mut Exec<'_>,
        program: &NftProgram,
        view: &NftView,
        full: bool,
        report: &mut ApplyReport,
    ) -> Result<(), DataplaneError> {
        if let (Some(elements), Some(scripts)) = (&self.elements, &self.scripts) {
            if let Some(mut p) = (!full).then(|| phases(program, view)).flatten() {
                report.add_changes(std::mem::take(&mut p.changes));
                return self.write_phases(exec, elements.as_ref(), scripts.as_ref(), &p);
            }
            let text = script(program, view, full, report);
            if text.is_empty() {
                return Ok(());
            }
            let start = std::time::Instant::now();
            let result = scripts.run(&text);
            log(exec, "libnftables", "transaction", text, &result, start);
            return result;
        }
        if let (Some(writer), false) = (&self.elements, full) {
            if let Some(ops) = element_only(program, view) {
                // Same report as the script would give; the script text documents the write.
                let text = script(program, view, full, report);
                if ops.is_empty() {
                    return Ok(());
                }
                let start = std::time::Instant::now();
                let result = writer.write(&ops);
                exec.log.push(crate::runner::CommandRecord {
                    program: "netlink".into(),
                    args: vec!["setelem".into(), ops.len().to_string()],
                    stdin: Some(text),
                    status: if result.is_ok() { 0 } else { 1 },
                    elapsed: start.elapsed(),
                });
                return result;
            }
        }
        let text = script(program, view, full, report);
        if !text.is_empty() {
            exec.run("nft", &["-f", "-"], Some(&text))?;
        }
        Ok(())
    }

    fn project(&self, program: &NftProgram) -> NftView {
        NftView {
            exists: true,
            sets: program
                .sets
                .iter()
                .map(|(n, s)| (n.clone(), Arc::clone(s)))
                .collect(),
            chains: program
                .chains
                .iter()
                .map(|(n, c)| {
                    (
                        n.clone(),
                        ViewChain {
                            base: c.base.clone(),
                            rules: c
                                .rules
                                .iter()
                                .map(|r| ViewRule {
                                    hash: Some(r.hash.clone()),
                                    packets: 0,
                                    bytes: 0,
                                })
                                .collect(),
                        },
                    )
                })
                .collect(),
        }
    }

    fn counters(
        &self,
        exec: &mut Exec<'_>,
        program: &NftProgram,
    ) -> Result<Vec<RuleCounter>, DataplaneError> {
        let view = list(exec)?;
        let mut origins: BTreeMap<(&str, &str), &RuleOrigin> = BTreeMap::new();
        for (chain, c) in &program.chains {
            for r in &c.rules {
                if let Some(o) = &r.origin {
                    origins.insert((chain.as_str(), r.hash.as_str()), o);
                }
            }
        }
        let mut sums = CounterSums::default();
        for (chain, c) in &view.chains {
            for r in &c.rules {
                let Some(h) = &r.hash else { continue };
                if let Some(o) = origins.get(&(chain.as_str(), h.as_str())) {
                    sums.add(o, r.packets, r.bytes);
                }
            }
        }
        Ok(sums.finish())
    }
}
