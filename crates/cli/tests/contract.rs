//! The command-line contract as the issues state it, checked the way an outside tool would use
//! `palisade`: flags given once or repeated, directories, `kind: List`, probe spellings, the
//! exact `matrix` JSON shape, errors on stderr with a non-zero exit, `-o json` on every
//! data-printing command, kubectl-style kind names, a dead etcd member among several
//! endpoints, and the controller's error for a bad kubeconfig. Fast: no lab, no agent.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use palisade_store::testing::{free_port, EtcdServer};

fn palisade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .env_remove("PALISADE_DATASTORE")
        .env_remove("PALISADE_ETCD_PASSWORD")
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run palisade")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A namespace and two pods as a `kind: List` (one pod without an IP).
const LIST: &str = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: a, labels: {team: x}}
- apiVersion: v1
  kind: Pod
  metadata: {name: web, namespace: a, labels: {app: web}}
  spec: {containers: [{name: c, ports: [{containerPort: 80, name: http}]}]}
  status: {podIP: 10.0.0.1}
- apiVersion: v1
  kind: Pod
  metadata: {name: db, namespace: a, labels: {app: db}}
  spec: {containers: [{name: c}]}
"#;

/// In a subdirectory: kinds Palisade skips, a pod in `default`, and a policy that lets only
/// `app: web` reach `app: db` on 80/TCP and 81/UDP.
const SUB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec: {}
---
apiVersion: v1
kind: Service
metadata: {name: s}
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec: {containers: [{name: c}]}
status: {podIP: 10.0.0.3}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: a}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: 80, protocol: TCP}, {port: 81, protocol: UDP}]
"#;

fn cluster_dir() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let list = write(dir.path(), "list.yaml", LIST);
    write(dir.path(), "more/deeper/sub.yml", SUB);
    let more = dir.path().join("more").display().to_string();
    (dir, list, more)
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "failed: {}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

#[test]
fn matrix_json_has_exactly_the_contract_shape() {
    let (_dir, list, more) = cluster_dir();
    let once = palisade(&[
        "matrix", "-f", &list, &more, "--probe", "80/TCP", "--probe", "81/udp", "--probe",
        "80/sctp", "--probe", "80", "-o", "json",
    ]);
    let repeated = palisade(&[
        "matrix", "-f", &list, "-f", &more, "--probe", "80/tcp", "--probe", "81/UDP", "--probe",
        "80/SCTP", "--probe", "80/TCP", "-o", "json",
    ]);
    let v = json(&once);
    assert_eq!(v, json(&repeated), "-f once with two paths and -f twice");
    // One summary warning for the skipped kinds.
    let err = stderr(&once);
    assert_eq!(err.matches("warning").count(), 1, "{err}");
    assert!(
        err.contains("Deployment") && err.contains("Service"),
        "{err}"
    );

    let top: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(top, BTreeSet::from(["pods", "probes"]));
    // Sorted ns/name, the pod without an IP included.
    assert_eq!(
        v["pods"],
        serde_json::json!(["a/db", "a/web", "default/client"])
    );
    let probes = v["probes"].as_array().unwrap();
    let seen: Vec<(u64, &str)> = probes
        .iter()
        .map(|p| (p["port"].as_u64().unwrap(), p["protocol"].as_str().unwrap()))
        .collect();
    assert_eq!(seen, [(80, "TCP"), (81, "UDP"), (80, "SCTP"), (80, "TCP")]);
    for p in probes {
        let keys: BTreeSet<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["allowed", "port", "protocol"]));
        let grid = p["allowed"].as_array().unwrap();
        assert_eq!(grid.len(), 3);
        for (i, row) in grid.iter().enumerate() {
            let row = row.as_array().unwrap();
            assert_eq!(row.len(), 3);
            assert_eq!(row[i], true, "a pod reaches itself");
        }
    }
    // allowed[i][j]: pods[i] -> pods[j]. Only a/web reaches a/db, on 80/TCP and 81/UDP.
    let at = |k: usize, i: usize, j: usize| probes[k]["allowed"][i][j].as_bool().unwrap();
    assert!(at(0, 1, 0) && !at(0, 2, 0), "80/TCP: web -> db only");
    assert!(at(1, 1, 0) && !at(1, 2, 0), "81/UDP: web -> db only");
    assert!(!at(2, 1, 0), "80/SCTP is not among the allowed ports");
    assert!(at(0, 0, 1) && at(0, 2, 1), "nothing isolates web");
}

