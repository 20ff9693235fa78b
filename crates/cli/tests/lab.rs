//! End-to-end tests of `palisade lab` on real network namespaces (root only; each test prints
//! why it skips otherwise):
//!
//! * `topology_up_down_leaves_nothing`: a lab without agents comes up, its pods reach each
//!   other on every protocol, and `lab down` leaves no namespace, interface, route, process
//!   or state file behind; a lab whose daemon was killed is detected as stale and cleaned.
//! * `conformance_nftables`, `conformance_iptables`: every conformance case replayed on one
//!   live 2-node lab per dataplane (pods spread so that same-node and cross-node pairs both
//!   occur), step by step through `lab apply` / `lab delete`; every probe must match the
//!   fixture's grid and the engine (`mismatches` empty).
//! * `conformance_etcd_agent_processes`: a subset of the cases through etcd with one
//!   `palisade agent` process per node.

mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output};

use common::conformance::{case_slugs, Case, Objects};
use serde_json::Value;

fn palisade() -> Command {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no side effects.
    unsafe { libc::geteuid() == 0 }
}

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("skipping {test}: needs root (it creates network namespaces)");
    true
}

fn run(args: &[&str]) -> Output {
    palisade().args(args).output().expect("run palisade")
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "palisade {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(args: &[&str]) -> Value {
    let text = ok(args);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("palisade {args:?}: not JSON ({e}):\n{text}"))
}

fn netns_list() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn host(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Names of the host namespace's interfaces.
fn host_links() -> std::collections::BTreeSet<String> {
    host(&["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or_default().to_string())
        .collect()
}

/// Takes a lab down when the test ends, also when it fails.
struct LabGuard(String);

impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = palisade().args(["lab", "--name", &self.0, "down"]).output();
    }
}

fn lab_name(tag: &str) -> String {
    format!("t{tag}-{}", std::process::id())
}

/// `lab up` of `examples/seed` (2 nodes, nftables, embedded datastore) wired by `cni`: its
/// JSON status.
fn seed_lab_up(name: &str, cni: &str) -> Value {
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed");
    json(&[
        "lab",
        "--name",
        name,
        "up",
        "-f",
        &seed.display().to_string(),
        "--cni",
        cni,
        "-o",
        "json",
    ])
}

/// `lab probe --probe PORT -o json`: whether it exited 0 (no mismatch), and the report.
fn probe_json(name: &str, port: &str) -> (bool, Value) {
    let out = run(&[
        "lab", "--name", name, "probe", "--probe", port, "-o", "json",
    ]);
    let report = serde_json::from_slice(&out.stdout).expect("probe json");
    (out.status.success(), report)
}

#[test]
fn topology_up_down_leaves_nothing() {
    if skip_unless_root("topology_up_down_leaves_nothing") {
        return;
    }
    let name = lab_name("topo");
    let _guard = LabGuard(name.clone());
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed");
    let files: Vec<String> = ["namespaces.yaml", "pods.yaml"]
        .iter()
        .map(|f| seed.join(f).display().to_string())
        .collect();

    let mut up = vec![
        "lab",
        "--name",
        &name,
        "up",
        "--no-agents",
        "--nodes",
        "3",
        "-o",
        "json",
        "-f",
    ];
    up.extend(files.iter().map(String::as_str));
    let status = json(&up);
    let pods = status["pods"].as_array().expect("pods").clone();
    let nodes = status["nodes"].as_array().expect("nodes").clone();
    assert_eq!(pods.len(), 5);
    assert_eq!(nodes.len(), 3);
    // The default wiring: the reference bridge plugin, address matching.
    assert_eq!(status["cni"], "bridge");
    assert_eq!(status["endpoint_match"], "address");
    let pid = status["daemon"]["pid"].as_u64().expect("daemon pid");
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let prefix = format!("pal-{}-", status["id"].as_str().expect("id"));
    let ours: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert_eq!(ours.len(), 8, "3 node and 5 pod namespaces: {ours:?}");

    // Nothing on the host: none of the lab's interfaces, no route to a pod.
    let host_names = host_links();
    for link in ["lnk-1", "lnk-2", "lnk-3"] {
        assert!(!host_names.contains(link), "{link} on the host");
    }
    let routes = host(&["route", "show"]);
    for p in &pods {
        let ip = p["ip"].as_str().expect("ip");
        assert!(!routes.contains(ip), "host route to pod {ip}: {routes}");
        let iface = p["interface"].as_str().expect("interface");
        assert!(!host_names.contains(iface), "{iface} on the host");
        // The plugin's veth, on the pod's node, in the node's bridge.
        let node_netns = nodes
            .iter()
            .find(|n| n["name"] == p["node"])
            .and_then(|n| n["netns"].as_str())
            .expect("node netns");
        let link = host(&["-n", node_netns, "-o", "link", "show", iface]);
        assert!(
            iface.starts_with("veth") && link.contains("master cni0"),
            "{iface} in {node_netns}: {link}"
        );
    }

    // Every pod reaches every pod on every protocol (no agents, nothing enforced).
    let probe = run(&[
        "lab", "--name", &name, "probe", "--probe", "80/TCP", "--probe", "53/UDP", "--probe",
        "icmp", "--probe", "80/SCTP", "-o", "json",
    ]);
    let report: Value = serde_json::from_slice(&probe.stdout).expect("probe json");
    assert!(
        probe.status.success(),
        "mismatches: {}",
        report["mismatches"]
    );
    for p in report["probes"].as_array().expect("probes") {
        for row in p["allowed"].as_array().expect("rows") {
            assert!(
                row.as_array().expect("row").iter().all(|b| b == true),
                "{p}"
            );
        }
    }
    assert_eq!(report["expected"]["pods"], report["pods"]);

    // exec passes the exit code through; curl gets the pod's name back over HTTP.
    let web = pods
        .iter()
        .find(|p| p["pod"] == "default/app-web")
        .expect("app-web");
    let url = format!("http://{}/", web["ip"].as_str().expect("ip"));
    let body = ok(&[
        "lab",
        "--name",
        &name,
        "exec",
        "bob/client",
        "--",
        "curl",
        "-s",
        "-m",
        "2",
        &url,
    ]);
    assert_eq!(body.trim(), "default/app-web");
    let code = run(&[
        "lab",
        "--name",
        &name,
        "exec",
        "bob/client",
        "--",
        "sh",
        "-c",
        "exit 7",
    ]);
    assert_eq!(code.status.code(), Some(7));

    // A killed daemon leaves a stale lab: `up` detects and replaces it.
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while Path::new(&format!("/proc/{pid}/cmdline")).exists()
        && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
        && std::time::Instant::now() < deadline
    {
        std::thread::yield_now();
    }
    let status_out = run(&["lab", "--name", &name, "status"]);
    assert!(
        !status_out.status.success(),
        "status of a lab without daemon must fail"
    );
    let again = palisade().args(&up).output().expect("up again");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("stale"));

    let down = json(&["lab", "--name", &name, "down", "-o", "json"]);
    assert_eq!(down["daemon_stopped"], true);
    assert!(
        netns_list().iter().all(|n| !n.starts_with(&prefix)),
        "{:?}",
        netns_list()
    );
    assert!(!Path::new(&format!("/run/palisade/lab/{name}")).exists());
    let ps = Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .expect("ps");
    assert!(
        !String::from_utf8_lossy(&ps.stdout).contains(&format!("daemon --name {name}")),
        "daemon still running"
    );
    // Down again: nothing to do, still success.
    let again = json(&["lab", "--name", &name, "down", "-o", "json"]);
    assert_eq!(again["was_up"], false);
}

