//! The conformance suite: every case of `conformance/cases/` (the Kubernetes e2e network
//! policy tests, transcribed, plus Palisade's own SEMANTICS.md cases) replayed against the real
//! `palisade matrix`. Each step's cumulative manifests (base + applied − deleted) go to a
//! temporary directory; `palisade matrix -f <dir> --probe … -o json` must reproduce every
//! expected grid exactly. One test per case (`case::<slug with _>`); a failure lists the
//! case, step, probe and every differing pair, with both grids.

mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::process::Command;

use common::conformance::{case_slugs, run_matrix, Case, Expectation, Grid, MatrixOutput, Objects};

/// Replays one case; `Err` is the failure report.
fn replay(slug: &str) -> Result<(), String> {
    let base = Objects::base().map_err(|e| format!("base: {e:#}"))?;
    let case = Case::load(slug).map_err(|e| format!("{e:#}"))?;
    let states = case.states(&base).map_err(|e| format!("{slug}: {e:#}"))?;
    let mut report = String::new();
    for (i, (step, objects)) in case.steps.iter().zip(&states).enumerate() {
        let what = match &step.description {
            Some(d) => format!("step {} ({d})", i + 1),
            None => format!("step {}", i + 1),
        };
        let output = match run_matrix(objects, &step.probes()) {
            Ok(o) => o,
            Err(e) => {
                let _ = writeln!(report, "  {what}: {e}");
                continue;
            }
        };
        for expectation in &step.expect {
            if let Err(e) = compare(expectation, &output) {
                let _ = writeln!(report, "  {what}, probe {}: {e}", expectation.probe);
            }
        }
    }
    if report.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "conformance case {slug} failed\n  source: {}\n{report}",
            case.source
        ))
    }
}

/// Every pair of the expected grid against the matrix; `Err` lists the differing pairs.
fn compare(expectation: &Expectation, output: &MatrixOutput) -> Result<(), String> {
    let probe = &expectation.probe;
    let Some(got) = output
        .probes
        .iter()
        .find(|p| p.port == probe.port && p.protocol == probe.protocol)
    else {
        return Err("absent from the matrix output".to_string());
    };
    let index = |pod: &str| output.pods.iter().position(|p| p == pod);
    let mut diffs = Vec::new();
    let mut observed = expectation.grid.clone();
    for (i, from) in expectation.grid.pods.iter().enumerate() {
        for (j, to) in expectation.grid.pods.iter().enumerate() {
            let want = expectation.grid.allowed[i][j];
            let (Some(fi), Some(ti)) = (index(from), index(to)) else {
                return Err(format!(
                    "pod {from} or {to} is missing from the matrix output"
                ));
            };
            let Some(&have) = got.allowed.get(fi).and_then(|row| row.get(ti)) else {
                return Err(format!("the matrix has no cell for {from} -> {to}"));
            };
            observed.allowed[i][j] = have;
            if have != want {
                diffs.push(format!(
                    "    {from} -> {to}: expected {}, got {}",
                    verdict(want),
                    verdict(have)
                ));
            }
        }
    }
    if diffs.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{} pair(s) differ\n{}\n    expected:\n{}\n    got:\n{}",
        diffs.len(),
        diffs.join("\n"),
        render(&expectation.grid),
        render(&observed)
    ))
}

fn verdict(allowed: bool) -> &'static str {
    if allowed {
        "allowed"
    } else {
        "blocked"
    }
}

/// A grid in the fixture's text form, indented for the report.
fn render(grid: &Grid) -> String {
    let mut out = format!("      -   {}", grid.pods.join(" "));
    for (pod, row) in grid.pods.iter().zip(&grid.allowed) {
        let cells: Vec<&str> = row.iter().map(|ok| if *ok { ". " } else { "X " }).collect();
        let _ = write!(out, "\n      {pod} {}", cells.join("  ").trim_end());
    }
    out
}

macro_rules! conformance_cases {
    ($($case:ident)*) => {
        /// One test per case file; the test name is the slug with `_` for `-`.
        mod case {
            $(
                #[test]
                fn $case() {
                    let slug = stringify!($case).replace('_', "-");
                    if let Err(report) = super::replay(&slug) {
                        panic!("{report}");
                    }
                }
            )*
        }

        const LISTED: &[&str] = &[$(stringify!($case)),*];
    };
}

