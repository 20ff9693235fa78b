//! Root tests: IPv6 pods found by address, real TCP and ICMPv6 through the rules of both
//! dataplanes, on routed veths and on a bridge, and neighbour discovery under a default deny
//! (on a bridge a pod's neighbour advertisement to a deny-all pod crosses the forward hook).
//! Without root or a tool, each test prints why and passes.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::lab::{sh, skip_reason};
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

/// web fd01::1, client fd01::2 (isolated for ingress), other fd01::3; web admits client:80.
fn objects_v6() -> Vec<StoredObject> {
    let v6 = |name: &str, ip: &str, app: &str| pod("prod", name, NODE, ip, app);
    vec![
        StoredObject::Namespace(palisade_model::Namespace::implicit("prod")),
        StoredObject::Endpoint(v6("web", "fd01::1", "web")),
        StoredObject::Endpoint(v6("client", "fd01::2", "client")),
        StoredObject::Endpoint(v6("other", "fd01::3", "other")),
        StoredObject::Policy(allow_client_to_web()),
        StoredObject::Policy(deny_to_client()),
    ]
}

fn pods(objs: &[StoredObject]) -> Vec<Endpoint> {
    objs.iter()
        .filter_map(|o| match o {
            StoredObject::Endpoint(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn veth(node: &NetnsGuard, port: &str) -> NetnsGuard {
    let pod = NetnsGuard::new("addr6p").unwrap();
    let add = Command::new("ip")
        .args(["link", "add", port, "netns", node.name(), "type", "veth"])
        .args(["peer", "name", "eth0", "netns", pod.name()])
        .output()
        .unwrap();
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    pod
}

/// Routed: a /128 route per pod over its veth; the pod's default route via fe80::1 on the
/// node side of its veth.
fn routed(node: &NetnsGuard, eps: &[Endpoint]) -> Vec<NetnsGuard> {
    eps.iter()
        .enumerate()
        .map(|(i, ep)| {
            let port = format!("v6r{i}");
            let pod = veth(node, &port);
            let ip = ep.ips[0].to_string();
            sh(
                node,
                "ip",
                &["addr", "add", "fe80::1/64", "dev", &port, "nodad"],
            );
            sh(node, "ip", &["link", "set", &port, "up"]);
            sh(
                node,
                "ip",
                &["route", "add", &format!("{ip}/128"), "dev", &port],
            );
            sh(
                &pod,
                "ip",
                &["addr", "add", &format!("{ip}/128"), "dev", "eth0", "nodad"],
            );
            sh(&pod, "ip", &["link", "set", "eth0", "up"]);
            sh(
                &pod,
                "ip",
                &[
                    "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0",
                ],
            );
            pod
        })
        .collect()
}

/// Bridged: every pod in fd01::/64 on `br0` (fd01::fe).
fn bridged(node: &NetnsGuard, eps: &[Endpoint]) -> Vec<NetnsGuard> {
    sh(node, "ip", &["link", "add", "br0", "type", "bridge"]);
    sh(
        node,
        "ip",
        &["addr", "add", "fd01::fe/64", "dev", "br0", "nodad"],
    );
    sh(node, "ip", &["link", "set", "br0", "up"]);
    eps.iter()
        .enumerate()
        .map(|(i, ep)| {
            let port = format!("v6b{i}");
            let pod = veth(node, &port);
            sh(node, "ip", &["link", "set", &port, "master", "br0"]);
            sh(node, "ip", &["link", "set", &port, "up"]);
            let ip = format!("{}/64", ep.ips[0]);
            sh(&pod, "ip", &["addr", "add", &ip, "dev", "eth0", "nodad"]);
            sh(&pod, "ip", &["link", "set", "eth0", "up"]);
            pod
        })
        .collect()
}

/// `nc -6 -lk 80` inside a pod until dropped (plain `nc -l` listens on IPv4 only).
struct Listener6(std::process::Child);

impl Listener6 {
    fn start(pod: &NetnsGuard) -> Listener6 {
        let child = Command::new("ip")
            .args(["netns", "exec", pod.name(), "nc", "-6", "-lk", "80"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let l = Listener6(child);
        let up = (0..2000).any(|_| {
            let ss = pod.run("ss", &["-Hltn6", "sport = :80"], None).unwrap();
            std::thread::yield_now();
            !ss.stdout.trim().is_empty()
        });
        assert!(up, "IPv6 listener did not come up");
        l
    }
}

impl Drop for Listener6 {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tcp(from: &NetnsGuard, to: &str) -> bool {
    from.run("nc", &["-6", "-z", "-w", "1", to, "80"], None)
        .unwrap()
        .success()
}

fn ping(from: &NetnsGuard, to: &str) -> bool {
    from.run("ping", &["-6", "-c", "1", "-W", "1", to], None)
        .unwrap()
        .success()
}

async fn check(kind: DataplaneKind, wiring: &str) {
    let objs = objects_v6();
    let node = NetnsGuard::new("addr6").unwrap();
    sh(&node, "sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"]);
    let nets = match wiring {
        "routed" => routed(&node, &pods(&objs)),
        _ => bridged(&node, &pods(&objs)),
    };
    let (web, client, other) = (&nets[0], &nets[1], &nets[2]);
    let _l = Listener6::start(web);
    let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::new());
    put_all(store.as_ref(), &objs).await;
    let mut cfg = config(kind);
    cfg.netns = Some(node.name().to_string());
    let runner = Arc::new(node.runner());
    let dp = build_dataplane(&cfg, runner.clone());
    let run = Running::start(
        Agent::new(cfg, store, dp)
            .unwrap()
            .with_kernel(runner)
            .with_sync_backoff(Duration::from_millis(50), Duration::from_millis(500)),
    );
    run.wait_ready(T).await;
    let what = format!("{kind} {wiring}");
    // client is isolated for ingress: on the bridge, web's neighbour advertisements to it
    // cross the forward hook; they pass (NDP is always allowed), so the connection works.
    assert!(tcp(client, "fd01::1"), "{what}: client -> web:80 allowed");
    assert!(!tcp(other, "fd01::1"), "{what}: other -> web:80 denied");
    assert!(!ping(client, "fd01::1"), "{what}: web admits only TCP 80");
    assert!(
        ping(web, "fd01::3"),
        "{what}: other is open: ICMPv6 echo passes"
    );
    assert!(!ping(web, "fd01::2"), "{what}: client denies everything in");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_pods_on_routed_veths_and_on_a_bridge() {
    if skip(&["ip", "nc", "ping", "iptables", "ip6tables", "ipset", "nft"]) {
        return;
    }
    for kind in KINDS {
        for wiring in ["routed", "bridged"] {
            check(kind, wiring).await;
        }
    }
}
