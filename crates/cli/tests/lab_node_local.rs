//! Traffic between a pod and its own node is not judged by NetworkPolicies (Kubernetes:
//! "always allowed"), in the kernel of a real lab, on both dataplanes and both families: a
//! host-networked pod on the node of a default-deny pod reaches it and is reached by it (the
//! kubelet's probes), one on another node does not and is not. `lab probe` checks every pair
//! against the engine. Root only (skipped otherwise).

use std::path::Path;

use serde_json::Value;

mod common;

use common::lab::{lab_lock, ok, run, skip_unless_root, LabGuard};

fn reached(report: &Value, from: &str, to: &str) -> bool {
    let pods: Vec<&str> = report["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .map(|v| v.as_str().expect("pod"))
        .collect();
    let i = pods.iter().position(|x| *x == from).expect("from pod");
    let j = pods.iter().position(|x| *x == to).expect("to pod");
    report["probes"][0]["allowed"][i][j]
        .as_bool()
        .expect("bool")
}

fn node_local(dataplane: &str) {
    if skip_unless_root("node_local") {
        return;
    }
    let _lock = lab_lock();
    let name = format!("hostlocal{}-{}", &dataplane[..3], std::process::id());
    let _guard = LabGuard(name.clone());
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node_local/cluster.yaml");
    let manifests = manifests.display().to_string();
    ok(&[
        "lab",
        "--name",
        &name,
        "up",
        "-f",
        &manifests,
        "--dataplane",
        dataplane,
        "--ip-family",
        "dual",
    ]);
    for family in ["ipv4", "ipv6"] {
        let out = run(&[
            "lab", "--name", &name, "probe", "--probe", "8080/TCP", "--family", family, "-o",
            "json",
        ]);
        let r: Value = serde_json::from_slice(&out.stdout).expect("probe json");
        assert!(
            out.status.success(),
            "{family}: packets differ from the engine: {}",
            r["mismatches"]
        );
        let (web, own, other) = ("app/web", "kube-system/kubelet-1", "kube-system/kubelet-2");
        assert!(reached(&r, own, web), "{family}: own node -> pod");
        assert!(reached(&r, web, own), "{family}: pod -> own node");
        assert!(!reached(&r, other, web), "{family}: other node -> pod");
        assert!(!reached(&r, web, other), "{family}: pod -> other node");
    }
}

#[test]
fn node_local_traffic_is_allowed_nftables() {
    node_local("nftables");
}

#[test]
fn node_local_traffic_is_allowed_iptables() {
    node_local("iptables");
}
