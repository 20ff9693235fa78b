//! Root tests of address matching and anti-spoofing with real packets: pods on routed veths
//! (a /32 route each, Palisade's lab wiring) and on one Linux bridge (the `bridge` CNI's
//! wiring), both dataplanes. A pod that adds another local pod's address to its `eth0` and
//! connects from it must get no packet to a destination that admits only the real owner:
//! checked by capturing inside the destination's namespace. Also: the bridge sysctl check.
//! Without root or a tool, each test prints why and passes.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use common::lab::{connects, routed_pod, sh, skip_reason, veth_pod, Listener};
use common::*;
use palisade_agent::run::build_dataplane;
use palisade_agent::{Agent, DataplaneKind};
use palisade_dataplane::netns::NetnsGuard;
use palisade_model::Endpoint;
use palisade_store::{Datastore, EmbeddedStore, StoredObject};

const T: Duration = Duration::from_secs(20);
const KINDS: [DataplaneKind; 2] = [DataplaneKind::Iptables, DataplaneKind::Nftables];

fn skip(tools: &[&str]) -> bool {
    match skip_reason(tools) {
        Some(why) => {
            eprintln!("skipped: {why}");
            true
        }
        None => false,
    }
}

/// `web`, `client`, `other` of [`objects`], in that order.
fn local_pods() -> Vec<Endpoint> {
    objects()
        .into_iter()
        .filter_map(|o| match o {
            StoredObject::Endpoint(e) if e.node.as_deref() == Some(NODE) => Some(e),
            _ => None,
        })
        .collect()
}