/// Replays `slugs` on the live lab `name`; returns the failure report (empty: all passed).
/// `ipv6`: every address of the manifests mapped into IPv6 (see `ipv4_into_ipv6`).
fn replay_cases(name: &str, slugs: &[String], ipv6: bool) -> String {
    let base = Objects::base().expect("base");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut report = String::new();
    let mut live: BTreeSet<(String, String)> = BTreeSet::new();
    for slug in slugs {
        let case = Case::load(slug).expect("case");
        let states = case.states(&base).expect("states");
        for (i, (step, objects)) in case.steps.iter().zip(&states).enumerate() {
            let file = dir.path().join("step.yaml");
            let objects = if ipv6 {
                objects.mapped_into_ipv6()
            } else {
                objects.clone()
            };
            std::fs::write(&file, objects.to_yaml().expect("yaml")).expect("write");
            let out = run(&[
                "lab",
                "--name",
                name,
                "apply",
                "-f",
                &file.display().to_string(),
            ]);
            if !out.status.success() {
                let _ = writeln!(
                    report,
                    "{slug} step {}: apply failed: {}",
                    i + 1,
                    String::from_utf8_lossy(&out.stderr)
                );
                continue;
            }
            let wanted: BTreeSet<(String, String)> = objects
                .iter()
                .filter(|(k, _)| k.kind == "NetworkPolicy")
                .map(|(k, _)| (k.namespace.clone().unwrap_or_default(), k.name.clone()))
                .collect();
            for (ns, pol) in live.difference(&wanted) {
                let target = format!("{ns}/{pol}");
                let out = run(&["lab", "--name", name, "delete", "networkpolicy", &target]);
                if !out.status.success() {
                    let _ = writeln!(
                        report,
                        "{slug} step {}: delete {target} failed: {}",
                        i + 1,
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
            live = wanted;
            let mut args = vec![
                "lab".to_string(),
                "--name".into(),
                name.into(),
                "probe".into(),
                "-o".into(),
                "json".into(),
            ];
            for e in &step.expect {
                args.push("--probe".into());
                args.push(e.probe.to_string());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = run(&args);
            let Ok(result) = serde_json::from_slice::<Value>(&out.stdout) else {
                let _ = writeln!(
                    report,
                    "{slug} step {}: probe failed: {}",
                    i + 1,
                    String::from_utf8_lossy(&out.stderr)
                );
                continue;
            };
            let pods: Vec<String> = result["pods"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(m) = result["mismatches"].as_array().filter(|m| !m.is_empty()) {
                let _ = writeln!(
                    report,
                    "{slug} step {}: packets differ from the engine: {m:?}",
                    i + 1
                );
            }
            for (k, e) in step.expect.iter().enumerate() {
                let seen = &result["probes"][k]["allowed"];
                for (from, to, allowed) in e.grid.cells() {
                    let (Some(fi), Some(ti)) = (
                        pods.iter().position(|p| p == from),
                        pods.iter().position(|p| p == to),
                    ) else {
                        let _ = writeln!(
                            report,
                            "{slug} step {}: pod {from} or {to} not in the lab",
                            i + 1
                        );
                        continue;
                    };
                    if seen[fi][ti].as_bool() != Some(allowed) {
                        let _ = writeln!(
                            report,
                            "{slug} step {}, probe {}: {from} -> {to}: fixture says {}, packets say {}",
                            i + 1,
                            e.probe,
                            if allowed { "allowed" } else { "blocked" },
                            seen[fi][ti]
                        );
                    }
                }
            }
        }
    }
    report
}

/// Labs of the conformance tests run one at a time: the machine may have two cores.
static ONE_LAB_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How a conformance lab is made.
struct Setup<'a> {
    dataplane: &'a str,
    datastore: &'a str,
    /// `bridge`, `ptp` or `palisade`.
    cni: &'a str,
    /// `address` or `interface`.
    endpoint_match: &'a str,
    /// Every address mapped into IPv6.
    ipv6: bool,
}

impl Setup<'_> {
    fn describe(&self) -> String {
        format!(
            "{} (cni {}, {} matching, {}{})",
            self.dataplane,
            self.cni,
            self.endpoint_match,
            if self.ipv6 { "IPv6, " } else { "" },
            self.datastore
        )
    }
}

fn conformance_on(tag: &str, setup: &Setup, slugs: &[String]) {
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let name = lab_name(tag);
    let _guard = LabGuard(name.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let base_file = dir.path().join("base.yaml");
    let base = Objects::base().expect("base");
    let base = if setup.ipv6 {
        base.mapped_into_ipv6()
    } else {
        base
    };
    std::fs::write(&base_file, base.to_yaml().expect("yaml")).expect("write base");
    let status = json(&[
        "lab",
        "--name",
        &name,
        "up",
        "-f",
        &base_file.display().to_string(),
        "--nodes",
        "2",
        "--dataplane",
        setup.dataplane,
        "--datastore",
        setup.datastore,
        "--cni",
        setup.cni,
        "--endpoint-match",
        setup.endpoint_match,
        "-o",
        "json",
    ]);
    assert_eq!(status["cni"], setup.cni);
    assert_eq!(status["endpoint_match"], setup.endpoint_match);
    let pods = status["pods"].as_array().expect("pods");
    let nodes: BTreeSet<&str> = pods.iter().filter_map(|p| p["node"].as_str()).collect();
    assert_eq!(nodes.len(), 2, "pods must be on both nodes");
    for p in pods {
        let ip = p["ip"].as_str().expect("ip");
        assert_eq!(ip.contains(':'), setup.ipv6, "{p}");
    }
    let started = std::time::Instant::now();
    let report = replay_cases(&name, slugs, setup.ipv6);
    eprintln!(
        "{} conformance cases on {} in {:.1}s",
        slugs.len(),
        setup.describe(),
        started.elapsed().as_secs_f64()
    );
    if !report.is_empty() {
        let kept = format!("/tmp/{name}-daemon.log");
        let _ = std::fs::copy(format!("/run/palisade/lab/{name}/daemon.log"), &kept);
        panic!(
            "conformance through the lab on {} failed (daemon log: {kept}):\n{report}",
            setup.describe()
        );
    }
}

/// A representative subset: every protocol, named ports, ipBlock with except, label updates,
/// multi-step deletes.
const SUBSET: &[&str] = &[
    "default-deny-ingress",
    "updated-pod",
    "stop-enforcing-after-delete",
    "semantics-11-protocols",
    "semantics-12-named-ports",
    "egress-cidr-except",
];

fn subset() -> Vec<String> {
    let all = case_slugs().expect("cases");
    for s in SUBSET {
        assert!(all.contains(&s.to_string()), "no case {s}");
    }
    SUBSET.iter().map(|s| s.to_string()).collect()
}

fn all_cases() -> Vec<String> {
    case_slugs().expect("cases")
}

fn setup<'a>(dataplane: &'a str, cni: &'a str, endpoint_match: &'a str, ipv6: bool) -> Setup<'a> {
    Setup {
        dataplane,
        datastore: "embedded",
        cni,
        endpoint_match,
        ipv6,
    }
}

// The full suite on one real CNI per dataplane, a subset on the other combinations.

#[test]
fn conformance_nftables_bridge() {
    if skip_unless_root("conformance_nftables_bridge") {
        return;
    }
    conformance_on(
        "nftbr",
        &setup("nftables", "bridge", "address", false),
        &all_cases(),
    );
}

#[test]
fn conformance_iptables_ptp() {
    if skip_unless_root("conformance_iptables_ptp") {
        return;
    }
    conformance_on(
        "iptptp",
        &setup("iptables", "ptp", "address", false),
        &all_cases(),
    );
}

#[test]
fn conformance_subset_nftables_ptp() {
    if skip_unless_root("conformance_subset_nftables_ptp") {
        return;
    }
    conformance_on(
        "nftptp",
        &setup("nftables", "ptp", "address", false),
        &subset(),
    );
}

#[test]
fn conformance_subset_iptables_bridge() {
    if skip_unless_root("conformance_subset_iptables_bridge") {
        return;
    }
    conformance_on(
        "iptbr",
        &setup("iptables", "bridge", "address", false),
        &subset(),
    );
}

#[test]
fn conformance_subset_nftables_palisade_interface() {
    if skip_unless_root("conformance_subset_nftables_palisade_interface") {
        return;
    }
    conformance_on(
        "nftpal",
        &setup("nftables", "palisade", "interface", false),
        &subset(),
    );
}

#[test]
fn conformance_subset_iptables_palisade_interface() {
    if skip_unless_root("conformance_subset_iptables_palisade_interface") {
        return;
    }
    conformance_on(
        "iptpal",
        &setup("iptables", "palisade", "interface", false),
        &subset(),
    );
}

/// Every address of the suite mapped into IPv6 (`fd00::a.b.c.d`, prefixes /96+n).
#[test]
fn conformance_ipv6_nftables_bridge() {
    if skip_unless_root("conformance_ipv6_nftables_bridge") {
        return;
    }
    conformance_on(
        "nft6",
        &setup("nftables", "bridge", "address", true),
        &all_cases(),
    );
}

#[test]
fn conformance_ipv6_iptables_ptp() {
    if skip_unless_root("conformance_ipv6_iptables_ptp") {
        return;
    }
    conformance_on(
        "ipt6",
        &setup("iptables", "ptp", "address", true),
        &all_cases(),
    );
}

/// The subset through etcd, with one `palisade agent` process per node.
#[test]
fn conformance_etcd_agent_processes() {
    if skip_unless_root("conformance_etcd_agent_processes") {
        return;
    }
    if !palisade_store::testing::etcd_available() {
        eprintln!("skipping conformance_etcd_agent_processes: no etcd binary");
        return;
    }
    let etcd = palisade_store::testing::EtcdServer::start().expect("etcd");
    let url = format!("etcd://{}", etcd.endpoint());
    let setup = Setup {
        dataplane: "iptables",
        datastore: &url,
        cni: "bridge",
        endpoint_match: "address",
        ipv6: false,
    };
    conformance_on("etcd", &setup, &subset());
}

#[test]
fn drops_are_counted_and_attributed() {
    if skip_unless_root("drops_are_counted_and_attributed") {
        return;
    }
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let name = lab_name("cnt");
    let _guard = LabGuard(name.clone());
    let status = seed_lab_up(&name, "bridge");
    let web = status["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .find(|p| p["pod"] == "default/app-web")
        .expect("app-web")
        .clone();
    let node = web["node"].as_str().expect("node");
    let url = format!("http://{}/", web["ip"].as_str().expect("ip"));
    let counters = |name: &str| {
        json(&[
            "lab",
            "--name",
            name,
            "counters",
            "--node",
            node,
            "--policy",
            "default/web-deny-all",
            "-o",
            "json",
        ])
    };
    let dropped = |c: &Value| -> u64 {
        c["drops"]
            .as_array()
            .expect("drops")
            .iter()
            .filter(|d| d["endpoint"] == "default/app-web" && d["direction"] == "ingress")
            .map(|d| d["packets"].as_u64().unwrap_or(0))
            .sum()
    };
    let before = dropped(&counters(&name));
    let curl = run(&[
        "lab",
        "--name",
        &name,
        "exec",
        "bob/client",
        "--",
        "curl",
        "-s",
        "-m",
        "1",
        &url,
    ]);
    assert!(!curl.status.success(), "web-deny-all must block curl");
    let after = counters(&name);
    assert!(dropped(&after) > before, "no drop counted: {after}");
    let eps = after["endpoints"].as_array().expect("endpoints");
    assert!(eps.iter().any(|e| e["endpoint"] == "default/app-web"
        && e["ingress"]
            .as_array()
            .is_some_and(|i| i.iter().any(|p| p == "default/web-deny-all"))));

    // Without a datastore, `palisade counters` and `palisade agent status` ask the lab.
    let without_datastore = |args: &[&str]| -> Value {
        let out = palisade()
            .env_remove("PALISADE_DATASTORE")
            .args(args)
            .output()
            .expect("run palisade");
        assert!(
            out.status.success(),
            "palisade {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON")
    };
    let top_level = without_datastore(&[
        "counters",
        "--lab",
        &name,
        "--node",
        node,
        "--policy",
        "default/web-deny-all",
        "-o",
        "json",
    ]);
    assert!(
        dropped(&top_level) >= dropped(&after),
        "palisade counters without a datastore: {top_level}"
    );
    let agents = without_datastore(&["agent", "status", "--lab", &name, "-o", "json"]);
    let agents = agents.as_array().expect("rows");
    assert_eq!(agents.len(), 2, "{agents:?}");
    assert!(
        agents
            .iter()
            .all(|a| a["inSync"] == true && a["dataplane"] == "nftables"),
        "{agents:?}"
    );
}

/// `lab apply` of a Pod the lab does not have creates it (namespace, veth, routes, server)
/// and the agents enforce policy on it; a Pod that cannot be placed is refused with nothing
/// applied; `lab down` removes the new pod's namespace too.
#[test]
fn pods_applied_to_a_live_lab_are_created_and_enforced() {
    if skip_unless_root("pods_applied_to_a_live_lab_are_created_and_enforced") {
        return;
    }
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let name = lab_name("addpod");
    let _guard = LabGuard(name.clone());
    let status = seed_lab_up(&name, "bridge");
    let prefix = format!("pal-{}-", status["id"].as_str().expect("id"));
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |file: &str, text: &str| {
        let path = dir.path().join(file);
        std::fs::write(&path, text).expect("write manifest");
        path.display().to_string()
    };
    let pod_and_policy = write(
        "extra.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: extra, namespace: fresh, labels: {app: extra}}\n\
         spec: {containers: [{name: c, image: x, ports: [{containerPort: 8080}]}]}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {name: extra-from-bob, namespace: fresh}\n\
         spec: {podSelector: {matchLabels: {app: extra}}, ingress: [{from: [{namespaceSelector: {matchLabels: {user: bob}}}]}]}\n",
    );
    ok(&["lab", "--name", &name, "apply", "-f", &pod_and_policy]);
    let status = json(&["lab", "--name", &name, "status", "-o", "json"]);
    let pods = status["pods"].as_array().expect("pods");
    let extra = pods
        .iter()
        .find(|p| p["pod"] == "fresh/extra")
        .unwrap_or_else(|| panic!("fresh/extra not in the lab: {status}"));
    assert!(extra["ip"]
        .as_str()
        .is_some_and(|ip| ip.starts_with("10.244.")));
    let (matched, report) = probe_json(&name, "8080/TCP");
    assert!(matched, "mismatches: {}", report["mismatches"]);
    let names: Vec<&str> = report["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let to = names
        .iter()
        .position(|p| *p == "fresh/extra")
        .expect("probed");
    let from_bob = names.iter().position(|p| *p == "bob/client").expect("bob");
    let from_default = names
        .iter()
        .position(|p| *p == "default/client")
        .expect("client");
    let allowed = &report["probes"][0]["allowed"];
    assert_eq!(
        allowed[from_bob][to], true,
        "bob reaches the new pod: {report}"
    );
    assert_eq!(allowed[from_default][to], false, "only bob does: {report}");

    // A pod on a node the lab does not have: refused, and the policy beside it not applied.
    let bad = write(
        "bad.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: lost, namespace: fresh}\n\
         spec: {nodeName: n9, containers: [{name: c, image: x}]}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {name: deny-all, namespace: fresh}\nspec: {podSelector: {}}\n",
    );
    let out = run(&["lab", "--name", &name, "apply", "-f", &bad]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("n9"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = json(&["lab", "--name", &name, "status", "-o", "json"]);
    assert_eq!(after["pods"].as_array().expect("pods").len(), pods.len());
    let (matched, report) = probe_json(&name, "8080/TCP");
    assert!(matched, "mismatches: {}", report["mismatches"]);
    assert_eq!(
        report["probes"][0]["allowed"][from_bob][to], true,
        "deny-all must not have been applied: {report}"
    );

    // `lab delete pod`: gone from the lab, its namespace removed, the rest still agrees.
    let ours = || -> Vec<String> {
        netns_list()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect()
    };
    let before = ours();
    let node_netns = status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["name"] == extra["node"])
        .and_then(|n| n["netns"].as_str())
        .unwrap_or_else(|| panic!("node of {extra} in {status}"))
        .to_string();
    let iface = extra["interface"].as_str().expect("interface").to_string();
    let veth_exists = || {
        Command::new("ip")
            .args(["-n", &node_netns, "link", "show", &iface])
            .output()
            .expect("ip link show")
            .status
            .success()
    };
    assert!(veth_exists(), "{iface} in {node_netns} before the delete");
    ok(&["lab", "--name", &name, "delete", "pod", "fresh/extra"]);
    assert!(
        !veth_exists(),
        "{iface} left in {node_netns} after the delete"
    );
    let after = json(&["lab", "--name", &name, "status", "-o", "json"]);
    assert_eq!(
        after["pods"].as_array().expect("pods").len(),
        pods.len() - 1
    );
    assert_eq!(ours().len(), before.len() - 1, "{before:?} -> {:?}", ours());
    let (matched, report) = probe_json(&name, "8080/TCP");
    assert!(matched, "mismatches: {}", report["mismatches"]);
    assert!(
        !report["pods"]
            .as_array()
            .expect("pods")
            .iter()
            .any(|p| p == "fresh/extra"),
        "{report}"
    );
    let again = run(&["lab", "--name", &name, "delete", "pod", "fresh/extra"]);
    assert!(!again.status.success(), "a second delete must fail");

    ok(&["lab", "--name", &name, "down"]);
    assert!(ours().is_empty(), "left behind: {:?}", ours());
}

/// A pod manifest in namespace `ns` on node `node` (no address: IPAM gives it).
fn pod_yaml(ns: &str, name: &str, node: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}}}}}\n\
         spec: {{nodeName: {node}, containers: [{{name: c, image: x, ports: [{{containerPort: {port}}}]}}]}}\n---\n"
    )
}

