//! Building and tearing down the lab's namespaces, veths and routes (see [`crate::names`] and
//! [`crate::plan`] for the names and addresses).
//!
//! ```text
//!  pod netns (eth0 = pod IP/32, default via 169.254.1.1)
//!     │ veth (node side: interface_name("pal", pod), MAC ee:ee:ee:ee:ee:ee)
//!  node netns n1 (forwarding, /32 route per local pod) ──lnk-2── lnk-1── node netns n2
//!     routes to n2's pods via 169.254.255.2 (one veth per pair of nodes)
//! ```
//!
//! Everything is created with `ip -n`, directly inside the lab's namespaces: nothing is ever
//! created in, moved through or routed to the host's own namespace.

use std::time::{Duration, Instant};

use crate::cmd::{ip_in, run, sysctl_in};
use crate::error::Result;
use crate::names::{link_name, GATEWAY, GATEWAY_MAC};
use crate::plan::{NodePlan, Plan, PodPlan};

/// Creates a namespace with loopback up; `created` gets its name first, so a failure half-way
/// is still cleaned up.
fn add_netns(name: &str, created: &mut Vec<String>) -> Result<()> {
    run("ip", &["netns", "add", name])?;
    created.push(name.to_string());
    ip_in(name, &["link", "set", "lo", "up"])?;
    Ok(())
}

/// Builds the whole topology. `created` records every namespace as soon as it exists (the
/// caller persists it and destroys it on failure).
pub fn build(plan: &Plan, created: &mut Vec<String>) -> Result<()> {
    for node in &plan.nodes {
        add_netns(&node.netns, created)?;
        sysctl_in(
            &node.netns,
            &[
                "net.ipv4.ip_forward=1",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            ],
        )?;
    }
    for (i, a) in plan.nodes.iter().enumerate() {
        for b in &plan.nodes[i + 1..] {
            link_nodes(a, b)?;
        }
    }
    for pod in &plan.pods {
        build_pod(plan, pod, created)?;
    }
    Ok(())
}

/// One pod: its namespace, its veth to its node, and the routes of the other nodes to it.
pub fn build_pod(plan: &Plan, pod: &PodPlan, created: &mut Vec<String>) -> Result<()> {
    add_netns(&pod.netns, created)?;
    let Some(node) = plan.node(&pod.node) else {
        return Ok(());
    };
    add_pod(node, pod)?;
    for other in plan.nodes.iter().filter(|n| n.name != node.name) {
        let via = node.link_addr.to_string();
        ip_in(
            &other.netns,
            &[
                "route",
                "add",
                &format!("{}/32", pod.ip),
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

/// Undoes [`build_pod`]: the other nodes' routes to the pod, its veth (with its node's route
/// to it), then its namespace. The veth is deleted explicitly: a namespace whose name is
/// removed lives on while a socket in it is open (the daemon's server threads hold some).
/// Parts already gone are not an error.
pub fn remove_pod(plan: &Plan, pod: &PodPlan) -> Result<()> {
    for other in plan.nodes.iter().filter(|n| n.name != pod.node) {
        let _ = ip_in(&other.netns, &["route", "del", &format!("{}/32", pod.ip)]);
    }
    if let Some(node) = plan.node(&pod.node) {
        let _ = ip_in(&node.netns, &["link", "del", &pod.interface]);
    }
    remove_netns(&pod.netns)
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
        ip_in(
            &node.netns,
            &["addr", "add", &format!("{}/32", node.link_addr), "dev", dev],
        )?;
        ip_in(&node.netns, &["link", "set", dev, "up"])?;
        ip_in(
            &node.netns,
            &[
                "route",
                "add",
                &format!("{}/32", peer.link_addr),
                "dev",
                dev,
            ],
        )?;
    }
    Ok(())
}

fn add_pod(node: &NodePlan, pod: &PodPlan) -> Result<()> {
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
    let addr = format!("{}/32", pod.ip);
    ip_in(&pod.netns, &["addr", "add", &addr, "dev", "eth0"])?;
    ip_in(&pod.netns, &["link", "set", "eth0", "up"])?;
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
    ip_in(&node.netns, &["route", "add", &addr, "dev", dev])?;
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
