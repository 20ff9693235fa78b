//! ClusterNetworkPolicies, Nodes and host-networked pods through a real etcd: what `palisade
//! apply` stores, `palisade matrix --datastore` and `palisade explain --datastore` read back
//! exactly as `-f` reads the same manifests — host-networked pods as flow ends with their
//! node's address, `nodes` peers, tiers, priorities, Pass, and the rule names `explain` quotes.

mod common;

use std::path::{Path, PathBuf};

use common::conformance::{case_slugs_in, cnp_root, Case, Objects};
use common::etcd::{ok, palisade, wipe};
use palisade_store::testing::EtcdServer;

/// The ports the suite's pods serve, and ICMP.
const PROBES: [&str; 7] = [
    "80/TCP",
    "8080/TCP",
    "53/UDP",
    "5353/UDP",
    "9003/SCTP",
    "9005/SCTP",
    "icmp",
];

fn matrix(source: &[&str], output: &str, datastore: Option<&str>) -> String {
    let mut args = vec!["matrix"];
    args.extend_from_slice(source);
    for p in PROBES {
        args.extend(["--probe", p]);
    }
    args.extend(["-o", output]);
    ok(&palisade(&args, datastore), &format!("matrix {source:?}"))
}

/// Stores `file` alone and compares the matrices (JSON and table) from files and from etcd.
fn store_and_compare(server: &EtcdServer, file: &str, what: &str) -> serde_json::Value {
    wipe(server);
    let url = server.url();
    ok(
        &palisade(&["apply", "-f", file], Some(&url)),
        &format!("{what}: apply"),
    );
    for output in ["json", "table"] {
        let from_files = matrix(&["-f", file], output, None);
        let live = matrix(&[], output, Some(&url));
        assert_eq!(live, from_files, "{what}: -o {output}: live != files");
    }
    serde_json::from_str(&matrix(&[], "json", Some(&url))).expect("json")
}

const CENTAUR: &str = "network-policy-conformance-forbidden-forrest/centaur-0";