/// A plugin that fails (a pod whose manifest address no route can use): `lab up` fails with
/// the pod, the plugin and the plugin's own message, and leaves nothing behind.
#[test]
fn a_cni_plugin_failure_names_pod_plugin_and_message_and_leaves_nothing() {
    if skip_unless_root("a_cni_plugin_failure_names_pod_plugin_and_message_and_leaves_nothing") {
        return;
    }
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        format!(
            "{}apiVersion: v1\nkind: Pod\nmetadata: {{name: bad, namespace: v}}\n\
             spec: {{containers: [{{name: c}}]}}\nstatus: {{podIP: 224.0.0.5}}\n",
            pod_yaml("v", "fine", "n1", 80)
        ),
    )
    .expect("write");
    for cni in ["bridge", "ptp"] {
        let name = lab_name(&format!("fail{cni}"));
        let _guard = LabGuard(name.clone());
        let out = run(&[
            "lab",
            "--name",
            &name,
            "up",
            "--no-agents",
            "--cni",
            cni,
            "-f",
            &file.display().to_string(),
        ]);
        assert!(!out.status.success(), "up must fail under {cni}");
        let err = String::from_utf8_lossy(&out.stderr);
        for part in [
            "pod v/bad",
            &format!("CNI plugin {cni} failed"),
            "network is unreachable",
        ] {
            assert!(err.contains(part), "{cni}: {part:?} not in {err}");
        }
        let id = palisade_lab::LabNames::new(&name).expect("name").id;
        let left: Vec<String> = netns_list()
            .into_iter()
            .filter(|n| n.contains(&id))
            .collect();
        assert!(left.is_empty(), "{cni}: namespaces left: {left:?}");
        assert!(!Path::new(&format!("/run/palisade/lab/{name}")).exists());
    }
}

