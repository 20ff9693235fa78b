//! The ClusterNetworkPolicy conformance suite: every case of `conformance/cnp/cases/` (the
//! network-policy-api v1alpha2 conformance tests, transcribed, plus Palisade's own cases)
//! replayed against the real `palisade matrix`, on the upstream model's namespaces, pods
//! (two of them host-networked) and nodes in `conformance/cnp/base/`. Each step's cumulative
//! manifests go to a temporary directory; every poke (and grid, if a step has one) must come
//! out as expected. One test per case (`case::<slug with _>`).
//!
//! The same cases through real labs on both dataplanes: `tests/lab_cnp_conformance.rs`.

mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::process::Command;

use common::conformance::{case_slugs_in, cnp_root, run_matrix, Case, Objects};

/// Replays one case; `Err` is the failure report.
fn replay(slug: &str) -> Result<(), String> {
    let suite = cnp_root();
    let base = Objects::base_of(&suite).map_err(|e| format!("base: {e:#}"))?;
    let case = Case::load_from(&suite, slug).map_err(|e| format!("{e:#}"))?;
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
        for poke in &step.pokes {
            match output.allowed(&poke.from, &poke.to, &poke.probe) {
                Ok(have) if have == poke.allowed => {}
                Ok(have) => {
                    let got = if have { "allowed" } else { "denied" };
                    let _ = writeln!(report, "  {what}: expected {poke}, got {got}");
                }
                Err(e) => {
                    let _ = writeln!(report, "  {what}: {poke}: {e}");
                }
            }
        }
        for e in &step.expect {
            for (from, to, want) in e.grid.cells() {
                match output.allowed(from, to, &e.probe) {
                    Ok(have) if have == want => {}
                    Ok(have) => {
                        let _ = writeln!(
                            report,
                            "  {what}, probe {}: {from} -> {to}: expected {want}, got {have}",
                            e.probe
                        );
                    }
                    Err(err) => {
                        let _ = writeln!(report, "  {what}, probe {}: {err}", e.probe);
                    }
                }
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
    cnp_admin_tier_egress_inline_cidr_peers
    cnp_admin_tier_egress_named_port
    cnp_admin_tier_egress_node_peers
    cnp_admin_tier_egress_sctp
    cnp_admin_tier_egress_tcp
    cnp_admin_tier_egress_udp
    cnp_admin_tier_gress
    cnp_admin_tier_ingress_named_port
    cnp_admin_tier_ingress_sctp
    cnp_admin_tier_ingress_tcp
    cnp_admin_tier_ingress_udp
    cnp_admin_tier_integration
    cnp_admin_tier_priority_field
    cnp_baseline_tier_egress_inline_cidr_peers
    cnp_baseline_tier_egress_named_port
    cnp_baseline_tier_egress_node_peers
    cnp_baseline_tier_egress_sctp
    cnp_baseline_tier_egress_tcp
    cnp_baseline_tier_egress_udp
    cnp_baseline_tier_gress
    cnp_baseline_tier_ingress_named_port
    cnp_baseline_tier_ingress_sctp
    cnp_baseline_tier_ingress_tcp
    cnp_baseline_tier_ingress_udp
    palisade_egress_accept_leaves_ingress
    palisade_host_network_pods
    palisade_named_ports
    palisade_networkpolicy_implicit_deny_is_final
    palisade_pass_admin_then_baseline
    palisade_port_ranges
}

/// A case file without a test would silently never run: keep both lists equal.
#[test]
fn every_case_file_has_a_test() {
    let files: BTreeSet<String> = case_slugs_in(&cnp_root())
        .expect("conformance/cnp/cases is readable")
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

/// The upstream suite is all there: 24 tests with 92 subtests (a subtest that patches an
/// object halfway is split into parts named "<subtest> (part N)").
#[test]
fn the_upstream_suite_is_complete() {
    let upstream: Vec<String> = case_slugs_in(&cnp_root())
        .expect("conformance/cnp/cases is readable")
        .into_iter()
        .filter(|s| s.starts_with("cnp-"))
        .collect();
    assert_eq!(upstream.len(), 24, "{upstream:?}");
    let mut subtests = 0;
    let mut pokes = 0;
    for slug in &upstream {
        let case = Case::load_from(&cnp_root(), slug).expect("case loads");
        let runs: BTreeSet<String> = case
            .steps
            .iter()
            .map(|s| {
                let d = s
                    .description
                    .clone()
                    .expect("upstream steps name their subtest");
                d.split(" (part ").next().unwrap_or_default().to_string()
            })
            .collect();
        subtests += runs.len();
        pokes += case.steps.iter().map(|s| s.pokes.len()).sum::<usize>();
    }
    assert_eq!(subtests, 92);
    assert_eq!(pokes, 301, "every PokeServer call of the upstream tests");
}

/// Fixture hygiene without running the matrix: every case parses, its deletes name existing
/// objects, every poke and grid names pods of its step, and the base is the upstream model.
#[test]
fn fixtures_are_well_formed() {
    let base = Objects::base_of(&cnp_root()).expect("conformance/cnp/base loads");
    assert_eq!(
        base.pods().len(),
        10,
        "4 houses x 2 pods, plus 2 host-networked centaurs"
    );
    let mut problems = Vec::new();
    for slug in case_slugs_in(&cnp_root()).expect("conformance/cnp/cases is readable") {
        let checked = Case::load_from(&cnp_root(), &slug).and_then(|case| {
            let states = case.states(&base)?;
            for (i, (step, objects)) in case.steps.iter().zip(&states).enumerate() {
                let pods = objects.pods();
                for p in &step.pokes {
                    for pod in [&p.from, &p.to] {
                        anyhow::ensure!(pods.contains(pod), "step {}: {p}: no pod {pod}", i + 1);
                    }
                }
                for e in &step.expect {
                    anyhow::ensure!(
                        e.grid.pods == pods,
                        "step {} probe {}: grid pods are not the cluster's",
                        i + 1,
                        e.probe
                    );
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

/// The base and every step's cumulative manifests pass `palisade validate`.
#[test]
fn every_step_validates() {
    let suite = cnp_root();
    let base = Objects::base_of(&suite).expect("conformance/cnp/base loads");
    let validate = |objects: &Objects| -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let yaml = objects.to_yaml().map_err(|e| format!("{e:#}"))?;
        std::fs::write(dir.path().join("cluster.yaml"), yaml).map_err(|e| e.to_string())?;
        let out = Command::new(env!("CARGO_BIN_EXE_palisade"))
            .args(["validate", "-f"])
            .arg(dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    };
    let mut problems = Vec::new();
    if let Err(e) = validate(&base) {
        problems.push(format!("base: {e}"));
    }
    for slug in case_slugs_in(&suite).expect("conformance/cnp/cases is readable") {
        match Case::load_from(&suite, &slug).and_then(|c| c.states(&base)) {
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
