//! `palisade explain`, run as a real process on the seed example: verdicts, the trace in words
//! and as JSON, unknown pods and addresses.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn explain(extra: &[&str]) -> Output {
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed");
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .arg("explain")
        .arg("-f")
        .arg(seed)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run palisade")
}

fn text(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn denied_names_the_policy_and_the_rule() {
    let out = text(&explain(&[
        "--from",
        "bob/client",
        "--to",
        "myns/backend",
        "--port",
        "6379/TCP",
    ]));
    assert!(
        out.starts_with("DENIED: bob/client -> myns/backend on 6379/TCP"),
        "{out}"
    );
    assert!(out.contains("egress at bob/client: allows"), "{out}");
    assert!(out.contains("no policy selects the pod: open"), "{out}");
    assert!(out.contains("ingress at myns/backend: denies"), "{out}");
    assert!(
        out.contains("tier default: selected by myns/backend-allow-frontend"),
        "{out}"
    );
    assert!(
        out.contains("no rule allowed TCP/6379 from bob/client: denied at end of tier default"),
        "{out}"
    );
    assert!(
        out.contains(r#"myns/backend-allow-frontend rule 0 allows only from pods role == "frontend" in namespace myns on 6379/TCP"#),
        "{out}"
    );
}

#[test]
fn allowed_names_the_deciding_rule() {
    let out = text(&explain(&[
        "--from",
        "bob/client",
        "--to",
        "myns/frontend",
        "--port",
        "443",
    ]));
    assert!(out.starts_with("ALLOWED: "), "{out}");
    assert!(out.contains("by myns/frontend-allow-bob rule 0"), "{out}");
}

#[test]
fn json_trace() {
    let o = explain(&[
        "--from",
        "bob/client",
        "--to",
        "myns/backend",
        "--port",
        "6379/tcp",
        "-o",
        "json",
    ]);
    let v: Value = serde_json::from_str(&text(&o)).expect("json");
    assert_eq!(v["allowed"], false);
    assert_eq!(v["egress"]["isolated"], false);
    assert_eq!(v["egress"]["decision"]["kind"], "open");
    assert_eq!(v["ingress"]["isolated"], true);
    assert_eq!(v["ingress"]["decision"]["kind"], "end_of_tier");
    assert_eq!(v["ingress"]["decision"]["tier"], "default");
    assert_eq!(
        v["ingress"]["tiers"][0]["policies"][0]["name"],
        "backend-allow-frontend"
    );
    let o = explain(&[
        "--from",
        "myns/frontend",
        "--to",
        "myns/backend",
        "--port",
        "6379",
        "-o",
        "json",
    ]);
    let v: Value = serde_json::from_str(&text(&o)).expect("json");
    assert_eq!(v["allowed"], true);
    assert_eq!(v["ingress"]["decision"]["kind"], "rule");
    assert_eq!(v["ingress"]["decision"]["rule"], 0);
    assert_eq!(v["ingress"]["decision"]["action"], "Allow");
}

#[test]
fn address_ends() {
    // An address outside the cluster is in no namespace: the namespaceSelector does not admit it.
    let out = text(&explain(&[
        "--from",
        "192.0.2.7",
        "--to",
        "myns/frontend",
        "--port",
        "443/TCP",
    ]));
    assert!(out.starts_with("DENIED"), "{out}");
    assert!(out.contains("the source is an address, not a pod"), "{out}");
    let out = text(&explain(&[
        "--from",
        "myns/backend",
        "--to",
        "2001:db8::1",
        "--port",
        "icmp",
    ]));
    assert!(out.starts_with("ALLOWED"), "{out}");
}

#[test]
fn unknown_pod_and_bad_end_exit_1() {
    let o = explain(&[
        "--from",
        "bob/nope",
        "--to",
        "myns/frontend",
        "--port",
        "443",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unknown pod bob/nope"), "{err}");
    let o = explain(&[
        "--from",
        "just-a-name",
        "--to",
        "myns/frontend",
        "--port",
        "443",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("expected NAMESPACE/POD or an IP address"),
        "{err}"
    );
}