/// Host interfaces and routes of both families, for before/after comparisons.
fn host_snapshot() -> (BTreeSet<String>, String, String) {
    (
        host_links(),
        host(&["-4", "route", "show", "table", "all"]),
        host(&["-6", "route", "show", "table", "all"]),
    )
}

/// `lab down` of a lab under each real CNI (dual-stack under bridge, IPv6 only under ptp),
/// with a pod added and one deleted while it ran: no namespace, interface, route, CNI state (records, host-local leases) or
/// process is left, and nothing was written under /var/lib/cni.
#[test]
fn lab_down_leaves_nothing_behind() {
    if skip_unless_root("lab_down_leaves_nothing_behind") {
        return;
    }
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed");
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = dir.path().join("extra.yaml");
    std::fs::write(&extra, pod_yaml("fresh", "extra", "n2", 8080)).expect("write");
    for (cni, family) in [("bridge", "dual"), ("ptp", "ipv6")] {
        let before = host_snapshot();
        let var_lib_cni = std::fs::read_dir("/var/lib/cni/networks")
            .map(|d| d.count())
            .unwrap_or(0);
        let name = lab_name(&format!("down{cni}"));
        let _guard = LabGuard(name.clone());
        let status = json(&[
            "lab",
            "--name",
            &name,
            "up",
            "-f",
            &seed.display().to_string(),
            "--cni",
            cni,
            "--ip-family",
            family,
            "-o",
            "json",
        ]);
        assert_eq!(status["ip_family"], family);
        let pods = status["pods"].as_array().expect("pods");
        let families = |p: &Value| -> Vec<bool> {
            p["ips"]
                .as_array()
                .expect("ips")
                .iter()
                .map(|ip| ip.as_str().expect("ip").contains(':'))
                .collect()
        };
        let want = if family == "dual" {
            vec![false, true]
        } else {
            vec![true]
        };
        assert!(
            pods.iter().all(|p| families(p) == want),
            "{family} pods from host-local: {pods:?}"
        );
        ok(&[
            "lab",
            "--name",
            &name,
            "apply",
            "-f",
            &extra.display().to_string(),
        ]);
        ok(&["lab", "--name", &name, "delete", "pod", "bob/client"]);
        let (matched, report) = probe_json(&name, "8080/TCP");
        assert!(matched, "{cni}: mismatches: {}", report["mismatches"]);
        let state = format!("/run/palisade/lab/{name}/cni");
        assert!(Path::new(&state).join("ipam").exists(), "{state}");

        let down = json(&["lab", "--name", &name, "down", "-o", "json"]);
        assert!(down.get("cni_errors").is_none(), "{down}");
        let prefix = format!("pal-{}-", status["id"].as_str().expect("id"));
        let left: Vec<String> = netns_list()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect();
        assert!(left.is_empty(), "{cni}: namespaces left: {left:?}");
        assert!(!Path::new(&format!("/run/palisade/lab/{name}")).exists());
        assert_eq!(
            host_snapshot(),
            before,
            "{cni}: host interfaces or routes changed"
        );
        let now = std::fs::read_dir("/var/lib/cni/networks")
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(now, var_lib_cni, "something was written under /var/lib/cni");
        let left = lab_processes(&name, &prefix);
        assert!(left.is_empty(), "{cni}: processes left: {left:?}");
    }
}

