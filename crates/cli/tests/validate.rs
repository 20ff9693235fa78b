//! `palisade validate`, run as a real process: exit codes, summaries, every error listed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn palisade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run palisade")
}

fn with_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run palisade");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for palisade")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write temp file");
    path.display().to_string()
}

const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n";

const BAD_POLICY: &str = r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np, namespace: a}
spec:
  policyTypes: [Ingress, Sideways]
  ingress:
  - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16]}}]
    ports: [{port: 100, endPort: 50}, {protocol: ICMP}]
"#;

#[test]
fn seed_example_is_valid() {
    let seed = examples().join("seed");
    let out = palisade(&["validate", "-f", seed.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "ok: 3 namespaces, 5 pods, 3 networkpolicies"
    );
    assert_eq!(stderr(&out), "");
}

#[test]
fn every_example_is_valid() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(examples())
        .expect("list examples")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 3, "examples: {dirs:?}");
    for dir in dirs {
        let out = palisade(&["validate", "-f", dir.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            dir.display(),
            stderr(&out)
        );
        assert!(stdout(&out).starts_with("ok: "), "{}", stdout(&out));
    }
}

#[test]
fn invalid_input_lists_every_error_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let ns = write(dir.path(), "ns.yaml", NAMESPACE);
    let bad = write(
        dir.path(),
        "bad.yaml",
        &format!("{NAMESPACE}---\n{BAD_POLICY}"),
    );
    let broken = write(dir.path(), "broken.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{ports: [{containerPort: http}]}]}\n");
    let out = palisade(&["validate", "-f", &ns, "-f", &bad, &broken]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 5, "{err}");
    let at = format!("error: {bad}: document 1: NetworkPolicy a/np: ");
    assert_eq!(
        lines[..4],
        [
            format!("{at}spec.policyTypes[1]: unknown policy type \"Sideways\": must be Ingress or Egress"),
            format!("{at}spec.ingress[0].from[0].ipBlock.except[0]: \"192.168.0.0/16\" must be strictly inside cidr 10.0.0.0/8"),
            format!("{at}spec.ingress[0].ports[0].endPort: endPort 50 must not be below port 100"),
            format!("{at}spec.ingress[0].ports[1].protocol: unsupported protocol \"ICMP\": must be TCP, UDP or SCTP"),
        ]
    );
    assert!(
        lines[4].starts_with(&format!("error: {broken}: document 0: Pod default/p: spec.containers[0].ports[0].containerPort: ")),
        "{}",
        lines[4]
    );
    assert!(err.contains("invalid: 5 error(s)"), "{err}");
}

#[test]
fn invalid_input_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(dir.path(), "bad.yaml", BAD_POLICY);
    let out = palisade(&["validate", "-o", "json", "-f", &bad]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json on stdout");
    assert_eq!(v["valid"], false);
    let errors = v["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 4);
    assert_eq!(
        errors[2],
        serde_json::json!({
            "file": bad,
            "document": 0,
            "item": null,
            "object": "NetworkPolicy a/np",
            "field": "spec.ingress[0].ports[0].endPort",
            "message": "endPort 50 must not be below port 100",
        })
    );
}

#[test]
fn valid_input_as_json_and_skipped_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{NAMESPACE}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: h, namespace: a}}\nspec: {{hostNetwork: true}}\n");
    let f = write(dir.path(), "all.yaml", &text);
    let out = palisade(&["validate", "-f", &f, "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json on stdout");
    assert_eq!(v["valid"], true);
    assert_eq!(v["namespaces"], 1);
    assert_eq!(v["pods"], 1);
    assert_eq!(v["endpoints"], 0);
    assert_eq!(v["host_network_pods"], 1);
    assert_eq!(v["skipped"]["Deployment"], 1);

    let out = palisade(&["validate", "-f", &f]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out)
        .contains("warning: skipped objects of kinds Palisade does not use: Deployment (1)"));
    assert_eq!(
        stdout(&out).trim(),
        "ok: 1 namespaces, 1 pods, 0 networkpolicies (1 host-networked pod(s): flow ends with their node's address, never selected)"
    );
}

#[test]
fn reads_standard_input() {
    let out = with_stdin(&["validate", "-f", "-"], NAMESPACE);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "ok: 1 namespaces, 0 pods, 0 networkpolicies"
    );
    let out = with_stdin(&["validate", "-f", "-"], BAD_POLICY);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("error: <stdin>: document 0: NetworkPolicy a/np"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unknown_api_version_is_an_error() {
    let out = with_stdin(
        &["validate", "-f", "-"],
        "apiVersion: networking.k8s.io/v1beta1\nkind: NetworkPolicy\nmetadata: {name: old}\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("NetworkPolicy default/old: apiVersion: unsupported apiVersion \"networking.k8s.io/v1beta1\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn missing_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let out = palisade(&["validate", "-f", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("error: cannot read {}", missing.display())),
        "{}",
        stderr(&out)
    );
}

#[test]
fn filename_is_required() {
    let out = palisade(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "clap usage error");
}

#[test]
fn a_directory_without_manifests_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "notes.txt", "not a manifest");
    let out = palisade(&["validate", "-f", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no manifest files"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn several_values_after_one_flag_and_repeated_flags_agree() {
    let seed = examples().join("seed");
    let file = |name: &str| seed.join(name).display().to_string();
    let (ns, pods, web) = (
        file("namespaces.yaml"),
        file("pods.yaml"),
        file("web-deny-all.yaml"),
    );
    let a = palisade(&["validate", "-f", &ns, &pods, &web]);
    let b = palisade(&["validate", "-f", &ns, "-f", &pods, "--filename", &web]);
    assert_eq!(a.status.code(), Some(0), "{}", stderr(&a));
    assert_eq!(stdout(&a), stdout(&b));
    assert_eq!(
        stdout(&a).trim(),
        "ok: 3 namespaces, 5 pods, 1 networkpolicies"
    );
}
