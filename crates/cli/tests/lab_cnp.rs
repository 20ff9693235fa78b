//! ClusterNetworkPolicies in the kernel: `examples/cluster-policies` (Admin, NetworkPolicy and
//! Baseline tiers, Accept, Deny and Pass) on a real lab of network namespaces, on both
//! dataplanes; the packets must match the engine on every pair, also after
//! `lab delete clusternetworkpolicy` and `lab apply` of one. Root only (skipped otherwise).
//!
//! The example's Node manifests make the lab's nodes, and its host-networked node exporter
//! runs in node-1's namespace on node-1's address; `lab probe` includes it.

use std::path::Path;

use serde_json::Value;

mod common;

use common::lab::{ok, run, LabGuard};

/// Probes every pair on the example's ports: the report, after checking that the packets
/// matched the engine.
fn probe(name: &str) -> Value {
    let out = run(&[
        "lab", "--name", name, "probe", "--probe", "8080/TCP", "--probe", "9090/TCP", "--probe",
        "53/UDP", "-o", "json",
    ]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("probe json");
    assert!(
        out.status.success(),
        "packets differ from the engine: {}",
        report["mismatches"]
    );
    report
}

/// Whether `from` reached `to` on probe `p` (index into the probes).
fn reached(report: &Value, p: usize, from: &str, to: &str) -> bool {
    let pods: Vec<&str> = report["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .map(|v| v.as_str().expect("pod"))
        .collect();
    let i = pods.iter().position(|x| *x == from).expect("from pod");
    let j = pods.iter().position(|x| *x == to).expect("to pod");
    report["probes"][p]["allowed"][i][j]
        .as_bool()
        .expect("bool")
}

fn tiers_in_the_kernel(dataplane: &str) {
    // SAFETY: geteuid has no side effects.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: needs root (it creates network namespaces)");
        return;
    }
    let name = format!("tcnp{}-{}", &dataplane[..3], std::process::id());
    let _guard = LabGuard(name.clone());
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cluster-policies");
    let example = example.display().to_string();
    ok(&[
        "lab",
        "--name",
        &name,
        "up",
        "-f",
        &example,
        "--dataplane",
        dataplane,
    ]);

    let r = probe(&name);
    // Admin Deny: tenants reach kube-system only on DNS (Admin Accept by named port).
    assert!(!reached(&r, 0, "tenant-a/web", "kube-system/coredns"));
    assert!(reached(&r, 2, "tenant-a/web", "kube-system/coredns"));
    // Baseline Deny between tenants; tenant b's NetworkPolicy opens its api to a's web only.
    assert!(!reached(&r, 0, "tenant-a/web", "tenant-b/web"));
    assert!(reached(&r, 0, "tenant-a/web", "tenant-b/api"));
    assert!(!reached(&r, 0, "tenant-a/db", "tenant-b/api"));
    // Admin Accept: Prometheus scrapes the api's metrics port despite its NetworkPolicy.
    assert!(reached(&r, 1, "monitoring/prometheus", "tenant-b/api"));
    assert!(!reached(&r, 0, "monitoring/prometheus", "tenant-b/api"));

    // Without the baseline isolation of tenant b, its web is open; with it back, closed.
    ok(&[
        "lab",
        "--name",
        &name,
        "delete",
        "clusternetworkpolicy",
        "tenant-b-isolation",
    ]);
    let r = probe(&name);
    assert!(reached(&r, 0, "tenant-a/web", "tenant-b/web"));
    let isolation = format!("{example}/baseline-tenant-isolation.yaml");
    ok(&["lab", "--name", &name, "apply", "-f", &isolation]);
    let r = probe(&name);
    assert!(!reached(&r, 0, "tenant-a/web", "tenant-b/web"));
    // `lab apply` keeps the rule names of the ClusterNetworkPolicy it applies.
    let names = palisade_lab::LabNames::new(&name).expect("lab name");
    let cluster: palisade_model::Cluster = serde_json::from_value(
        palisade_lab::control::call(
            &names.socket(),
            &palisade_lab::control::Request::Cluster,
            std::time::Duration::from_secs(10),
        )
        .expect("the lab's cluster"),
    )
    .expect("a cluster");
    let id = cluster
        .policies
        .iter()
        .find(|p| p.id.name == "tenant-b-isolation")
        .map(|p| p.id.clone())
        .expect("re-applied policy");
    assert!(
        cluster.rule_names.get(&id).is_some_and(|n| n
            .ingress
            .iter()
            .chain(&n.egress)
            .any(|r| r == "deny-other-tenants")),
        "rule names of {id} lost by lab apply: {:?}",
        cluster.rule_names.get(&id)
    );
}

#[test]
fn tiers_in_the_kernel_nftables() {
    tiers_in_the_kernel("nftables");
}

#[test]
fn tiers_in_the_kernel_iptables() {
    tiers_in_the_kernel("iptables");
}
