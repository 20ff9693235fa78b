//! The conformance suites with every policy staged (`palisade.dev/staged: "true"` on every
//! NetworkPolicy and ClusterNetworkPolicy of every step), against the real `palisade matrix`:
//! without `--staged` every grid is the one of the same step with no policy at all (staged
//! policies enforce nothing); with `--staged` every expected grid and poke holds (they are
//! evaluated as the suites expect). That the dataplane reports a would-drop for every flow the
//! staged policies deny and the enforced ones allow is checked flow by flow by the render
//! crate's differential test (random clusters with staged policies, through the interpreter).

mod common;

use std::fmt::Write as _;
use std::path::Path;

use common::conformance::{
    case_slugs_in, cnp_root, root, Case, MatrixOutput, ObjectKey, Objects, Probe,
};
use serde_yaml::Value;

fn is_policy(k: &ObjectKey) -> bool {
    k.kind == "NetworkPolicy" || k.kind == "ClusterNetworkPolicy"
}

/// The objects with every policy staged.
fn staged(objects: &Objects) -> Objects {
    let mut out = Objects::default();
    for (k, v) in objects.iter() {
        let mut v = v.clone();
        if is_policy(k) {
            let meta = v
                .get_mut("metadata")
                .and_then(Value::as_mapping_mut)
                .expect("metadata");
            let annotations = meta
                .entry("annotations".into())
                .or_insert_with(|| Value::Mapping(Default::default()));
            if annotations.is_null() {
                *annotations = Value::Mapping(Default::default());
            }
            annotations
                .as_mapping_mut()
                .expect("annotations mapping")
                .insert("palisade.dev/staged".into(), "true".into());
        }
        out.apply(v).expect("apply");
    }
    out
}

/// The objects without any policy.
fn without_policies(objects: &Objects) -> Objects {
    let mut out = Objects::default();
    for (k, v) in objects.iter() {
        if !is_policy(k) {
            out.apply(v.clone()).expect("apply");
        }
    }
    out
}

fn matrix(objects: &Objects, probes: &[Probe], staged: bool) -> Result<MatrixOutput, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let yaml = objects.to_yaml().map_err(|e| format!("{e:#}"))?;
    std::fs::write(dir.path().join("cluster.yaml"), yaml).map_err(|e| e.to_string())?;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_palisade"));
    cmd.env_remove("PALISADE_DATASTORE")
        .arg("matrix")
        .arg("-f")
        .arg(dir.path());
    for p in probes {
        cmd.arg("--probe").arg(p.to_string());
    }
    if staged {
        cmd.arg("--staged");
    }
    let out = cmd
        .args(["-o", "json"])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

fn replay(suite: &Path, slug: &str, report: &mut String) {
    let base = Objects::base_of(suite).expect("base");
    let case = Case::load_from(suite, slug).expect("case");
    let states = case.states(&base).expect("states");
    for (i, (step, objects)) in case.steps.iter().zip(&states).enumerate() {
        let probes = step.probes();
        let all_staged = staged(objects);
        let (enforced, as_if, open) = match (
            matrix(&all_staged, &probes, false),
            matrix(&all_staged, &probes, true),
            matrix(&without_policies(objects), &probes, false),
        ) {
            (Ok(a), Ok(b), Ok(c)) => (a, b, c),
            (a, b, c) => {
                let _ = writeln!(
                    report,
                    "{slug} step {}: {:?} {:?} {:?}",
                    i + 1,
                    a.err(),
                    b.err(),
                    c.err()
                );
                continue;
            }
        };
        if enforced.pods != open.pods || enforced.probes.len() != open.probes.len() {
            let _ = writeln!(report, "{slug} step {}: pods or probes differ", i + 1);
            continue;
        }
        for (e, o) in enforced.probes.iter().zip(&open.probes) {
            if e.allowed != o.allowed {
                let _ = writeln!(
                    report,
                    "{slug} step {}: {}/{} with every policy staged differs from no policy",
                    i + 1,
                    e.port,
                    e.protocol
                );
            }
        }
        for exp in &step.expect {
            for (from, to, want) in exp.grid.cells() {
                match as_if.allowed(from, to, &exp.probe) {
                    Ok(got) if got == want => {}
                    got => {
                        let _ = writeln!(
                            report,
                            "{slug} step {}: --staged {from} -> {to} {}: {got:?}, expected {want}",
                            i + 1,
                            exp.probe
                        );
                    }
                }
            }
        }
        for poke in &step.pokes {
            match as_if.allowed(&poke.from, &poke.to, &poke.probe) {
                Ok(got) if got == poke.allowed => {}
                got => {
                    let _ = writeln!(
                        report,
                        "{slug} step {}: --staged poke {} -> {} {}: {got:?}, expected {}",
                        i + 1,
                        poke.from,
                        poke.to,
                        poke.probe,
                        poke.allowed
                    );
                }
            }
        }
    }
}

#[test]
fn every_case_with_every_policy_staged() {
    let mut report = String::new();
    let mut cases = 0;
    for suite in [root(), cnp_root()] {
        for slug in case_slugs_in(&suite).expect("cases") {
            replay(&suite, &slug, &mut report);
            cases += 1;
        }
    }
    assert!(cases > 20, "{cases} cases");
    assert!(report.is_empty(), "{report}");
}