conformance_cases! {
    allow_all
    allow_from_all_namespaces
    allow_from_namespace_selector
    allow_from_pod_selector
    allow_ingress_for_target
    any_pod_selectors
    default_deny_all
    default_deny_ingress
    default_namespace_label_match_expressions
    default_namespace_label_match_labels
    deny_egress_client_side
    deny_egress_namespace
    deny_egress_pod_selector
    deny_ingress_from_other_namespaces
    deny_ingress_updated_pod
    egress_allow_all_precedence
    egress_cidr_except
    egress_pod_and_namespace_selector
    egress_to_cidr
    ingress_allow_all_precedence
    ingress_and_egress_together
    ingress_any_port_specific_protocol
    ingress_egress_independent
    ipblock_cidr_and_except_overlap
    multiple_pod_selectors_and_namespace_selectors
    named_port_egress
    named_port_ingress_from_namespace
    named_port_ingress
    namespace_selector_match_expressions
    pod_and_namespace_selector_from_other_namespace
    pod_selector_and_namespace_selector
    pod_selector_match_expressions
    pod_selector_or_namespace_selector
    ports
    sctp_default_deny_ingress
    sctp_pod_and_namespace_selector_from_other_namespace
    sctp_ports
    sctp_rule_does_not_allow_tcp
    sctp_rule_isolates_pod
    semantics_1_both_sides_must_allow
    semantics_2_isolation_per_namespace_and_direction
    semantics_3_policies_are_additive
    semantics_4_effective_policy_types
    semantics_4_empty_policy_types_list
    semantics_5_explicit_empty_lists
    semantics_6_replies_are_not_judged
    semantics_7_rule_needs_peer_and_port
    semantics_8_peer_namespace_scoping
    semantics_9_ipblock_on_pod_ips
    semantics_10_selector_operators
    semantics_10_empty_label_values
    semantics_11_endport_ranges
    semantics_11_protocols
    semantics_12_named_ports
    semantics_12_named_ports_per_pod
    semantics_12_named_ports_with_ipblock
    semantics_13_replace_and_delete
    semantics_14_pod_to_itself
    stacked_policies
    stop_enforcing_after_delete
    udp_default_deny_ingress
    udp_pod_and_namespace_selector_from_other_namespace
    udp_ports
    udp_rule_does_not_allow_tcp
    updated_namespace
    updated_pod
    updated_policy
}

/// A case file without a test would silently never run, and a test without a file fails
/// only by name: keep both lists equal.
#[test]
fn every_case_file_has_a_test() {
    let files: BTreeSet<String> = case_slugs()
        .expect("conformance/cases is readable")
        .into_iter()
        .map(|s| s.replace('-', "_"))
        .collect();
    let listed: BTreeSet<String> = LISTED.iter().map(|s| s.to_string()).collect();
    let missing: Vec<_> = files.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&files).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "add these to conformance_cases!: {missing:?}; remove these (no case file): {stale:?}"
    );
}

/// Fixture hygiene, without running Palisade: every case parses, its deletes name existing
/// objects, every grid covers exactly the pods present at that step in pod order, and every
/// pod reaches itself (SEMANTICS.md 14).
#[test]
fn fixtures_are_well_formed() {
    let base = Objects::base().expect("conformance/base loads");
    assert_eq!(
        base.pods().len(),
        9,
        "the base is the e2e model: 3 namespaces x 3 pods"
    );
    let mut problems = Vec::new();
    let slugs = case_slugs().expect("conformance/cases is readable");
    assert!(slugs.len() >= 60, "only {} cases found", slugs.len());
    for slug in slugs {
        let checked = Case::load(&slug).and_then(|case| {
            let states = case.states(&base)?;
            for (i, (step, objects)) in case.steps.iter().zip(&states).enumerate() {
                for e in &step.expect {
                    let at = format!("step {} probe {}", i + 1, e.probe);
                    anyhow::ensure!(
                        e.grid.pods == objects.pods(),
                        "{at}: grid pods {:?} are not the cluster's {:?}",
                        e.grid.pods,
                        objects.pods()
                    );
                    for (from, to, ok) in e.grid.cells() {
                        anyhow::ensure!(from != to || ok, "{at}: {from} -> itself must be '.'");
                    }
                }
            }
            Ok(())
        });
        if let Err(e) = checked {
            problems.push(format!("{slug}: {e:#}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `palisade validate` on a set of objects; `Err` is its stderr.
fn validate(objects: &Objects) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("cannot create a temporary dir: {e}"))?;
    let yaml = objects.to_yaml().map_err(|e| format!("{e:#}"))?;
    std::fs::write(dir.path().join("cluster.yaml"), yaml)
        .map_err(|e| format!("cannot write the manifests: {e}"))?;
    let out = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["validate", "-f"])
        .arg(dir.path())
        .output()
        .map_err(|e| format!("cannot run palisade: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The base and every step's cumulative manifests pass `palisade validate` (so a matrix
/// failure is never a fixture typo).
#[test]
fn every_step_validates() {
    let base = Objects::base().expect("conformance/base loads");
    let mut problems = Vec::new();
    if let Err(e) = validate(&base) {
        problems.push(format!("base: {e}"));
    }
    for slug in case_slugs().expect("conformance/cases is readable") {
        match Case::load(&slug).and_then(|c| c.states(&base)) {
            Ok(states) => {
                for (i, objects) in states.iter().enumerate() {
                    if let Err(e) = validate(objects) {
                        problems.push(format!("{slug} step {}: {e}", i + 1));
                    }
                }
            }
            Err(e) => problems.push(format!("{slug}: {e:#}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
