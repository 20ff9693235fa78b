//! Staged policies at the command line, as real processes: `matrix`/`explain` leave staged
//! policies out unless `--staged`; `explain` says when they would change the verdict; an
//! invalid annotation value is an error naming the field; `apply` + `get networkpolicies`
//! (against a real etcd) show the STAGED column and JSON, and removing the annotation is an
//! ordinary update.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use palisade_store::testing::EtcdServer;
use serde_json::Value;

fn palisade(args: &[&str], datastore: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_palisade"));
    cmd.args(args).stdin(Stdio::null());
    match datastore {
        Some(url) => cmd.env("PALISADE_DATASTORE", url),
        None => cmd.env_remove("PALISADE_DATASTORE"),
    };
    cmd.output().expect("run palisade")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The seed example with `web-deny-all` annotated `palisade.dev/staged: <value>` (or plain,
/// for `None`), in `dir`.
fn seed_with(dir: &Path, value: Option<&str>) -> String {
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed");
    for f in ["namespaces.yaml", "pods.yaml", "web-deny-all.yaml"] {
        let mut text = std::fs::read_to_string(seed.join(f)).unwrap();
        if let (Some(v), "web-deny-all.yaml") = (value, f) {
            text = text.replace(
                "  namespace: default\n",
                &format!(
                    "  namespace: default\n  annotations:\n    palisade.dev/staged: \"{v}\"\n"
                ),
            );
            assert!(text.contains("palisade.dev/staged"), "{text}");
        }
        std::fs::write(dir.join(f), text).unwrap();
    }
    dir.display().to_string()
}

fn allowed(matrix: &Value, from: &str, to: &str) -> bool {
    let pods: Vec<&str> = matrix["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let i = pods.iter().position(|p| *p == from).unwrap();
    let j = pods.iter().position(|p| *p == to).unwrap();
    matrix["probes"][0]["allowed"][i][j].as_bool().unwrap()
}

fn json(o: &Output) -> Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).expect("json")
}

#[test]
fn matrix_and_explain_leave_staged_policies_out_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let seed = seed_with(dir.path(), Some("true"));
    let m = |extra: &[&str]| {
        let mut args = vec!["matrix", "-f", &seed, "--probe", "80", "-o", "json"];
        args.extend(extra);
        json(&palisade(&args, None))
    };
    assert!(allowed(&m(&[]), "bob/client", "default/app-web"));
    assert!(!allowed(&m(&["--staged"]), "bob/client", "default/app-web"));

    let explain = |extra: &[&str]| {
        let mut args = vec![
            "explain",
            "-f",
            &seed,
            "--from",
            "bob/client",
            "--to",
            "default/app-web",
            "--port",
            "80",
        ];
        args.extend(extra);
        palisade(&args, None)
    };
    let out = explain(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("ALLOWED"), "{text}");
    assert!(
        text.contains("staged: with the staged policies enforced (--staged) this flow would be DENIED (staged: default/web-deny-all)"),
        "{text}"
    );
    let v = json(&explain(&["-o", "json"]));
    assert_eq!(v["allowed"], true);
    assert_eq!(v["staged"]["allowed"], false, "{v}");
    assert_eq!(
        v["staged"]["policies"],
        serde_json::json!(["default/web-deny-all"])
    );
    let v = json(&explain(&["-o", "json", "--staged"]));
    assert_eq!(v["allowed"], false);
    assert!(v.get("staged").is_none(), "{v}");

    // "false" enforces: the same as without the annotation.
    let dir = tempfile::tempdir().unwrap();
    let seed = seed_with(dir.path(), Some("false"));
    let v = json(&palisade(
        &["matrix", "-f", &seed, "--probe", "80", "-o", "json"],
        None,
    ));
    assert!(!allowed(&v, "bob/client", "default/app-web"));
}

#[test]
fn a_bad_value_names_the_annotation() {
    let dir = tempfile::tempdir().unwrap();
    let seed = seed_with(dir.path(), Some("yes"));
    let out = palisade(&["validate", "-f", &seed], None);
    assert!(!out.status.success());
    let err = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        err.contains("metadata.annotations[\"palisade.dev/staged\"]") && err.contains("\"yes\""),
        "{err}"
    );
}

#[test]
fn get_shows_staged_and_unstaging_is_an_update() {
    let server = EtcdServer::start().expect("etcd");
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let seed = seed_with(dir.path(), Some("true"));
    let out = palisade(&["apply", "-f", &seed], Some(&url));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = palisade(&["get", "networkpolicies", "-n", "default"], Some(&url));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].split_whitespace().any(|c| c == "STAGED"), "{text}");
    assert!(lines[1].split_whitespace().last() == Some("true"), "{text}");
    let v = json(&palisade(
        &["get", "networkpolicies", "-n", "default", "-o", "json"],
        Some(&url),
    ));
    assert_eq!(v[0]["spec"]["staged"], true, "{v}");
    let m = json(&palisade(
        &["matrix", "--probe", "80", "-o", "json"],
        Some(&url),
    ));
    assert!(allowed(&m, "bob/client", "default/app-web"));

    let dir = tempfile::tempdir().unwrap();
    let plain = seed_with(dir.path(), None);
    let out = palisade(&["apply", "-f", &plain], Some(&url));
    assert!(
        stdout(&out).contains("networkpolicy default/web-deny-all updated"),
        "{}",
        stdout(&out)
    );
    let v = json(&palisade(
        &["get", "networkpolicies", "-n", "default", "-o", "json"],
        Some(&url),
    ));
    assert_eq!(v[0]["spec"]["staged"], false, "{v}");
    let m = json(&palisade(
        &["matrix", "--probe", "80", "-o", "json"],
        Some(&url),
    ));
    assert!(!allowed(&m, "bob/client", "default/app-web"));
}