/// A node namespace with `br0` (10.0.0.254/24) and one pod per endpoint on it, the way the
/// reference `bridge` CNI wires them: a veth port on the bridge, the pod's address in the
/// bridge's subnet, the default route via the bridge.
fn bridged(tag: &str, pods: &[Endpoint]) -> (NetnsGuard, Vec<NetnsGuard>) {
    let node = NetnsGuard::new(tag).unwrap();
    sh(&node, "sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    sh(&node, "ip", &["link", "add", "br0", "type", "bridge"]);
    sh(&node, "ip", &["addr", "add", "10.0.0.254/24", "dev", "br0"]);
    sh(&node, "ip", &["link", "set", "br0", "up"]);
    let mut out = Vec::new();
    for (i, ep) in pods.iter().enumerate() {
        let pod = NetnsGuard::new("addrp").unwrap();
        let port = format!("vbr{i}");
        let add = Command::new("ip")
            .args(["link", "add", &port, "netns", node.name(), "type", "veth"])
            .args(["peer", "name", "eth0", "netns", pod.name()])
            .output()
            .unwrap();
        assert!(
            add.status.success(),
            "{}",
            String::from_utf8_lossy(&add.stderr)
        );
        sh(&node, "ip", &["link", "set", &port, "master", "br0"]);
        sh(&node, "ip", &["link", "set", &port, "up"]);
        let addr = format!("{}/24", ep.ips[0]);
        sh(&pod, "ip", &["addr", "add", &addr, "dev", "eth0"]);
        sh(&pod, "ip", &["link", "set", "eth0", "up"]);
        sh(
            &pod,
            "ip",
            &["route", "add", "default", "via", "10.0.0.254"],
        );
        out.push(pod);
    }
    (node, out)
}

/// tcpdump inside a namespace, printing one line per captured packet.
struct Capture {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Capture {
    fn start(ns: &NetnsGuard, filter: &str) -> Capture {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(),
                "tcpdump",
                "-i",
                "eth0",
                "-n",
                "-l",
            ])
            .arg(filter)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // tcpdump says "listening on eth0" on stderr once its socket is open.
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut said = String::new();
        while !said.contains("listening") {
            let mut line = String::new();
            if err.read_line(&mut line).unwrap() == 0 {
                panic!("tcpdump stopped: {said}");
            }
            said.push_str(&line);
        }
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Capture {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits (up to `timeout`) for a line containing `needle`; every line seen is kept.
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.seen.iter().any(|l| l.contains(needle)) {
                return true;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => return false,
            }
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `other` takes `client`'s address (10.0.0.2) and connects to web:80 from it (source port
/// 4444); then the real client connects (port 5555). Inside web's namespace the real
/// client's SYN must arrive and the spoofed one must not.
fn spoofing_gets_nothing_through(
    web: &NetnsGuard,
    client: &NetnsGuard,
    other: &NetnsGuard,
    prefix: &str,
    what: &str,
) {
    sh(
        other,
        "ip",
        &["addr", "add", &format!("10.0.0.2/{prefix}"), "dev", "eth0"],
    );
    let mut cap = Capture::start(web, "tcp dst port 80 and src host 10.0.0.2");
    let _ = other.run(
        "nc",
        &[
            "-z", "-w", "1", "-s", "10.0.0.2", "-p", "4444", "10.0.0.1", "80",
        ],
        None,
    );
    let _ = client.run(
        "nc",
        &["-z", "-w", "1", "-p", "5555", "10.0.0.1", "80"],
        None,
    );
    assert!(
        cap.wait_for("10.0.0.2.5555 >", Duration::from_secs(5)),
        "{what}: the real client's SYN must reach web: {:?}",
        cap.seen
    );
    assert!(
        !cap.seen.iter().any(|l| l.contains(".4444 >")),
        "{what}: a spoofed SYN reached web: {:?}",
        cap.seen
    );
}

async fn start_agent(node: &NetnsGuard, kind: DataplaneKind) -> (Running, Arc<dyn Datastore>) {
    start_agent_with(node, config(kind)).await
}

async fn start_agent_with(
    node: &NetnsGuard,
    mut cfg: palisade_agent::AgentConfig,
) -> (Running, Arc<dyn Datastore>) {
    let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::new());
    put_all(store.as_ref(), &objects()).await;
    cfg.netns = Some(node.name().to_string());
    let runner = Arc::new(node.runner());
    let dp = build_dataplane(&cfg, runner.clone());
    let run = Running::start(
        Agent::new(cfg, store.clone(), dp)
            .unwrap()
            .with_kernel(runner)
            .with_sync_backoff(Duration::from_millis(50), Duration::from_millis(500)),
    );
    run.wait_ready(T).await;
    (run, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_pods_are_found_by_address_and_cannot_spoof() {
    if skip(&["ip", "nc", "tcpdump", "iptables", "ipset", "nft"]) {
        return;
    }
    for kind in KINDS {
        let pods = local_pods();
        let node = NetnsGuard::new("addrr").unwrap();
        sh(&node, "sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        // Interface names the agent cannot guess: only addresses find these pods.
        let nets: Vec<NetnsGuard> = pods.iter().map(|p| veth_pod(&node, "xyz", p)).collect();
        let (web, client, other) = (&nets[0], &nets[1], &nets[2]);
        let _l = Listener::start(web, 80);
        let (run, _store) = start_agent(&node, kind).await;
        assert!(
            connects(client, "10.0.0.1", 80),
            "{kind}: client -> web allowed"
        );
        assert!(
            !connects(other, "10.0.0.1", 80),
            "{kind}: other -> web denied by address"
        );
        spoofing_gets_nothing_through(web, client, other, "32", &format!("{kind} routed"));
        let report = palisade_agent::CountersReport::new(
            NODE,
            kind.as_str(),
            0,
            vec![],
            &run.shared.dataplane.lock().unwrap().counters().unwrap(),
        );
        assert!(
            report.spoofed_packets > 0,
            "{kind}: spoofed packets are counted"
        );
        run.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridged_pods_are_found_by_address_and_cannot_spoof() {
    if skip(&["ip", "nc", "tcpdump", "iptables", "ipset", "nft"]) {
        return;
    }
    for kind in KINDS {
        let (node, nets) = bridged("addrb", &local_pods());
        let (web, client, other) = (&nets[0], &nets[1], &nets[2]);
        let _l = Listener::start(web, 80);
        let (run, _store) = start_agent(&node, kind).await;
        // Bridged traffic meets the rules only with the sysctl on: the agent set it.
        assert_eq!(
            sh(
                &node,
                "cat",
                &["/proc/sys/net/bridge/bridge-nf-call-iptables"]
            )
            .trim(),
            "1"
        );
        let dump = || match kind {
            DataplaneKind::Iptables => {
                sh(&node, "iptables-save", &["-c"]) + &sh(&node, "ipset", &["list"])
            }
            DataplaneKind::Nftables => sh(&node, "nft", &["list", "ruleset"]),
        };
        assert!(
            connects(client, "10.0.0.1", 80),
            "{kind}: client -> web allowed\n{}",
            dump()
        );
        assert!(
            !connects(other, "10.0.0.1", 80),
            "{kind}: other -> web denied (bridged)\n{}",
            dump()
        );
        spoofing_gets_nothing_through(web, client, other, "24", &format!("{kind} bridged"));
        // Dropped at the bridge port, and counted there.
        assert!(
            palisade_agent::bridge_guard::dropped(&node.runner()) > 0,
            "{kind}: {}",
            dump()
        );
        run.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_sysctl_that_is_off_is_set_or_named() {
    if skip(&["ip", "nft"]) {
        return;
    }
    let node = NetnsGuard::new("addrs").unwrap();
    let file = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    sh(&node, "sh", &["-c", &format!("echo 0 > {file}")]);
    let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::new());
    put_all(store.as_ref(), &objects()).await;
    let start = |set: bool| {
        let mut cfg = config(DataplaneKind::Nftables);
        cfg.netns = Some(node.name().to_string());
        cfg.set_bridge_sysctls = set;
        let runner = Arc::new(node.runner());
        let dp = build_dataplane(&cfg, runner.clone());
        Running::start(
            Agent::new(cfg, store.clone(), dp)
                .unwrap()
                .with_kernel(runner),
        )
    };
    // Told not to set it: not ready, and /readyz's reason names the sysctl.
    let run = start(false);
    let shared = run.shared.clone();
    wait_for("the reason names the sysctl", T, || {
        shared
            .progress()
            .not_ready_reason()
            .is_some_and(|r| r.contains("net.bridge.bridge-nf-call-iptables"))
    })
    .await;
    assert_eq!(sh(&node, "cat", &[file]).trim(), "0", "left alone");
    run.stop().await;
    // By default it is set, and the agent gets ready.
    let run = start(true);
    run.wait_ready(T).await;
    assert_eq!(sh(&node, "cat", &[file]).trim(), "1");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calico_named_veths_are_enforced_in_interface_mode() {
    if skip(&["ip", "nc", "tcpdump", "iptables", "ipset", "nft"]) {
        return;
    }
    for kind in KINDS {
        let pods = local_pods();
        let node = NetnsGuard::new("addrc").unwrap();
        sh(&node, "sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        // Wired as Calico's CNI names them: cali + SHA-1 of namespace.pod.
        let nets: Vec<NetnsGuard> = pods
            .iter()
            .map(|p| {
                routed_pod(
                    &node,
                    &palisade_model::endpoint::calico_interface_name(&p.id),
                    p,
                )
            })
            .collect();
        let (web, client, other) = (&nets[0], &nets[1], &nets[2]);
        let _l = Listener::start(web, 80);
        let mut cfg = config(kind);
        cfg.render.endpoint_match = palisade_agent::config::EndpointMatch::Interface;
        cfg.iface_naming = palisade_calc::IfaceNaming::Calico;
        let (run, _store) = start_agent_with(&node, cfg).await;
        let rules = match kind {
            DataplaneKind::Iptables => sh(&node, "iptables-save", &[]),
            DataplaneKind::Nftables => sh(&node, "nft", &["list", "ruleset"]),
        };
        let web_if = palisade_model::endpoint::calico_interface_name(&pods[0].id);
        assert!(
            rules.contains(&web_if),
            "{kind}: {web_if} dispatched:\n{rules}"
        );
        assert!(
            connects(client, "10.0.0.1", 80),
            "{kind}: client -> web allowed"
        );
        assert!(
            !connects(other, "10.0.0.1", 80),
            "{kind}: other -> web denied at its cali veth"
        );
        // Interface matching does not trust a source address either.
        spoofing_gets_nothing_through(web, client, other, "32", &format!("{kind} calico"));
        run.stop().await;
    }
}
