//! `palisade explain` and `palisade matrix` with ClusterNetworkPolicies, run as a real process
//! on `examples/cluster-policies`: the tier, the policy and its rule (index and name) that
//! decided, where a Pass sent evaluation, tiers that passed a flow on, host-networked pods,
//! equal priorities, and the JSON trace.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cluster-policies")
}

fn palisade(args: &[&str], files: &[&Path]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_palisade"));
    cmd.arg(args[0]);
    for f in files {
        cmd.arg("-f").arg(f);
    }
    cmd.args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .expect("run palisade")
}

fn ok(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn explain(from: &str, to: &str, port: &str, json: bool) -> String {
    let mut args = vec!["explain", "--from", from, "--to", to, "--port", port];
    if json {
        args.extend(["-o", "json"]);
    }
    ok(&palisade(&args, &[&example()]))
}

#[test]
fn an_admin_deny_names_tier_policy_and_rule() {
    let out = explain("tenant-a/web", "kube-system/coredns", "8080/TCP", false);
    assert!(
        out.starts_with("DENIED: tenant-a/web -> kube-system/coredns on 8080/TCP\n"),
        "{out}"
    );
    assert!(
        out.contains("    tier admin (ClusterNetworkPolicy Admin tier): selected by admin:protect-kube-system (priority 10), admin:allow-monitoring (priority 20)\n"),
        "{out}"
    );
    assert!(
        out.contains(r#"denied TCP/8080 from tenant-a/web by admin:protect-kube-system rule 1 ("deny-tenants"): denies only from all pods in namespaces tenancy == "tenant" on any port"#),
        "{out}"
    );
    // The same flow on DNS is accepted by the rule before it, a named port.
    let out = explain("tenant-b/web", "kube-system/coredns", "53/UDP", false);
    assert!(
        out.contains(
            r#"allowed UDP/53 from tenant-b/web by admin:protect-kube-system rule 0 ("allow-dns")"#
        ),
        "{out}"
    );
    assert!(
        out.contains("on the port named dns, the port named dns-tcp"),
        "{out}"
    );
}

#[test]
fn a_baseline_deny_after_the_admin_tier_passed_the_flow_on() {
    let out = explain("tenant-a/web", "tenant-b/web", "8080/TCP", false);
    assert!(out.starts_with("DENIED"), "{out}");
    assert!(
        out.contains(
            "    tier admin: no rule matched; the tier passes the flow on to tier baseline\n"
        ),
        "{out}"
    );
    assert!(
        out.contains(r#"denied TCP/8080 from tenant-a/web by baseline:tenant-b-isolation rule 0 ("deny-other-tenants")"#),
        "{out}"
    );
    // Egress at the source: the Admin tier selects it, nothing matches, nothing else selects.
    assert!(
        out.contains("    tier admin: no rule matched; the tier passes the flow on to the default allow\n    no tier decided (each passed the flow on): allowed by default\n"),
        "{out}"
    );
}

#[test]
fn a_networkpolicy_decides_before_the_baseline_both_ways() {
    let out = explain("tenant-a/web", "tenant-b/api", "8080/TCP", false);
    assert!(out.starts_with("ALLOWED"), "{out}");
    assert!(
        out.contains("allowed TCP/8080 from tenant-a/web by tenant-b/api-from-tenant-a-web rule 0"),
        "{out}"
    );
    // Its implicit deny is final too: the baseline is not consulted.
    let out = explain("tenant-a/db", "tenant-b/api", "8080/TCP", false);
    assert!(out.starts_with("DENIED"), "{out}");
    assert!(
        out.contains("no rule allowed TCP/8080 from tenant-a/db: denied at end of tier default"),
        "{out}"
    );
}

#[test]
fn a_pass_says_where_evaluation_went_and_host_networked_pods_are_flow_ends() {
    let out = explain("tenant-a/web", "kube-system/node-exporter", "53/UDP", false);
    assert!(out.starts_with("ALLOWED"), "{out}");
    assert!(
        out.contains("  addresses: 10.244.1.20 -> 10.10.0.1\n"),
        "{out}"
    );
    assert!(
        out.contains(r#"    passed by admin:tenants-not-to-nodes rule 0 ("pass-node-local-dns"): evaluation goes on with the default allow"#),
        "{out}"
    );
    assert!(
        out.contains(
            "host-networked pod: no policy selects it (never a ClusterNetworkPolicy subject)"
        ),
        "{out}"
    );
    // Anything else to a node's address is denied by the nodes peer.
    let out = explain(
        "tenant-a/web",
        "kube-system/node-exporter",
        "9100/TCP",
        false,
    );
    assert!(
        out.contains(r#"denied TCP/9100 to kube-system/node-exporter by admin:tenants-not-to-nodes rule 1 ("deny-nodes"): denies only to every node's addresses on any port"#),
        "{out}"
    );
}

#[test]
fn json_trace_has_tiers_rule_names_passes_and_fall_throughs() {
    let v: Value = serde_json::from_str(&explain(
        "tenant-a/web",
        "kube-system/node-exporter",
        "53/UDP",
        true,
    ))
    .expect("json");
    assert_eq!(v["allowed"], true);
    let eg = &v["egress"];
    assert_eq!(
        eg["isolated"], false,
        "a ClusterNetworkPolicy does not isolate"
    );
    assert_eq!(eg["tiers"][0]["tier"], "admin");
    assert_eq!(eg["decision"]["kind"], "passed_all_tiers");
    assert_eq!(eg["noted"][0]["action"], "Pass");
    assert_eq!(eg["noted"][0]["rule"], 0);
    assert_eq!(eg["noted"][0]["name"], "pass-node-local-dns");
    assert_eq!(eg["noted"][0]["next"], "the default allow");
    assert_eq!(v["ingress"]["host_network"], true);
    assert_eq!(v["ingress"]["decision"]["kind"], "open");

    let v: Value =
        serde_json::from_str(&explain("tenant-a/web", "tenant-b/web", "8080", true)).expect("json");
    let ing = &v["ingress"];
    assert_eq!(ing["fell_through"][0]["tier"], "admin");
    assert_eq!(ing["fell_through"][0]["next"], "tier baseline");
    let d = &ing["decision"];
    assert_eq!(d["kind"], "rule");
    assert_eq!(d["policy"]["tier"], "baseline");
    assert_eq!(d["policy"]["name"], "tenant-b-isolation");
    assert_eq!(d["rule"], 0);
    assert_eq!(d["name"], "deny-other-tenants");
    assert_eq!(d["action"], "Deny");
}

const TIE: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: b-allow-tenant-a}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {matchLabels: {tenant: b}}}
  ingress:
    - {name: accept-a, action: Accept, from: [{namespaces: {matchLabels: {tenant: a}}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: a-deny-into-b}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {matchLabels: {tenant: b}}}
  ingress:
    - {name: deny-a, action: Deny, from: [{namespaces: {matchLabels: {tenant: a}}}]}
"#;

#[test]
fn equal_priorities_name_the_choice_and_say_the_api_leaves_it_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tie = dir.path().join("tie.yaml");
    std::fs::write(&tie, TIE).expect("write");
    let args = [
        "explain",
        "--from",
        "tenant-a/web",
        "--to",
        "tenant-b/web",
        "--port",
        "8080",
    ];
    let out = ok(&palisade(&args, &[&example(), &tie]));
    // By name, a-deny-into-b comes first.
    assert!(out.starts_with("DENIED"), "{out}");
    assert!(
        out.contains("by admin:a-deny-into-b rule 0 (\"deny-a\")"),
        "{out}"
    );
    assert!(
        out.contains("note: admin:a-deny-into-b shares priority 5 in tier admin with admin:b-allow-tenant-a, which match this flow too; the API leaves the choice between equal priorities open: Palisade takes admin:a-deny-into-b (first by name)"),
        "{out}"
    );
    let mut json = args.to_vec();
    json.extend(["-o", "json"]);
    let v: Value = serde_json::from_str(&ok(&palisade(&json, &[&example(), &tie]))).expect("json");
    let tie = &v["ingress"]["ties"][0];
    assert_eq!(tie["tier"], "admin");
    assert_eq!(tie["priority"], 5);
    assert_eq!(tie["chosen"]["name"], "a-deny-into-b");
    assert_eq!(tie["also_matching"][0]["name"], "b-allow-tenant-a");
}

#[test]
fn matrix_keeps_its_json_shape_and_lists_host_networked_pods() {
    let out = ok(&palisade(
        &[
            "matrix", "--probe", "9100/TCP", "--probe", "53/UDP", "-o", "json",
        ],
        &[&example()],
    ));
    let v: Value = serde_json::from_str(&out).expect("json");
    let keys: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["pods", "probes"]);
    let pods: Vec<&str> = v["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .map(|p| p.as_str().expect("str"))
        .collect();
    assert_eq!(
        pods,
        [
            "kube-system/coredns",
            "kube-system/node-exporter",
            "monitoring/prometheus",
            "tenant-a/db",
            "tenant-a/web",
            "tenant-b/api",
            "tenant-b/web"
        ]
    );
    let probe = &v["probes"][0];
    let keys: Vec<&str> = probe
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["allowed", "port", "protocol"]);
    let cell = |p: usize, from: usize, to: usize| {
        v["probes"][p]["allowed"][from][to].as_bool().expect("bool")
    };
    // Tenants cannot reach the host-networked node exporter on 9100, Prometheus can; on
    // UDP 53 the Admin tier passes tenants on, and nothing else denies.
    assert!(!cell(0, 4, 1) && !cell(0, 6, 1));
    assert!(cell(0, 2, 1));
    assert!(cell(1, 4, 1) && cell(1, 6, 1));
    // The node exporter is never a subject or a pod peer: the Admin Deny of tenants at
    // kube-system does not apply to it. It runs on tenant-b/api's node: the api's
    // NetworkPolicy does not judge it (node-local traffic), so it reaches the api.
    assert!(cell(0, 1, 5));
}

/// Every `console` block of `examples/cluster-policies/README.md` is the real output of its
/// command (run from the repository root), so the README cannot drift from the binary.
#[test]
fn the_example_readme_shows_real_output() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(example().join("README.md")).expect("README");
    let mut blocks = 0;
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if line != "```console" {
            continue;
        }
        let command = lines.next().expect("a command line");
        let args: Vec<&str> = command
            .strip_prefix("$ palisade ")
            .unwrap_or_else(|| panic!("{command:?} is not a palisade command"))
            .split_whitespace()
            .collect();
        let expected: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        let out = Command::new(env!("CARGO_BIN_EXE_palisade"))
            .args(&args)
            .current_dir(&root)
            .output()
            .expect("run palisade");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim_end(),
            expected.join("\n"),
            "{command}"
        );
        blocks += 1;
    }
    assert!(blocks >= 8, "only {blocks} console blocks");
}
