//! The ClusterNetworkPolicy conformance suite (`conformance/cnp/`) through real labs: the
//! upstream model's namespaces, its two nodes (from their Node manifests, with their
//! addresses) and its pods, two of them host-networked, on both dataplanes. One lab per
//! dataplane replays every case step by step with `lab apply` and `lab delete` and probes after
//! each step: the packets must match the engine on every pair (`lab probe` reports no
//! mismatch) and every poke of the fixture must come out as it says. A subset runs through
//! etcd with `palisade agent` processes. Root only (skipped otherwise).

mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Instant;

use common::conformance::{case_slugs_in, cnp_root, Case, ObjectKey, Objects};
use common::lab::{lab_lock, ok, run, skip_unless_root, LabGuard};
use serde_json::Value;

/// How a lab of the suite is made.
struct Setup<'a> {
    tag: &'a str,
    dataplane: &'a str,
    cni: &'a str,
    datastore: &'a str,
}

/// `lab delete` arguments for a policy key.
fn delete_args(key: &ObjectKey) -> (String, String) {
    let target = match &key.namespace {
        Some(ns) => format!("{ns}/{}", key.name),
        None => key.name.clone(),
    };
    (key.kind.to_lowercase(), target)
}

/// Replays `slugs` on the running lab `name`; the report of everything that went wrong.
fn replay(name: &str, slugs: &[String]) -> String {
    let suite = cnp_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut report = String::new();
    for slug in slugs {
        let case = Case::load_from(&suite, slug).expect("case");
        // Policies the lab has because of this case (deleted when it ends).
        let mut live: BTreeSet<ObjectKey> = BTreeSet::new();
        for (i, step) in case.steps.iter().enumerate() {
            let at = format!("{slug} step {}", i + 1);
            if !step.apply.is_empty() {
                let mut objects = Objects::default();
                for o in &step.apply {
                    objects.apply(o.clone()).expect("fixture object");
                }
                for (key, _) in objects.iter() {
                    live.insert(key.clone());
                }
                let file = dir.path().join("step.yaml");
                std::fs::write(&file, objects.to_yaml().expect("yaml")).expect("write");
                let out = run(&[
                    "lab",
                    "--name",
                    name,
                    "apply",
                    "-f",
                    &file.to_string_lossy(),
                ]);
                if !out.status.success() {
                    let _ = writeln!(
                        report,
                        "{at}: apply failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    continue;
                }
            }
            for key in &step.delete {
                let (kind, target) = delete_args(key);
                let out = run(&["lab", "--name", name, "delete", &kind, &target]);
                if !out.status.success() {
                    let _ = writeln!(
                        report,
                        "{at}: delete {key} failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                live.remove(key);
            }
            // A blocked probe waits out its timeout: 300 ms keeps the suite short and is far
            // above a lab's round trip.
            let mut args: Vec<String> = [
                "lab",
                "--name",
                name,
                "probe",
                "--timeout-ms",
                "300",
                "-o",
                "json",
            ]
            .map(String::from)
            .to_vec();
            for p in step.probes() {
                args.push("--probe".into());
                args.push(p.to_string());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = run(&args);
            let Ok(result) = serde_json::from_slice::<Value>(&out.stdout) else {
                let _ = writeln!(
                    report,
                    "{at}: probe failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                continue;
            };
            if let Some(m) = result["mismatches"].as_array().filter(|m| !m.is_empty()) {
                let _ = writeln!(report, "{at}: packets differ from the engine: {m:?}");
            }
            let pods: Vec<&str> = result["pods"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let probes: Vec<String> = step.probes().iter().map(|p| p.to_string()).collect();
            for poke in &step.pokes {
                let k = probes.iter().position(|p| *p == poke.probe.to_string());
                let i = pods.iter().position(|p| *p == poke.from);
                let j = pods.iter().position(|p| *p == poke.to);
                let (Some(k), Some(i), Some(j)) = (k, i, j) else {
                    let _ = writeln!(report, "{at}: {poke}: not in the probe's output");
                    continue;
                };
                let seen = result["probes"][k]["allowed"][i][j].as_bool();
                if seen != Some(poke.allowed) {
                    let _ = writeln!(report, "{at}: expected {poke}, packets say {seen:?}");
                }
            }
        }
        // The next case starts from the base.
        for key in live.iter().filter(|k| k.kind.contains("NetworkPolicy")) {
            let (kind, target) = delete_args(key);
            let out = run(&["lab", "--name", name, "delete", &kind, &target]);
            if !out.status.success() {
                let _ = writeln!(
                    report,
                    "{slug}: cleanup: delete {key} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    report
}

fn conformance_on(setup: &Setup, slugs: &[String]) {
    let _lock = lab_lock();
    let name = format!("labcnp-{}-{}", setup.tag, std::process::id());
    let _guard = LabGuard(name.clone());
    let base = cnp_root().join("base");
    let status: Value = serde_json::from_str(&ok(&[
        "lab",
        "--name",
        &name,
        "up",
        "-f",
        &base.to_string_lossy(),
        "--dataplane",
        setup.dataplane,
        "--cni",
        setup.cni,
        "--datastore",
        setup.datastore,
        "-o",
        "json",
    ]))
    .expect("status json");
    // The nodes are the Node manifests', with their addresses; the host-networked pods have
    // them.
    let nodes: Vec<(String, Vec<String>)> = status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            let addresses = n["addresses"].as_array().expect("addresses");
            let addresses = addresses.iter().map(|a| a.as_str().unwrap().to_string());
            (n["name"].as_str().unwrap().to_string(), addresses.collect())
        })
        .collect();
    assert_eq!(
        nodes,
        [
            ("kind-worker".to_string(), vec!["172.18.0.2".to_string()]),
            ("kind-worker2".to_string(), vec!["172.18.0.3".to_string()])
        ]
    );
    let host: Vec<(&str, &str, &str)> = status["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .filter(|p| p["host_network"] == true)
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap();
            (s("pod"), s("node"), s("ip"))
        })
        .collect();
    assert_eq!(
        host,
        [
            (
                "network-policy-conformance-forbidden-forrest/centaur-0",
                "kind-worker",
                "172.18.0.2"
            ),
            (
                "network-policy-conformance-forbidden-forrest/centaur-1",
                "kind-worker2",
                "172.18.0.3"
            )
        ]
    );
    let netns: Vec<String> = status["nodes"]
        .as_array()
        .into_iter()
        .chain(status["pods"].as_array())
        .flatten()
        .filter_map(|o| o["netns"].as_str().map(str::to_string))
        .collect();
    let started = Instant::now();
    let report = replay(&name, slugs);
    eprintln!(
        "{} ClusterNetworkPolicy cases on {} ({}, {}) in {:.1}s",
        slugs.len(),
        setup.dataplane,
        setup.cni,
        setup.datastore,
        started.elapsed().as_secs_f64()
    );
    if report.is_empty() {
        // `lab down` removes every node's and pod's namespace.
        let down: Value =
            serde_json::from_str(&ok(&["lab", "--name", &name, "down", "-o", "json"]))
                .expect("down json");
        let removed: BTreeSet<&str> = down["namespaces_removed"]
            .as_array()
            .expect("namespaces_removed")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let listed = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list");
        let listed = String::from_utf8_lossy(&listed.stdout);
        for n in &netns {
            assert!(removed.contains(n.as_str()), "{n} not removed: {down}");
            assert!(!listed.contains(n.as_str()), "{n} still exists");
        }
    } else {
        let kept = format!("/tmp/{name}-daemon.log");
        let _ = std::fs::copy(format!("/run/palisade/lab/{name}/daemon.log"), &kept);
        panic!(
            "ClusterNetworkPolicy conformance through the lab on {} failed (daemon log: {kept}):\n{report}",
            setup.dataplane
        );
    }
}

/// With Node manifests `--nodes` may be left out (the suite does); given, it must be their
/// number: a usage error otherwise, before anything is made.
#[test]
fn nodes_must_match_the_node_manifests() {
    if skip_unless_root("nodes_must_match_the_node_manifests") {
        return;
    }
    let base = cnp_root().join("base");
    let name = format!("labcnp-n-{}", std::process::id());
    let _guard = LabGuard(name.clone());
    let out = run(&[
        "lab",
        "--name",
        &name,
        "up",
        "-f",
        &base.to_string_lossy(),
        "--nodes",
        "3",
        "--no-agents",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--nodes 3") && stderr.contains("2 Node manifest"),
        "{stderr}"
    );
    let status = run(&["lab", "--name", &name, "status"]);
    assert!(!status.status.success(), "nothing was made");
}

/// Two Nodes with an address of each family (in different orders), a pod and a
/// host-networked pod on each, and a pod that admits only node w2's IPv6 address.
const DUAL_STACK_NODES: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: w1, labels: {role: a}}
status:
  addresses:
  - {type: InternalIP, address: 192.168.77.1}
  - {type: InternalIP, address: fd77::1}
---
apiVersion: v1
kind: Node
metadata: {name: w2, labels: {role: b}}
status:
  addresses:
  - {type: InternalIP, address: fd77::2}
  - {type: ExternalIP, address: 192.168.77.2}
---
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
spec: {nodeName: w1, containers: [{name: c, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {app: b}}
spec: {nodeName: w2, containers: [{name: c, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: h1, namespace: x}
spec: {nodeName: w1, hostNetwork: true, containers: [{name: c, ports: [{containerPort: 9100}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: h2, namespace: x}
spec: {nodeName: w2, hostNetwork: true, containers: [{name: c, ports: [{containerPort: 9100}]}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-in, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  ingress: [{from: [{ipBlock: {cidr: "fd77::2/128"}}]}]
"#;

/// Node addresses of both families: each probe family on both dataplanes (dual-stack pods
/// from IPAM), the packets as the engine says: w1's host-networked pod reaches x/a on its own
/// node (node-local traffic is not judged by NetworkPolicies), w2's only over IPv6 (the
/// ipBlock).
fn dual_stack_nodes(dataplane: &str, cni: &str) {
    let _lock = lab_lock();
    let name = format!("labcnp-d{}-{}", &dataplane[..3], std::process::id());
    let _guard = LabGuard(name.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cluster.yaml");
    std::fs::write(&file, DUAL_STACK_NODES).expect("write");
    ok(&[
        "lab",
        "--name",
        &name,
        "up",
        "-f",
        &file.to_string_lossy(),
        "--cni",
        cni,
        "--ip-family",
        "dual",
        "--dataplane",
        dataplane,
    ]);
    for (family, from_h2) in [("ipv4", false), ("ipv6", true)] {
        let out = run(&[
            "lab", "--name", &name, "probe", "--probe", "80/TCP", "--probe", "9100/TCP",
            "--family", family, "-o", "json",
        ]);
        let r: Value = serde_json::from_slice(&out.stdout).expect("probe json");
        assert!(out.status.success(), "{family}: {}", r["mismatches"]);
        let pods: Vec<&str> = r["pods"]
            .as_array()
            .expect("pods")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(pods, ["x/a", "x/b", "x/h1", "x/h2"]);
        let to_a: Vec<bool> = (0..4)
            .map(|i| r["probes"][0]["allowed"][i][0].as_bool().unwrap())
            .collect();
        assert_eq!(to_a, [true, false, true, from_h2], "{family}: to x/a");
        // Host-networked pods reach each other and are reached on their nodes' addresses.
        assert_eq!(r["probes"][1]["allowed"][2][3], true, "{family}: h1 -> h2");
        assert_eq!(r["probes"][1]["allowed"][0][3], true, "{family}: a -> h2");
    }
}

#[test]
fn dual_stack_node_addresses_nftables() {
    if skip_unless_root("dual_stack_node_addresses_nftables") {
        return;
    }
    dual_stack_nodes("nftables", "palisade");
}

#[test]
fn dual_stack_node_addresses_iptables() {
    if skip_unless_root("dual_stack_node_addresses_iptables") {
        return;
    }
    dual_stack_nodes("iptables", "ptp");
}

fn all_cases() -> Vec<String> {
    case_slugs_in(&cnp_root()).expect("cases")
}

/// Nodes peers (Admin and Baseline), Pass from Admin then Baseline, host-networked pods as
/// peers, ingress and priorities.
const SUBSET: &[&str] = &[
    "cnp-admin-tier-egress-node-peers",
    "cnp-baseline-tier-egress-node-peers",
    "palisade-pass-admin-then-baseline",
    "palisade-host-network-pods",
    "cnp-admin-tier-ingress-tcp",
    "cnp-admin-tier-priority-field",
];

#[test]
fn cnp_conformance_nftables() {
    if skip_unless_root("cnp_conformance_nftables") {
        return;
    }
    let setup = Setup {
        tag: "nft",
        dataplane: "nftables",
        cni: "bridge",
        datastore: "embedded",
    };
    conformance_on(&setup, &all_cases());
}

#[test]
fn cnp_conformance_iptables() {
    if skip_unless_root("cnp_conformance_iptables") {
        return;
    }
    let setup = Setup {
        tag: "ipt",
        dataplane: "iptables",
        cni: "ptp",
        datastore: "embedded",
    };
    conformance_on(&setup, &all_cases());
}

/// The subset through etcd, with one `palisade agent` process per node.
#[test]
fn cnp_conformance_etcd_agent_processes() {
    if skip_unless_root("cnp_conformance_etcd_agent_processes") {
        return;
    }
    if !palisade_store::testing::etcd_available() {
        eprintln!("skipping cnp_conformance_etcd_agent_processes: no etcd binary");
        return;
    }
    let all = all_cases();
    for s in SUBSET {
        assert!(all.contains(&s.to_string()), "no case {s}");
    }
    let etcd = palisade_store::testing::EtcdServer::start().expect("etcd");
    let url = format!("etcd://{}", etcd.endpoint());
    let setup = Setup {
        tag: "etcd",
        dataplane: "iptables",
        cni: "bridge",
        datastore: &url,
    };
    conformance_on(
        &setup,
        &SUBSET.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    );
}