/// Processes of the lab `name` (whose namespaces start with `prefix`): its own commands, and
/// CNI plugins called for its pods (their `CNI_NETNS` names one of its namespaces). Plugins
/// that other tests' labs run at the same moment are not this lab's.
fn lab_processes(name: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
            continue;
        };
        let args = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let environ = std::fs::read(path.join("environ")).unwrap_or_default();
        let netns = format!("CNI_NETNS=/run/netns/{prefix}");
        let ours_in_env = String::from_utf8_lossy(&environ).contains(&netns);
        if args.contains(name) || (args.contains("/usr/lib/cni/") && ours_in_env) {
            out.push(args);
        }
    }
    out
}

/// `examples/dual-stack-lab`: web admits port 80 from an IPv4 block only. Over IPv4 the
/// dual-stack clients reach it; over IPv6 no pod does (the IPv6-only pod included), under a
/// real CNI with address matching and under the lab's wiring with interface matching.
#[test]
fn an_ipv4_block_never_admits_ipv6() {
    if skip_unless_root("an_ipv4_block_never_admits_ipv6") {
        return;
    }
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/dual-stack-lab");
    for cni in ["bridge", "palisade"] {
        let name = lab_name(&format!("ds{cni}"));
        let _guard = LabGuard(name.clone());
        ok(&[
            "lab",
            "--name",
            &name,
            "up",
            "--cni",
            cni,
            "-f",
            &example.display().to_string(),
        ]);
        let reach = |family: &str| -> (Vec<String>, Vec<bool>) {
            let out = run(&[
                "lab", "--name", &name, "probe", "--probe", "80/TCP", "--family", family, "-o",
                "json",
            ]);
            let report: Value = serde_json::from_slice(&out.stdout).expect("probe json");
            assert!(
                out.status.success(),
                "{cni} {family}: mismatches {}",
                report["mismatches"]
            );
            let pods: Vec<String> = report["pods"]
                .as_array()
                .expect("pods")
                .iter()
                .map(|p| p.as_str().expect("pod").to_string())
                .collect();
            let web = pods.iter().position(|p| p == "dual/web").expect("web");
            let column = report["probes"][0]["allowed"]
                .as_array()
                .expect("rows")
                .iter()
                .map(|row| row[web] == true)
                .collect();
            (pods, column)
        };
        let (pods, to_web) = reach("ipv4");
        assert!(!pods.contains(&"dual/six".to_string()), "{pods:?}");
        for (p, reached) in pods.iter().zip(&to_web) {
            assert!(*reached, "{cni}: {p} -> web over IPv4 must be admitted");
        }
        let (pods, to_web) = reach("ipv6");
        assert!(pods.contains(&"dual/six".to_string()), "{pods:?}");
        for (p, reached) in pods.iter().zip(&to_web) {
            assert_eq!(
                *reached,
                p == "dual/web",
                "{cni}: {p} -> web over IPv6 (only web itself)"
            );
        }
    }
}

