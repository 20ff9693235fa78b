//! `palisade matrix`, run as a real process on the seed example and on a small fixture with
//! addresses, named ports and ipBlocks: the exact JSON shape, the table, exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn palisade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run palisade")
}

fn seed() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/seed")
        .display()
        .to_string()
}

fn json(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "palisade failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("valid JSON on stdout")
}

fn cell(v: &Value, probe: usize, from: &str, to: &str) -> bool {
    let pods: Vec<&str> = v["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .map(|p| p.as_str().expect("pod name"))
        .collect();
    let i = pods.iter().position(|p| *p == from).expect("from pod");
    let j = pods.iter().position(|p| *p == to).expect("to pod");
    v["probes"][probe]["allowed"][i][j]
        .as_bool()
        .expect("bool cell")
}

#[test]
fn seed_json_shape_and_cells() {
    let s = seed();
    let v = json(&palisade(&[
        "matrix", "-f", &s, "--probe", "6379/TCP", "--probe", "443", "--probe", "ICMP", "-o",
        "json",
    ]));
    let obj = v.as_object().expect("object");
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["pods", "probes"]);
    let pods: Vec<String> = v["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .map(|p| p.as_str().expect("str").to_string())
        .collect();
    let mut sorted = pods.clone();
    sorted.sort();
    assert_eq!(pods, sorted, "pods sorted by ns/name");
    assert!(pods.contains(&"myns/backend".to_string()));
    let probes = v["probes"].as_array().expect("probes");
    assert_eq!(probes.len(), 3);
    for p in probes {
        let keys: Vec<&String> = p.as_object().expect("probe object").keys().collect();
        assert_eq!(keys, ["allowed", "port", "protocol"]);
        let rows = p["allowed"].as_array().expect("rows");
        assert_eq!(rows.len(), pods.len());
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row.as_array().expect("row").len(), pods.len());
            assert_eq!(row[i], Value::Bool(true), "a pod reaches itself");
        }
    }
    assert_eq!(
        (&probes[0]["port"], &probes[0]["protocol"]),
        (&Value::from(6379), &Value::from("TCP"))
    );
    assert_eq!(
        (&probes[1]["port"], &probes[1]["protocol"]),
        (&Value::from(443), &Value::from("TCP"))
    );
    assert_eq!(
        (&probes[2]["port"], &probes[2]["protocol"]),
        (&Value::from(0), &Value::from("ICMP"))
    );
    // backend admits TCP 6379 from frontend of myns only.
    assert!(cell(&v, 0, "myns/frontend", "myns/backend"));
    assert!(!cell(&v, 0, "bob/client", "myns/backend"));
    assert!(
        !cell(&v, 2, "myns/frontend", "myns/backend"),
        "ICMP is not TCP 6379"
    );
    // frontend admits TCP 443 from namespaces labelled user=bob.
    assert!(cell(&v, 1, "bob/client", "myns/frontend"));
    assert!(!cell(&v, 1, "myns/backend", "myns/frontend"));
    // The unselected direction stays open.
    assert!(cell(&v, 0, "myns/backend", "bob/client"));
}

#[test]
fn seed_table() {
    let s = seed();
    let o = palisade(&["matrix", "-f", &s, "--probe", "6379/tcp"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("probe 6379/TCP: "), "{out}");
    assert!(out.contains("pairs allowed (from = rows, to = columns; ✓ allowed, · denied)"));
    for ns in ["bob", "default", "myns"] {
        assert!(
            out.lines().any(|l| l.starts_with(ns)),
            "namespace row {ns}:\n{out}"
        );
    }
    let backend = out
        .lines()
        .find(|l| l.contains(" backend"))
        .expect("backend row");
    assert!(backend.contains('✓') && backend.contains('·'), "{backend}");
}

const FIXTURE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: app}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: app, labels: {app: web}}
spec:
  containers:
    - name: web
      image: nginx
      ports: [{name: http, containerPort: 8080, protocol: TCP}]
status:
  podIPs: [{ip: 10.1.0.1}, {ip: "fd00::1"}]
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: app, labels: {app: api}}
spec:
  containers:
    - name: api
      image: api
      ports: [{name: http, containerPort: 9000, protocol: TCP}]
status:
  podIPs: [{ip: 10.1.0.2}]
---
apiVersion: v1
kind: Pod
metadata: {name: outsider, namespace: app, labels: {app: other}}
spec:
  containers: [{name: c, image: busybox}]
status:
  podIPs: [{ip: 10.2.0.9}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named-http, namespace: app}
spec:
  podSelector: {}
  ingress:
    - from: [{ipBlock: {cidr: 10.1.0.0/16}}]
      ports: [{port: http}]
"#;

fn fixture() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("all.yaml");
    std::fs::write(&path, FIXTURE).expect("write fixture");
    (dir, path)
}

#[test]
fn named_ports_and_ip_blocks() {
    let (_dir, path) = fixture();
    let p = path.display().to_string();
    let v = json(&palisade(&[
        "matrix", "-f", &p, "--probe", "8080", "--probe", "9000/TCP", "-o", "json",
    ]));
    // Named port http resolves on the destination: 8080 on web, 9000 on api.
    assert!(cell(&v, 0, "app/api", "app/web"));
    assert!(!cell(&v, 0, "app/web", "app/api"));
    assert!(cell(&v, 1, "app/web", "app/api"));
    // The ipBlock admits 10.1.0.0/16 only.
    assert!(!cell(&v, 0, "app/outsider", "app/web"));
    assert!(!cell(&v, 1, "app/outsider", "app/api"));
}

#[test]
fn bad_probe_is_a_usage_error() {
    let s = seed();
    let o = palisade(&["matrix", "-f", &s, "--probe", "80/XYZ"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unknown protocol"), "{err}");
}

#[test]
fn invalid_manifests_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x, namespace: a}\nspec:\n  podSelector: {}\n  ingress:\n    - from: [{ipBlock: {cidr: not-a-cidr}}]\n",
    )
    .expect("write");
    let o = palisade(&["matrix", "-f", &path.display().to_string(), "--probe", "80"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
}