#[test]
fn live_matrix_equals_the_files_on_every_cluster_network_policy_step() {
    let Ok(server) = EtcdServer::start() else {
        eprintln!("skipped: no etcd binary to start");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let suite = cnp_root();
    let base = Objects::base_of(&suite).expect("base");
    let file = dir.path().join("cluster.yaml");
    let file_str = file.display().to_string();
    let mut steps = 0;
    let mut node_peer_steps = 0;
    for slug in case_slugs_in(&suite).expect("cases") {
        let case = Case::load_from(&suite, &slug).expect("case");
        for (i, objects) in case.states(&base).expect("states").iter().enumerate() {
            let yaml = objects.to_yaml().expect("yaml");
            node_peer_steps += usize::from(yaml.contains("nodes:"));
            std::fs::write(&file, yaml).expect("write");
            let live = store_and_compare(&server, &file_str, &format!("{slug} step {}", i + 1));
            // The host-networked pods are in the live matrix (not merely absent from both).
            let pods = live["pods"].as_array().expect("pods");
            assert!(
                pods.iter().any(|p| p == CENTAUR),
                "{slug}: no {CENTAUR} in {pods:?}"
            );
            steps += 1;
        }
    }
    assert!(steps > 30, "only {steps} steps replayed");
    assert!(node_peer_steps > 1, "no step with a nodes peer");
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cluster-policies")
}

/// `explain` from etcd says what it says from the files, naming the ClusterNetworkPolicy's
/// rule; `get pods` shows the host-networked pod with its node's address.
#[test]
fn live_explain_names_cluster_network_policy_rules_and_host_networked_pods() {
    let Ok(server) = EtcdServer::start() else {
        eprintln!("skipped: no etcd binary to start");
        return;
    };
    let url = server.url();
    let example = example().display().to_string();
    store_and_compare(&server, &example, "examples/cluster-policies");

    let flows = [
        // (from, to, port, what the explanation must say)
        (
            "tenant-a/web",
            "kube-system/coredns",
            "8080/TCP",
            r#"by admin:protect-kube-system rule 1 ("deny-tenants")"#,
        ),
        (
            "tenant-b/web",
            "kube-system/coredns",
            "53/UDP",
            r#"by admin:protect-kube-system rule 0 ("allow-dns")"#,
        ),
        (
            "tenant-a/web",
            "tenant-b/web",
            "8080/TCP",
            r#"by baseline:tenant-b-isolation rule 0 ("deny-other-tenants")"#,
        ),
        (
            "tenant-a/web",
            "kube-system/node-exporter",
            "53/UDP",
            r#"passed by admin:tenants-not-to-nodes rule 0 ("pass-node-local-dns")"#,
        ),
        (
            "tenant-a/web",
            "kube-system/node-exporter",
            "9100/TCP",
            r#"to kube-system/node-exporter by admin:tenants-not-to-nodes rule 1 ("deny-nodes")"#,
        ),
    ];
    for (from, to, port, says) in flows {
        let args = ["explain", "--from", from, "--to", to, "--port", port];
        let files = ok(
            &palisade(&[&args[..], &["-f", &example]].concat(), None),
            "explain -f",
        );
        let live = ok(&palisade(&args, Some(&url)), "explain --datastore");
        assert_eq!(live, files, "{from} -> {to} {port}");
        assert!(live.contains(says), "{from} -> {to} {port}: {live}");
        let json = [&args[..], &["-o", "json"]].concat();
        let files = ok(
            &palisade(&[&json[..], &["-f", &example]].concat(), None),
            "explain -f -o json",
        );
        let live = ok(&palisade(&json, Some(&url)), "explain --datastore -o json");
        assert_eq!(live, files, "{from} -> {to} {port} (json)");
    }

    let pods = ok(
        &palisade(&["get", "pods", "-n", "kube-system"], Some(&url)),
        "get pods",
    );
    let header = pods.lines().next().unwrap_or_default();
    assert!(header.ends_with("HOSTNETWORK"), "{pods}");
    let exporter = pods
        .lines()
        .find(|l| l.contains("node-exporter"))
        .unwrap_or_else(|| panic!("no node-exporter in {pods}"));
    assert!(
        exporter.contains("10.10.0.1") && exporter.ends_with("true"),
        "{pods}"
    );
    let coredns = pods
        .lines()
        .find(|l| l.contains("coredns"))
        .expect("coredns");
    assert!(coredns.ends_with("false"), "{pods}");
}

const NODE: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: 10.1.0.1}]}
"#;

const HOST_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: exporter, namespace: monitoring, labels: {app: exporter}}
spec: {nodeName: n1, hostNetwork: true, containers: [{name: c, ports: [{name: metrics, containerPort: 9100}]}]}
"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

fn get_pods(url: &str) -> serde_json::Value {
    let out = ok(
        &palisade(&["get", "pods", "-o", "json"], Some(url)),
        "get pods",
    );
    serde_json::from_str(&out).expect("json")
}