/// Runs `act` while tcpdump captures inside network namespace `netns` (on `eth0`, packets
/// matching `filter`); the packets captured, one line each.
fn captured(netns: &str, filter: &str, act: impl FnOnce()) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    let mut dump = Command::new("ip")
        .args(["netns", "exec", netns, "tcpdump", "-i", "eth0", "-n", "-l"])
        .args(["--immediate-mode", filter])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tcpdump");
    let mut err = BufReader::new(dump.stderr.take().expect("stderr"));
    let mut line = String::new();
    while err.read_line(&mut line).expect("tcpdump stderr") > 0 && !line.contains("listening") {
        line.clear();
    }
    assert!(line.contains("listening"), "tcpdump did not start: {line}");
    act();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: kill(2) of our own child.
    unsafe {
        libc::kill(dump.id() as i32, libc::SIGTERM);
    }
    let out = dump.wait_with_output().expect("tcpdump output");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// A pod that takes another pod's address gets nothing through: `s/web` admits only
/// `s/good`; `s/bad`, on the same node (and, under `bridge`, the same bridge), adds good's
/// address to its `eth0` and sends TCP and UDP from it to web. Captured inside web's
/// namespace: not one packet. Both dataplanes, both real CNIs, address matching.
#[test]
fn a_spoofed_source_address_gets_nothing_through() {
    if skip_unless_root("a_spoofed_source_address_gets_nothing_through") {
        return;
    }
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("spoof.yaml");
    std::fs::write(
        &file,
        format!(
            "{}{}{}apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
             metadata: {{name: web-from-good, namespace: s}}\n\
             spec: {{podSelector: {{matchLabels: {{app: web}}}}, ingress: [{{from: [{{podSelector: {{matchLabels: {{app: good}}}}}}]}}]}}\n",
            pod_yaml("s", "web", "n1", 80),
            pod_yaml("s", "good", "n1", 80),
            pod_yaml("s", "bad", "n1", 80),
        ),
    )
    .expect("write");
    for dataplane in ["nftables", "iptables"] {
        for cni in ["bridge", "ptp"] {
            let name = lab_name(&format!("spoof{}{cni}", &dataplane[..3]));
            let _guard = LabGuard(name.clone());
            let status = json(&[
                "lab",
                "--name",
                &name,
                "up",
                "--dataplane",
                dataplane,
                "--cni",
                cni,
                "-f",
                &file.display().to_string(),
                "-o",
                "json",
            ]);
            let pod = |n: &str| -> Value {
                status["pods"]
                    .as_array()
                    .expect("pods")
                    .iter()
                    .find(|p| p["pod"] == format!("s/{n}"))
                    .cloned()
                    .unwrap_or_else(|| panic!("no s/{n}: {status}"))
            };
            let (web, good) = (pod("web"), pod("good"));
            let web_ip = web["ip"].as_str().expect("ip").to_string();
            let good_ip = good["ip"].as_str().expect("ip").to_string();
            let web_ns = web["netns"].as_str().expect("netns").to_string();
            let filter = format!("src host {good_ip} and dst host {web_ip} and port 80");
            let what = format!("{dataplane}, cni {cni}");

            // The capture sees good's own traffic to web.
            let seen = captured(&web_ns, &filter, || {
                ok(&[
                    "lab",
                    "--name",
                    &name,
                    "exec",
                    "s/good",
                    "--",
                    "curl",
                    "-s",
                    "-m",
                    "2",
                    &format!("http://{web_ip}/"),
                ]);
            });
            assert!(
                !seen.is_empty(),
                "{what}: the capture saw nothing of good's request"
            );

            // bad takes good's address and sends from it.
            ok(&[
                "lab",
                "--name",
                &name,
                "exec",
                "s/bad",
                "--",
                "ip",
                "addr",
                "add",
                &format!("{good_ip}/32"),
                "dev",
                "eth0",
            ]);
            // TCP (curl binds good's address) and UDP (netcat, three datagrams) from it.
            let seen = captured(&web_ns, &filter, || {
                let _ = run(&[
                    "lab",
                    "--name",
                    &name,
                    "exec",
                    "s/bad",
                    "--",
                    "curl",
                    "-s",
                    "-m",
                    "1",
                    "--interface",
                    &good_ip,
                    &format!("http://{web_ip}/"),
                ]);
                let udp = format!(
                    "for i in 1 2 3; do echo spoofed | nc -u -w 0 -s {good_ip} {web_ip} 80; done"
                );
                ok(&[
                    "lab", "--name", &name, "exec", "s/bad", "--", "sh", "-c", &udp,
                ]);
            });
            assert!(
                seen.is_empty(),
                "{what}: spoofed packets reached web:\n{}",
                seen.join("\n")
            );
        }
    }
}
