//! `palisade matrix --datastore` and `palisade explain --datastore`: computed from what a real
//! etcd holds, they must say exactly what the same manifests say from files. Every step of
//! every conformance case (conformance/base + the case's objects) is stored with `palisade
//! apply` (the datastore wiped before each step), then both matrices are compared whole.

mod common;

use std::path::Path;

use common::conformance::{case_slugs, Case, Objects};
use common::etcd::{ok, palisade, wipe};
use palisade_store::testing::EtcdServer;

const PROBES: [&str; 4] = ["80/TCP", "81/UDP", "81/TCP", "icmp"];

fn matrix_args<'a>(extra: &[&'a str], output: &'a str) -> Vec<&'a str> {
    let mut args = vec!["matrix"];
    args.extend_from_slice(extra);
    for p in PROBES {
        args.extend(["--probe", p]);
    }
    args.extend(["-o", output]);
    args
}

fn store_and_compare(server: &EtcdServer, objects: &Objects, dir: &Path, what: &str) {
    wipe(server);
    let file = dir.join("cluster.yaml");
    std::fs::write(&file, objects.to_yaml().expect("yaml")).expect("write");
    let file = file.display().to_string();
    let url = server.url();
    ok(
        &palisade(&["apply", "-f", &file], Some(&url)),
        &format!("{what}: apply"),
    );
    for output in ["json", "table"] {
        let from_files = ok(
            &palisade(&matrix_args(&["-f", &file], output), None),
            &format!("{what}: matrix -f"),
        );
        // Once through the environment variable, once through the flag.
        let live = ok(
            &palisade(&matrix_args(&[], output), Some(&url)),
            &format!("{what}: matrix from PALISADE_DATASTORE"),
        );
        assert_eq!(live, from_files, "{what}: -o {output}: live != files");
        let live = ok(
            &palisade(&matrix_args(&["--datastore", &url], output), None),
            &format!("{what}: matrix --datastore"),
        );
        assert_eq!(live, from_files, "{what}: -o {output}: live != files");
    }
}

#[test]
fn live_matrix_equals_the_matrix_of_the_same_manifests_on_every_conformance_step() {
    let Ok(server) = EtcdServer::start() else {
        eprintln!("skipped: no etcd binary to start");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let base = Objects::base().expect("base");
    let mut steps = 0;
    for slug in case_slugs().expect("cases") {
        let case = Case::load(&slug).expect("case");
        for (i, objects) in case.states(&base).expect("states").iter().enumerate() {
            store_and_compare(
                &server,
                objects,
                dir.path(),
                &format!("{slug} step {}", i + 1),
            );
            steps += 1;
        }
    }
    assert!(steps > 20, "only {steps} steps replayed");
}

#[test]
fn live_namespace_filter_and_explain() {
    let Ok(server) = EtcdServer::start() else {
        eprintln!("skipped: no etcd binary to start");
        return;
    };
    let url = server.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let case = Case::load("default-deny-ingress").expect("case");
    let base = Objects::base().expect("base");
    let states = case.states(&base).expect("states");
    let objects = states.last().expect("a step");
    let file = dir.path().join("cluster.yaml");
    std::fs::write(&file, objects.to_yaml().expect("yaml")).expect("write");
    let file = file.display().to_string();
    ok(&palisade(&["apply", "-f", &file], Some(&url)), "apply");

    // -n: rows and columns of namespace x only, with the policies of every namespace.
    let full: serde_json::Value = serde_json::from_str(&ok(
        &palisade(&matrix_args(&["-f", &file], "json"), None),
        "matrix -f",
    ))
    .expect("json");
    let x: serde_json::Value = serde_json::from_str(&ok(
        &palisade(&matrix_args(&["-n", "x"], "json"), Some(&url)),
        "matrix -n x",
    ))
    .expect("json");
    let all_pods: Vec<&str> = full["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let x_pods: Vec<&str> = x["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(!x_pods.is_empty());
    assert!(x_pods.iter().all(|p| p.starts_with("x/")), "{x_pods:?}");
    assert_eq!(
        x_pods.len(),
        all_pods.iter().filter(|p| p.starts_with("x/")).count()
    );
    for (k, probe) in x["probes"].as_array().unwrap().iter().enumerate() {
        for (i, from) in x_pods.iter().enumerate() {
            for (j, to) in x_pods.iter().enumerate() {
                let fi = all_pods.iter().position(|p| p == from).unwrap();
                let tj = all_pods.iter().position(|p| p == to).unwrap();
                assert_eq!(
                    probe["allowed"][i][j], full["probes"][k]["allowed"][fi][tj],
                    "{from} -> {to}"
                );
            }
        }
    }

    // explain: the same words from the datastore as from the files; -n completes bare names.
    let files = ok(
        &palisade(
            &[
                "explain", "-f", &file, "--from", "y/a", "--to", "x/b", "--port", "80",
            ],
            None,
        ),
        "explain -f",
    );
    let live = ok(
        &palisade(
            &[
                "explain", "-n", "x", "--from", "y/a", "--to", "b", "--port", "80",
            ],
            Some(&url),
        ),
        "explain live",
    );
    assert_eq!(live, files);
    assert!(live.starts_with("DENIED"), "{live}");
}

#[test]
fn neither_or_both_inputs_are_usage_errors() {
    for args in [
        vec!["matrix", "--probe", "80"],
        vec!["explain", "--from", "a/b", "--to", "a/c", "--port", "80"],
        vec![
            "matrix",
            "-f",
            "x.yaml",
            "--datastore",
            "etcd://127.0.0.1:1",
            "--probe",
            "80",
        ],
    ] {
        let out = palisade(&args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--filename") && err.contains("--datastore"),
            "{args:?}: {err}"
        );
    }
}