/// `palisade apply` stores a host-networked pod under `hostendpoints/` with its node's
/// address (the pod has none of its own here), follows a new address of the node, moves the
/// pod to `endpoints/` when it stops being host-networked, and `delete pod` removes it.
#[test]
fn apply_stores_a_host_networked_pod_with_its_node_address() {
    let Ok(server) = EtcdServer::start() else {
        eprintln!("skipped: no etcd binary to start");
        return;
    };
    let url = server.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let both = write(dir.path(), "both.yaml", &format!("{NODE}---{HOST_POD}"));
    let out = ok(&palisade(&["apply", "-f", &both], Some(&url)), "apply");
    assert!(
        out.contains("pod monitoring/exporter created (hostNetwork)"),
        "{out}"
    );
    let v = get_pods(&url);
    assert_eq!(
        v[0]["key"],
        "/palisade/v1/hostendpoints/monitoring/exporter"
    );
    assert_eq!(v[0]["kind"], "HostEndpoint");
    assert_eq!(v[0]["spec"]["ips"], serde_json::json!(["10.1.0.1"]));

    // The node alone, with a new address: the stored pod follows.
    let moved = write(
        dir.path(),
        "node.yaml",
        &NODE.replace("10.1.0.1", "10.1.0.9"),
    );
    let out = ok(
        &palisade(&["apply", "-f", &moved], Some(&url)),
        "apply node",
    );
    assert!(out.contains("node n1 updated"), "{out}");
    assert!(
        out.contains("pod monitoring/exporter updated (hostNetwork: its node's new address)"),
        "{out}"
    );
    assert_eq!(
        get_pods(&url)[0]["spec"]["ips"],
        serde_json::json!(["10.1.0.9"])
    );

    // No longer host-networked: the old key goes in the same batch.
    let workload = write(
        dir.path(),
        "pod.yaml",
        &format!(
            "{}status: {{podIP: 10.0.0.5}}\n",
            HOST_POD.replace("hostNetwork: true, ", "")
        ),
    );
    let out = ok(
        &palisade(&["apply", "-f", &workload], Some(&url)),
        "apply pod",
    );
    assert!(
        out.contains("pod monitoring/exporter updated (moved from /palisade/v1/hostendpoints/monitoring/exporter)"),
        "{out}"
    );
    let v = get_pods(&url);
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v[0]["key"], "/palisade/v1/endpoints/n1/monitoring/exporter");

    let out = ok(
        &palisade(&["apply", "-f", &both], Some(&url)),
        "apply again",
    );
    assert!(
        out.contains("pod monitoring/exporter updated (moved from"),
        "{out}"
    );
    let out = ok(
        &palisade(&["delete", "pod", "monitoring/exporter"], Some(&url)),
        "delete pod",
    );
    assert!(out.contains("pod monitoring/exporter deleted"), "{out}");
    assert_eq!(get_pods(&url), serde_json::json!([]));
}

/// `matrix --datastore --what-if -f CHANGE` sees host-networked pods as `-f` does: adding
/// the policy that denies tenants the nodes newly denies flows to the host-networked
/// node-exporter, the same pairs as between files.
#[test]
fn live_what_if_includes_host_networked_pods() {
    let Ok(server) = EtcdServer::start() else {
        eprintln!("skipped: no etcd binary to start");
        return;
    };
    let url = server.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let change = example().join("admin-tenants-not-to-nodes.yaml");
    for entry in std::fs::read_dir(example()).expect("example") {
        let path = entry.expect("entry").path();
        let yaml = path.extension().is_some_and(|e| e == "yaml");
        if yaml && path != change {
            std::fs::copy(&path, dir.path().join(path.file_name().expect("name"))).expect("copy");
        }
    }
    let current = dir.path().display().to_string();
    let change = change.display().to_string();
    ok(&palisade(&["apply", "-f", &current], Some(&url)), "apply");
    let probes = ["--probe", "9100/TCP", "--probe", "53/UDP"];
    let live = [
        &["matrix", "--what-if", "-f", &change, "-o", "json"][..],
        &probes,
    ]
    .concat();
    let files = [
        &[
            "matrix",
            "-f",
            &current,
            "--what-if-f",
            &change,
            "-o",
            "json",
        ][..],
        &probes,
    ]
    .concat();
    let live: serde_json::Value =
        serde_json::from_str(&ok(&palisade(&live, Some(&url)), "what-if live")).expect("json");
    let files: serde_json::Value =
        serde_json::from_str(&ok(&palisade(&files, None), "what-if files")).expect("json");
    assert_eq!(live["changes"], files["changes"]);
    let to_exporter = live["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter(|c| c["to"] == "kube-system/node-exporter" && c["then"] == false)
        .count();
    assert!(to_exporter > 0, "{live:#}");
}
