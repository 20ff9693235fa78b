//! Building and tearing down the lab's namespaces and routes (see [`crate::names`],
//! [`crate::plan`] and [`crate::addressing`] for the names and addresses).
//!
//! ```text
//!  pod netns: eth0 wired by the CNI plugin (bridge, ptp: [`crate::cni`]) or by the lab
//!     (--cni palisade: a veth named interface_name("pal", pod), MAC ee:ee:ee:ee:ee:ee,
//!      pod address /32 and /128, default via 169.254.1.1 / fe80::1)
//!  node netns n1 (forwarding) ──lnk-2── lnk-1── node netns n2
//!     a route per remote pod address via the owning node's link address (one veth per
//!     pair of nodes: 169.254.255.<i>, fd00:ffff::<i>)
//!     the addresses of its Node manifest on lo, routed to it by every other node
//!     host-networked pods: no namespace of their own, their servers run in their node's
//! ```
//!
//! Everything is created with `ip -n` (or by a plugin running in a node's namespace), directly
//! inside the lab's namespaces: nothing is ever created in, moved through or routed to the
//! host's own namespace. Duplicate address detection is off in every lab namespace (pods'
//! IPv6 addresses are usable at once).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::addressing::{cidr, link_addr, GATEWAY_V6};
use crate::cmd::{ip_in, run, sysctl_in};
use crate::cni;
use crate::error::Result;
use crate::names::{link_name, LabNames, GATEWAY, GATEWAY_MAC};
use crate::plan::{NodePlan, Plan, PodPlan, Wiring};
use crate::wiring::Cni;

const NO_DAD: [&str; 2] = [
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
];

/// Creates a namespace without DAD; `created` gets its name first, so a failure half-way is
/// still cleaned up. Loopback is left to the caller (the `loopback` plugin under a CNI).
fn add_netns(name: &str, created: &mut Vec<String>) -> Result<()> {
    run("ip", &["netns", "add", name])?;
    created.push(name.to_string());
    sysctl_in(name, &NO_DAD)
}

/// Builds the whole topology and wires every pod (filling in the addresses IPAM gives).
/// `created` records every namespace as soon as it exists (the caller persists it and
/// destroys it on failure).
pub fn build(
    names: &LabNames,
    wiring: Wiring,
    plan: &mut Plan,
    created: &mut Vec<String>,
) -> Result<()> {
    for node in &plan.nodes {
        add_netns(&node.netns, created)?;
        ip_in(&node.netns, &["link", "set", "lo", "up"])?;
        sysctl_in(
            &node.netns,
            &[
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            ],
        )?;
        cni::prepare_node(wiring.cni, node, plan)?;
    }
    for (i, a) in plan.nodes.iter().enumerate() {
        for b in &plan.nodes[i + 1..] {
            link_nodes(a, b)?;
        }
    }
    for node in &plan.nodes {
        add_node_addresses(plan, node)?;
    }
    for k in 0..plan.pods.len() {
        if plan.pods[k].host_network {
            continue;
        }
        let mut pod = plan.pods[k].clone();
        let built = build_pod(names, wiring, plan, &mut pod, created);
        plan.pods[k] = pod;
        built?;
    }
    Ok(())
}

/// One pod: its namespace, its wiring to its node, and the other nodes' routes to it.
/// Under a CNI, `pod.ips` and `pod.interface` come from the plugin's result; if the plugin
/// fails, DEL undoes what it made (the caller removes the namespace).
pub fn build_pod(
    names: &LabNames,
    wiring: Wiring,
    plan: &Plan,
    pod: &mut PodPlan,
    created: &mut Vec<String>,
) -> Result<()> {
    add_netns(&pod.netns, created)?;
    let Some(node) = plan.node(&pod.node) else {
        return Ok(());
    };
    match wiring.cni {
        Cni::Palisade => {
            ip_in(&pod.netns, &["link", "set", "lo", "up"])?;
            add_own_pod(node, pod)?;
        }
        cni_kind => {
            let mut taken = plan.addresses();
            taken.extend(pod.ips.iter().copied());
            let reserved = cni::reserved(plan);
            let added = cni::add_pod(names, cni_kind, wiring.family, node, pod, &taken, &reserved);
            if let Err(e) = added {
                let _ = cni::del_pod(names, &pod.netns);
                return Err(e);
            }
            if cni_kind == Cni::Bridge && pod.static_ips {
                for ip in &pod.ips {
                    ip_in(
                        &node.netns,
                        &[
                            "route",
                            "replace",
                            &cidr(*ip, None),
                            "dev",
                            cni::config::BRIDGE,
                        ],
                    )?;
                }
            }
        }
    }
    for ip in &pod.ips {
        route_to_node(plan, node, *ip)?;
    }
    Ok(())
}

/// Every other node routes `ip` to `node` over their link.
fn route_to_node(plan: &Plan, node: &NodePlan, ip: IpAddr) -> Result<()> {
    let via = link_addr(node.index, ip.is_ipv6()).to_string();
    for other in plan.nodes.iter().filter(|n| n.name != node.name) {
        ip_in(
            &other.netns,
            &[
                "route",
                "replace",
                &cidr(ip, None),
                "via",
                &via,
                "dev",
                &link_name(node.index),
                "onlink",
            ],
        )?;
    }
    Ok(())
}

