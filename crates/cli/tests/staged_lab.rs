//! Staged policies on real network namespaces (root only; skips otherwise), on the seed lab
//! with `web-deny-all` staged (`palisade.dev/staged: "true"`), both dataplanes:
//!
//! * curl from `bob/client` to `default/app-web` still works, and `palisade drops -o json`
//!   shows the would-drop naming `default/web-deny-all` with `"staged": true`; `lab probe`
//!   (which expects what the engine says, staged policies left out) matches;
//! * `lab apply` of the plain policy (annotation removed) blocks the traffic;
//! * with `web-deny-all` enforced, a staged policy allowing `bob` in: curl is still blocked,
//!   and the drop is reported with `"staged_allow": true`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::lab::{json_lines, ok, run, skip_unless_root, LabGuard};

static ONE_LAB_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

const WEB_DENY_ALL: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
metadata: {name: web-deny-all, namespace: default}\n\
spec: {podSelector: {matchLabels: {app: web}}, policyTypes: [Ingress], ingress: []}\n";

const STAGED_WEB_DENY_ALL: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
metadata: {name: web-deny-all, namespace: default, annotations: {palisade.dev/staged: \"true\"}}\n\
spec: {podSelector: {matchLabels: {app: web}}, policyTypes: [Ingress], ingress: []}\n";

const STAGED_WEB_ALLOW_BOB: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
metadata: {name: web-allow-bob, namespace: default, annotations: {palisade.dev/staged: \"true\"}}\n\
spec: {podSelector: {matchLabels: {app: web}}, ingress: [{from: [{namespaceSelector: {matchLabels: {user: bob}}}]}]}\n";

/// The seed scenario with `web-deny-all` staged, in `dir`.
fn staged_seed(dir: &Path) -> String {
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed");
    for f in [
        "namespaces.yaml",
        "pods.yaml",
        "backend-allow-frontend.yaml",
        "frontend-allow-bob.yaml",
    ] {
        std::fs::copy(seed.join(f), dir.join(f)).expect("copy seed");
    }
    std::fs::write(dir.join("web-deny-all.yaml"), STAGED_WEB_DENY_ALL).unwrap();
    dir.display().to_string()
}

fn pod_ip(status: &Value, pod: &str) -> String {
    status["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .find(|p| p["pod"] == pod)
        .and_then(|p| p["ip"].as_str())
        .unwrap_or_else(|| panic!("no pod {pod} in {status}"))
        .to_string()
}

fn curl_from_bob(lab: &str, url: &str) -> bool {
    let out = run(&[
        "lab",
        "--name",
        lab,
        "exec",
        "bob/client",
        "--",
        "curl",
        "-s",
        "-m",
        "1",
        url,
    ]);
    if std::env::var_os("STAGED_LAB_DEBUG").is_some() {
        eprintln!(
            "curl {url}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status.success()
}

/// Curls until the result is `want` (the agents apply a change within moments).
fn curl_until(lab: &str, url: &str, want: bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while curl_from_bob(lab, url) != want {
        assert!(Instant::now() < deadline, "{what}");
    }
}

/// Curls (each one logs) until `drops -o json` has an entry `pred` accepts.
fn curl_until_drop(lab: &str, url: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        curl_from_bob(lab, url);
        let drops = json_lines(&["drops", "--lab", lab, "-o", "json"]);
        if let Some(d) = drops.iter().find(|d| pred(d)) {
            return d.clone();
        }
        assert!(Instant::now() < deadline, "no such drop in {drops:?}");
    }
}

fn bob_to_web(d: &Value) -> bool {
    d["from"] == "bob/client"
        && d["to"] == "default/app-web"
        && d["port"] == 80
        && d["direction"] == "ingress"
        && d["endpoint"] == "default/app-web"
}

#[test]
fn staged_web_deny_all_on_the_seed_lab() {
    if skip_unless_root("staged_web_deny_all_on_the_seed_lab") {
        return;
    }
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // (iptables under ptp: with the bridge CNI, iptables' anti-spoofing `physdev` bindings
    // drop every routed pod packet in this lab, staged or not.)
    for (dataplane, cni) in [("nftables", "bridge"), ("iptables", "ptp")] {
        staged_case(dataplane, cni);
    }
}

fn staged_case(dataplane: &str, cni: &str) {
    let name = format!("staged-{}-{}", &dataplane[..3], std::process::id());
    let _guard = LabGuard(name.clone());
    let dir = tempfile::tempdir().unwrap();
    let seed = staged_seed(dir.path());
    let status: Value = serde_json::from_str(&ok(&[
        "lab",
        "--name",
        &name,
        "up",
        "-f",
        &seed,
        "--dataplane",
        dataplane,
        "--cni",
        cni,
        "-o",
        "json",
    ]))
    .expect("lab up JSON");
    let url = format!("http://{}/", pod_ip(&status, "default/app-web"));

    // Staged: curl works, the would-drop is reported.
    curl_until(&name, &url, true, "a staged deny-all must not block");
    let d = curl_until_drop(&name, &url, |d| bob_to_web(d) && d["staged"] == true);
    assert_eq!(
        d["policy"],
        serde_json::json!(["default/web-deny-all"]),
        "{dataplane}: {d}"
    );
    let table = ok(&["drops", "--lab", &name]);
    assert!(table.contains("would-drop"), "{table}");
    // The prober expects what the engine says (staged policies left out) and gets it.
    let out = run(&[
        "lab", "--name", &name, "probe", "--probe", "80/TCP", "-o", "json",
    ]);
    assert!(
        out.status.success(),
        "{dataplane}: probe mismatches: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The annotation removed: an ordinary update that enforces the policy.
    let plain = dir.path().join("plain.yaml");
    std::fs::write(&plain, WEB_DENY_ALL).unwrap();
    ok(&[
        "lab",
        "--name",
        &name,
        "apply",
        "-f",
        &plain.display().to_string(),
    ]);
    curl_until(&name, &url, false, "the enforced deny-all must block");

    // Enforced deny-all, staged allow from bob: still blocked, reported as a staged allow.
    let allow = dir.path().join("allow.yaml");
    std::fs::write(&allow, STAGED_WEB_ALLOW_BOB).unwrap();
    ok(&[
        "lab",
        "--name",
        &name,
        "apply",
        "-f",
        &allow.display().to_string(),
    ]);
    let d = curl_until_drop(&name, &url, |d| bob_to_web(d) && d["staged_allow"] == true);
    assert!(!curl_from_bob(&name, &url), "a staged allow must not allow");
    assert_eq!(d["tier"], "default", "{d}");
    assert!(d.get("staged").is_none(), "{d}");
}
