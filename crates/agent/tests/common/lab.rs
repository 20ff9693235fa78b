//! Root-only helpers: a node network namespace with pod namespaces on veths (host side named
//! as the agent expects, Calico style: /32 routes, proxy ARP), TCP listeners and probes.
//! Everything lives in throwaway namespaces removed by drop guards.

use palisade_dataplane::netns::{is_root, NetnsGuard};
use palisade_model::endpoint::interface_name;
use palisade_model::Endpoint;

/// Why a root test cannot run here, if it cannot.
pub fn skip_reason(tools: &[&str]) -> Option<String> {
    if !is_root() {
        return Some("needs root to create network namespaces".into());
    }
    for t in tools {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("tool {t} is not installed"));
        }
    }
    None
}

pub fn sh(ns: &NetnsGuard, program: &str, args: &[&str]) -> String {
    let out = ns.run(program, args, None).unwrap();
    assert!(
        out.success(),
        "{program} {args:?} in {}: {}",
        ns.name(),
        out.stderr
    );
    out.stdout
}

pub struct Lab {
    pub node: NetnsGuard,
    /// Pod namespaces with their address, in the order given.
    pub pods: Vec<(NetnsGuard, String)>,
}

impl Lab {
    /// A node namespace and one pod namespace per endpoint (first IPv4 address), joined by
    /// veths named `interface_name(prefix, id)` on the node side.
    pub fn new(tag: &str, prefix: &str, endpoints: &[&Endpoint]) -> Lab {
        let node = NetnsGuard::new(tag).unwrap();
        sh(&node, "sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        let pods = endpoints
            .iter()
            .map(|ep| {
                let pod = veth_pod(&node, prefix, ep);
                (pod, ep.ips[0].to_string())
            })
            .collect();
        Lab { node, pods }
    }
}

/// A pod namespace for `ep` (its first IPv4 address) joined to `node` by a veth whose node
/// side is `interface_name(prefix, id)`, Calico style: a /32 route and proxy ARP answering at
/// once (the default delays proxy answers randomly). Removed with its guard.
pub fn veth_pod(node: &NetnsGuard, prefix: &str, ep: &Endpoint) -> NetnsGuard {
    routed_pod(node, &interface_name(prefix, &ep.id), ep)
}

/// [`veth_pod`] with the node side of the veth named `iface`.
pub fn routed_pod(node: &NetnsGuard, iface: &str, ep: &Endpoint) -> NetnsGuard {
    let iface = iface.to_string();
    let addr = ep.ips[0].to_string();
    let pod = NetnsGuard::new("pod").unwrap();
    let add = std::process::Command::new("ip")
        .args(["link", "add", &iface, "netns", node.name(), "type", "veth"])
        .args(["peer", "name", "eth0", "netns", pod.name()])
        .output()
        .unwrap();
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    sh(node, "ip", &["link", "set", &iface, "up"]);
    for knob in [
        format!("net.ipv4.conf.{iface}.proxy_arp=1"),
        format!("net.ipv4.neigh.{iface}.proxy_delay=0"),
    ] {
        sh(node, "sysctl", &["-qw", &knob]);
    }
    sh(
        node,
        "ip",
        &["route", "add", &format!("{addr}/32"), "dev", &iface],
    );
    sh(
        &pod,
        "ip",
        &["addr", "add", &format!("{addr}/32"), "dev", "eth0"],
    );
    sh(&pod, "ip", &["link", "set", "eth0", "up"]);
    sh(&pod, "ip", &["route", "add", "default", "dev", "eth0"]);
    pod
}

/// Serves TCP on `port` inside `pod` until dropped.
pub struct Listener(std::process::Child);

impl Listener {
    pub fn start(pod: &NetnsGuard, port: u16) -> Listener {
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", pod.name(), "nc", "-lk", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Owned by the guard from here on: killed and reaped on drop, also on panic.
        let listener = Listener(child);
        let listening = (0..2000).any(|_| {
            let ss = pod
                .run("ss", &["-Hltn", &format!("sport = :{port}")], None)
                .unwrap();
            std::thread::yield_now();
            !ss.stdout.trim().is_empty()
        });
        assert!(listening, "listener on port {port} did not come up");
        listener
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether a TCP connection from `from` to `addr:port` succeeds within a second.
pub fn connects(from: &NetnsGuard, addr: &str, port: u16) -> bool {
    from.run("nc", &["-z", "-w", "1", addr, &port.to_string()], None)
        .unwrap()
        .success()
}