#[test]
fn probe_spellings_and_bad_probes() {
    let (_dir, list, _more) = cluster_dir();
    let v = json(&palisade(&[
        "matrix", "-f", &list, "--probe", "icmp", "--probe", "53/Udp", "-o", "json",
    ]));
    assert_eq!(v["probes"][0]["protocol"], "ICMP");
    assert_eq!(v["probes"][1]["protocol"], "UDP");
    assert_eq!(v["probes"][1]["port"], 53);
    for bad in ["0/TCP", "70000/TCP", "80/FOO", "tcp/80", "80-90/TCP", ""] {
        let out = palisade(&["matrix", "-f", &list, "--probe", bad, "-o", "json"]);
        assert!(!out.status.success(), "--probe {bad:?} accepted");
        assert!(stdout(&out).is_empty(), "--probe {bad:?}: {}", stdout(&out));
        assert!(
            stderr(&out).contains("--probe"),
            "{bad:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn validate_lists_every_error_even_after_an_unknown_api_version() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "mixed.yaml",
        r#"
apiVersion: networking.k8s.io/v1beta1
kind: NetworkPolicy
metadata: {name: old, namespace: a}
spec: {podSelector: {}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-port, namespace: a}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: 70000}]
"#,
    );
    let other = write(
        dir.path(),
        "pod.json",
        r#"{"apiVersion": "v2", "kind": "Pod", "metadata": {"name": "q"}}"#,
    );
    let out = palisade(&["validate", "-f", &file, &other]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for needle in [
        "NetworkPolicy a/old: apiVersion",
        "NetworkPolicy a/bad-port: spec.ingress[0].ports[0].port",
        "Pod default/q: apiVersion",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    let v: serde_json::Value =
        serde_json::from_slice(&palisade(&["validate", "-f", &file, &other, "-o", "json"]).stdout)
            .unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"].as_array().unwrap().len(), 3, "{v}");
    // matrix refuses the same input with the same list.
    let out = palisade(&["matrix", "-f", &file, "--probe", "80"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("a/bad-port"), "{}", stderr(&out));
}

#[test]
fn explain_answers_in_words_or_json_and_refuses_unknown_pods() {
    let (_dir, list, more) = cluster_dir();
    let out = palisade(&[
        "explain",
        "-f",
        &list,
        "-f",
        &more,
        "--from",
        "default/client",
        "--to",
        "a/db",
        "--port",
        "80/TCP",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("DENIED"), "{}", stdout(&out));
    assert!(stdout(&out).contains("a/db-from-web"), "{}", stdout(&out));
    let v = json(&palisade(&[
        "explain", "-f", &list, &more, "--from", "a/web", "--to", "a/db", "--port", "81/udp", "-o",
        "json",
    ]));
    assert_eq!(v["allowed"], true);
    let v = json(&palisade(&[
        "explain",
        "-f",
        &list,
        "--from",
        "192.0.2.1",
        "--to",
        "a/web",
        "--port",
        "icmp",
        "-o",
        "json",
    ]));
    assert_eq!(v["allowed"], true);
    // A pod's own address stands for the pod, as it does in the kernel's IP sets.
    let out = palisade(&[
        "explain", "-f", &list, &more, "--from", "10.0.0.1", "--to", "a/db", "--port", "80",
    ]);
    assert!(stdout(&out).starts_with("ALLOWED"), "{}", stdout(&out));
    assert!(stderr(&out).contains("a/web"), "{}", stderr(&out));
    let out = palisade(&[
        "explain", "-f", &list, "--from", "a/nope", "--to", "a/db", "--port", "80",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("a/nope"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
}

#[test]
fn a_closed_stdout_ends_a_printing_command_quietly() {
    let (_dir, list, more) = cluster_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["matrix", "-f", &list, &more, "--probe", "80", "-o", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away, as `| head -c0` would
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(out.status.code(), Some(101), "a panic's exit code");
}

#[test]
fn every_command_explains_itself_and_data_commands_offer_json() {
    let data = [
        vec!["validate"],
        vec!["matrix"],
        vec!["explain"],
        vec!["render"],
        vec!["apply"],
        vec!["delete"],
        vec!["get"],
        vec!["counters"],
        vec!["agent", "status"],
        vec!["lab", "up"],
        vec!["lab", "apply"],
        vec!["lab", "delete"],
        vec!["lab", "probe"],
        vec!["lab", "status"],
        vec!["lab", "down"],
        vec!["lab", "counters"],
    ];
    for cmd in &data {
        let mut args = cmd.clone();
        args.push("--help");
        let out = palisade(&args);
        assert!(out.status.success(), "{cmd:?} --help: {}", stderr(&out));
        let help = stdout(&out);
        assert!(help.contains("-o, --output"), "{cmd:?} has no -o:\n{help}");
        assert!(help.contains("json"), "{cmd:?} has no json output:\n{help}");
    }
    for cmd in [
        vec!["agent"],
        vec!["controller"],
        vec!["lab", "exec"],
        vec!["lab"],
        vec![],
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        let out = palisade(&args);
        assert!(out.status.success(), "{cmd:?} --help: {}", stderr(&out));
        assert!(
            stdout(&out).lines().count() > 5,
            "{cmd:?}: {}",
            stdout(&out)
        );
    }
    let agent = stdout(&palisade(&["agent", "--help"]));
    for flag in [
        "--node",
        "--datastore",
        "--dataplane",
        "--netns",
        "--iface-prefix",
        "--resync-interval",
        "--metrics-addr",
        "--mark-accept",
        "--mark-pass",
        "--mark-mask",
    ] {
        assert!(agent.contains(flag), "agent --help lacks {flag}");
    }
    let controller = stdout(&palisade(&["controller", "--help"]));
    for flag in ["--kubeconfig", "--datastore", "--namespace-selector"] {
        assert!(controller.contains(flag), "controller --help lacks {flag}");
    }
    // A usage error goes to stderr with a non-zero exit.
    let out = palisade(&["matrix", "--probe", "80"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).is_empty());
    assert!(stderr(&out).contains("--filename"), "{}", stderr(&out));
}

#[test]
fn controller_names_a_bad_kubeconfig_once_and_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = write(dir.path(), "kubeconfig", "this is not a kubeconfig\n");
    let missing = dir.path().join("nope").display().to_string();
    // The datastore is unreachable as well: the kubeconfig is what is wrong first.
    let ds = format!("etcd://127.0.0.1:{}", free_port().unwrap());
    for (path, cause) in [(&garbage, "kubeconfig"), (&missing, "No such file")] {
        let started = Instant::now();
        let out = palisade(&["controller", "--kubeconfig", path, "--datastore", &ds]);
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(
            err.contains("kubeconfig") && err.contains(path.as_str()),
            "{err}"
        );
        assert!(err.contains(cause), "{err}");
        assert!(
            !err.contains("datastore"),
            "the kubeconfig is checked first: {err}"
        );
    }
    // A malformed namespace selector is refused before anything starts.
    let out = palisade(&[
        "controller",
        "--kubeconfig",
        &garbage,
        "--datastore",
        &ds,
        "--namespace-selector",
        "team in (a,",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("label selector"), "{}", stderr(&out));
    let out = palisade(&["controller", "--kubeconfig", &missing, "--datastore", &ds]);
    assert_eq!(
        stderr(&out).matches("No such file").count(),
        1,
        "the cause is said once: {}",
        stderr(&out)
    );
}

#[test]
fn unreachable_etcd_fails_clearly_within_seconds() {
    let url = format!("etcd://127.0.0.1:{}", free_port().unwrap());
    for args in [
        vec!["get", "networkpolicies"],
        vec!["agent", "status"],
        vec!["delete", "networkpolicy", "a/b"],
    ] {
        let started = Instant::now();
        let mut all = args.clone();
        all.extend(["--datastore", url.as_str()]);
        let out = palisade(&all);
        assert!(started.elapsed() < Duration::from_secs(10), "{args:?} hung");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains("datastore"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = palisade(&["get", "ns", "--datastore", "http://127.0.0.1:2379"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("etcd://"), "{}", stderr(&out));
}

#[test]
fn no_datastore_is_a_usage_error_and_counters_ask_the_lab_instead() {
    for args in [
        vec!["get", "networkpolicies"],
        vec!["apply", "-f", "../../examples/seed"],
        vec!["delete", "networkpolicy", "a/b"],
        vec!["agent", "--node", "n1", "--dataplane", "nftables"],
    ] {
        let out = palisade(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("--datastore") && stderr(&out).contains("PALISADE_DATASTORE"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // No lab of this name is up: the error says that the lab was asked and why it could not
    // answer.
    for args in [
        vec!["counters", "--node", "n1", "--lab", "nolab-contract"],
        vec!["agent", "status", "--lab", "nolab-contract"],
    ] {
        let out = palisade(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("no --datastore")
                && err.contains("nolab-contract")
                && err.contains("not up"),
            "{args:?}: {err}"
        );
    }
}

const STORED: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c}]}
status: {podIP: 10.0.0.9}
---
apiVersion: v1
kind: Pod
metadata: {name: node-exporter, namespace: shop}
spec: {nodeName: n1, hostNetwork: true, containers: [{name: c}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: shop}
spec: {podSelector: {}}
"#;

#[test]
fn kubectl_style_names_and_a_dead_member_among_the_endpoints() {
    let server = EtcdServer::start().expect("etcd");
    // One live member and one that is not there: requests still succeed.
    let url = format!(
        "{},127.0.0.1:{}",
        server.url(),
        free_port().expect("a free port")
    );
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "shop.yaml", STORED);
    let ds = ["--datastore", url.as_str()];
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(ds);
        palisade(&all)
    };
    let out = run(&["apply", "-f", &file]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("networkpolicy shop/deny created"));
    for _ in 0..4 {
        for kind in [
            "networkpolicies",
            "networkpolicy",
            "netpol",
            "np",
            "networkpolicies.networking.k8s.io",
        ] {
            let v = json(&run(&["get", kind, "-n", "shop", "-o", "json"]));
            assert_eq!(v.as_array().map(Vec::len), Some(1), "get {kind}: {v}");
        }
    }
    for kind in ["pods", "po", "endpoints", "ep"] {
        // The workload pod and the host-networked one.
        let v = json(&run(&["get", kind, "-o", "json"]));
        assert_eq!(v.as_array().map(Vec::len), Some(2), "get {kind}: {v}");
        assert_eq!(v[0]["kind"], "HostEndpoint", "get {kind}: {v}");
        assert_eq!(v[1]["kind"], "Endpoint", "get {kind}: {v}");
    }
    let out = run(&["get", "status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // `delete -f` of what `apply -f` stored works, hostNetwork pod and all.
    let out = run(&["delete", "-f", &file]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("networkpolicy shop/deny deleted"));
    assert!(
        stdout(&out).contains("pod shop/node-exporter deleted"),
        "{}",
        stdout(&out)
    );
    let v = json(&run(&["get", "np", "-o", "json"]));
    assert_eq!(v, serde_json::json!([]));
    // Names as kubectl users type them, for delete too.
    let out = run(&["apply", "-f", &file]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["delete", "np", "shop/deny"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&[
        "delete",
        "networkpolicies.networking.k8s.io",
        "deny",
        "-n",
        "shop",
    ]);
    assert_eq!(out.status.code(), Some(1), "already gone");
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
}

#[test]
fn apply_lists_parse_and_validation_errors_together_and_writes_nothing() {
    let server = EtcdServer::start().expect("etcd");
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.yaml", STORED);
    let bad = write(
        dir.path(),
        "bad.yaml",
        "apiVersion: v1beta9\nkind: Namespace\nmetadata: {name: x}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\n\
         spec: {podSelector: {matchLabels: {\"bad key!\": x}}}\n",
    );
    let out = palisade(&["apply", "-f", &good, &bad, "--datastore", &server.url()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("Namespace x: apiVersion"), "{err}");
    assert!(err.contains("NetworkPolicy shop/p"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    let v = json(&palisade(&[
        "get",
        "ns",
        "-o",
        "json",
        "--datastore",
        &server.url(),
    ]));
    assert_eq!(v, serde_json::json!([]));
}