/// Undoes [`build_pod`]: DEL through the CNI, the other nodes' routes to the pod, its veth
/// (with its node's routes to it), then its namespace. The veth is deleted explicitly: a
/// namespace whose name is removed lives on while a socket in it is open (the daemon's
/// server threads hold some). Parts already gone are not an error.
pub fn remove_pod(names: &LabNames, plan: &Plan, pod: &PodPlan) -> Result<()> {
    if pod.host_network {
        // Its namespace and addresses are its node's.
        return Ok(());
    }
    let del = cni::del_pod(names, &pod.netns);
    for other in plan.nodes.iter().filter(|n| n.name != pod.node) {
        for ip in &pod.ips {
            let _ = ip_in(&other.netns, &["route", "del", &cidr(*ip, None)]);
        }
    }
    if let Some(node) = plan.node(&pod.node) {
        let _ = ip_in(&node.netns, &["link", "del", &pod.interface]);
        if pod.static_ips {
            for ip in &pod.ips {
                let _ = ip_in(
                    &node.netns,
                    &["route", "del", &cidr(*ip, None), "dev", cni::config::BRIDGE],
                );
            }
        }
    }
    let removed = remove_netns(&pod.netns);
    del?;
    removed
}

/// A node's own addresses (from its Node manifest): on its loopback, so that they are local to
/// its namespace whichever interface a packet comes in by, and routed to it by every other
/// node over their link. Pods reach them through their default route to their node.
fn add_node_addresses(plan: &Plan, node: &NodePlan) -> Result<()> {
    for ip in &node.addresses {
        ip_in(&node.netns, &["addr", "add", &cidr(*ip, None), "dev", "lo"])?;
        route_to_node(plan, node, *ip)?;
    }
    Ok(())
}

fn link_nodes(a: &NodePlan, b: &NodePlan) -> Result<()> {
    let in_a = link_name(b.index);
    let in_b = link_name(a.index);
    ip_in(
        &a.netns,
        &[
            "link", "add", &in_a, "type", "veth", "peer", "name", &in_b, "netns", &b.netns,
        ],
    )?;
    for (node, dev, peer) in [(a, &in_a, b), (b, &in_b, a)] {
        for v6 in [false, true] {
            let own = cidr(link_addr(node.index, v6), None);
            let mut args = vec!["addr", "add", own.as_str(), "dev", dev.as_str()];
            if v6 {
                args.push("nodad");
            }
            ip_in(&node.netns, &args)?;
        }
        ip_in(&node.netns, &["link", "set", dev, "up"])?;
        for v6 in [false, true] {
            let theirs = cidr(link_addr(peer.index, v6), None);
            ip_in(&node.netns, &["route", "add", &theirs, "dev", dev])?;
        }
    }
    Ok(())
}

/// The lab's own wiring (`--cni palisade`): a veth named for interface matching, the pod's
/// addresses as /32 and /128, default routes via 169.254.1.1 and fe80::1 (both answered by
/// the node side).
fn add_own_pod(node: &NodePlan, pod: &PodPlan) -> Result<()> {
    let dev = pod.interface.as_str();
    ip_in(
        &node.netns,
        &[
            "link",
            "add",
            dev,
            "address",
            GATEWAY_MAC,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &pod.netns,
        ],
    )?;
    ip_in(&node.netns, &["link", "set", dev, "up"])?;
    ip_in(&pod.netns, &["link", "set", "eth0", "up"])?;
    if pod.ip_of(true).is_some() {
        let gw = format!("{GATEWAY_V6}/64");
        ip_in(&node.netns, &["addr", "add", &gw, "dev", dev, "nodad"])?;
    }
    for ip in &pod.ips {
        let addr = cidr(*ip, None);
        let mut args = vec!["addr", "add", addr.as_str(), "dev", "eth0"];
        if ip.is_ipv6() {
            args.push("nodad");
        }
        ip_in(&pod.netns, &args)?;
        ip_in(&node.netns, &["route", "add", &addr, "dev", dev])?;
    }
    if pod.ip_of(false).is_some() {
        ip_in(
            &pod.netns,
            &["route", "add", GATEWAY, "dev", "eth0", "scope", "link"],
        )?;
        ip_in(
            &pod.netns,
            &[
                "neigh",
                "replace",
                GATEWAY,
                "lladdr",
                GATEWAY_MAC,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ],
        )?;
        ip_in(
            &pod.netns,
            &["route", "add", "default", "via", GATEWAY, "dev", "eth0"],
        )?;
    }
    if pod.ip_of(true).is_some() {
        let gw = GATEWAY_V6.to_string();
        ip_in(
            &pod.netns,
            &["-6", "route", "add", "default", "via", &gw, "dev", "eth0"],
        )?;
    }
    Ok(())
}

/// Every network namespace whose name starts with `prefix`.
pub fn scan(prefix: &str) -> Result<Vec<String>> {
    let out = run("ip", &["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect())
}

/// Kills every process inside the namespace, then deletes it (its veths go with it).
/// A namespace that is already gone is not an error.
pub fn remove_netns(name: &str) -> Result<()> {
    if let Ok(pids) = run("ip", &["netns", "pids", name]) {
        let pids: Vec<i32> = pids
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        for pid in &pids {
            kill(*pid, libc::SIGKILL);
        }
    }
    match run("ip", &["netns", "delete", name]) {
        Ok(_) => Ok(()),
        Err(e) => {
            if scan(name)?.iter().any(|n| n == name) {
                Err(e)
            } else {
                Ok(())
            }
        }
    }
}

/// Sends `signal` to `pid` (pids from our own state file only).
pub fn kill(pid: i32, signal: i32) {
    if pid > 1 {
        // SAFETY: kill(2) has no memory effects; a stale pid only yields ESRCH.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL.
pub fn stop_process(pid: u32, grace: Duration) {
    if !alive(pid) {
        return;
    }
    kill(pid as i32, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if alive(pid) {
        kill(pid as i32, libc::SIGKILL);
    }
}
