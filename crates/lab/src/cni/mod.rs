//! Wiring pods with the reference CNI plugins (`--cni bridge|ptp`), as a container runtime
//! does: the lab makes the pod's network namespace, runs `loopback` then the main plugin
//! (ADD) inside the node's namespace, reads the pod's addresses from the result, and keeps
//! what DEL needs (the configuration with the ADD result as `prevResult`) in a record under
//! its state directory. DEL runs in the reverse order. The plugins' own state (host-local
//! leases) lives under `<state dir>/cni/ipam/<node>`, never `/var/lib/cni`.
//!
//! * [`config`]: the network configurations; [`invoke`]: running a plugin; [`result`]:
//!   reading its answer.

pub mod config;
pub mod invoke;
pub mod result;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::addressing::{cidr, in_pod_cidr, node_gateway, node_subnet, GATEWAY_V6};
use crate::cmd::{ip_in, sysctl_in};
use crate::error::{LabError, Result};
use crate::names::LabNames;
use crate::plan::{NodePlan, PodPlan};
use crate::wiring::{Cni, IpFamily};
use invoke::{invoke, CniCommand, Target};

/// What DEL of one pod needs, written before its ADD.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub pod: String,
    pub node_netns: String,
    pub pod_netns: String,
    pub container_id: String,
    pub loopback: Value,
    /// The main plugin's configuration; `prevResult` once ADD succeeded.
    pub network: Value,
}

/// Where the lab keeps its CNI state: `<state dir>/cni`.
pub fn state_dir(names: &LabNames) -> PathBuf {
    names.state_dir().join("cni")
}

fn records_dir(names: &LabNames) -> PathBuf {
    state_dir(names).join("pods")
}

/// host-local's `dataDir` for one node (its leases).
pub fn ipam_dir(names: &LabNames, node: &str) -> PathBuf {
    state_dir(names).join("ipam").join(node)
}

/// The network name the plugins see.
pub fn network_name(names: &LabNames) -> String {
    format!("palisade-{}", names.name)
}

fn record_path(names: &LabNames, container_id: &str) -> PathBuf {
    records_dir(names).join(format!("{container_id}.json"))
}

fn save(names: &LabNames, record: &Record) -> Result<()> {
    let dir = records_dir(names);
    std::fs::create_dir_all(&dir)
        .map_err(|e| LabError::io(format!("cannot create {}", dir.display()), e))?;
    let path = record_path(names, &record.container_id);
    let bytes = serde_json::to_vec_pretty(record)
        .map_err(|e| LabError::Daemon(format!("cannot encode a CNI record: {e}")))?;
    std::fs::write(&path, bytes)
        .map_err(|e| LabError::io(format!("cannot write {}", path.display()), e))
}

fn target<'a>(record: &'a Record, ifname: &'a str) -> Target<'a> {
    Target {
        plugin_dir: Path::new(invoke::PLUGIN_DIR),
        node_netns: &record.node_netns,
        container_id: &record.container_id,
        pod_netns: &record.pod_netns,
        ifname,
    }
}

fn plugin_error(pod: &str, config: &Value, message: String) -> LabError {
    LabError::Cni {
        pod: pod.to_string(),
        plugin: config["type"].as_str().unwrap_or("?").to_string(),
        message,
    }
}

/// Prepares node `node` for `cni`: under `bridge`, the bridge `cni0` (fixed MAC
/// `02:70:61:6c:<node index>`) with the node's gateway of each family and `fe80::1`, answering ARP for the other nodes' pods (proxy ARP, without
/// delay) so that static pods whose /24 spans nodes reach them.
///
/// A gateway address that a pod of the lab has from its manifest (`taken`: every pod address)
/// is left off: that pod lives elsewhere, and the node must route to it, not answer for it.
/// Pods of this node numbered by `host-local` then have no gateway: an error.
pub fn prepare_node(cni: Cni, node: &NodePlan, plan: &crate::plan::Plan) -> Result<()> {
    if cni != Cni::Bridge {
        return Ok(());
    }
    let taken = plan.addresses();
    let br = config::BRIDGE;
    // A fixed MAC: a bridge without one takes the lowest of its ports' MACs, which changes
    // when that port goes, and pods that cached the old gateway MAC lose their way out.
    let mac = format!(
        "02:70:61:6c:{:02x}:{:02x}",
        node.index >> 8,
        node.index & 0xff
    );
    ip_in(
        &node.netns,
        &["link", "add", br, "address", &mac, "type", "bridge"],
    )?;
    for v6 in [false, true] {
        let (_, len) = node_subnet(node.index, v6);
        let gateway = node_gateway(node.index, v6);
        if taken.contains(&gateway) {
            if let Some(pod) = plan
                .pods
                .iter()
                .find(|p| p.node == node.name && !p.static_ips && !p.host_network)
            {
                return Err(LabError::Plan(format!(
                    "node {}'s gateway {gateway} is the address of another pod; pod {} on it has no address of its own to route through it",
                    node.name, pod.id
                )));
            }
            continue;
        }
        add_addr(&node.netns, &cidr(gateway, Some(len)))?;
    }
    add_addr(&node.netns, &format!("{GATEWAY_V6}/64"))?;
    ip_in(&node.netns, &["link", "set", br, "up"])?;
    sysctl_in(
        &node.netns,
        &[
            &format!("net.ipv4.conf.{br}.proxy_arp=1"),
            &format!("net.ipv4.neigh.{br}.proxy_delay=0"),
        ],
    )
}

/// Adds an address to the bridge unless it has it already.
fn add_addr(netns: &str, addr: &str) -> Result<()> {
    let mut args = vec!["addr", "add", addr, "dev", config::BRIDGE];
    if addr.contains(':') {
        args.push("nodad");
    }
    match ip_in(netns, &args) {
        Err(LabError::Command { stderr, .. })
            if stderr.contains("File exists") || stderr.contains("already assigned") =>
        {
            Ok(())
        }
        other => other.map(|_| ()),
    }
}

/// ADD of `pod` (its namespace exists) on `node`: fills in its addresses and node-side
/// interface from the result. `taken`: every pod address of the lab; `reserved`: what IPAM
/// must not hand out (see [`reserved`]). On failure the caller runs [`del_pod`] (the record
/// is written first).
pub fn add_pod(
    names: &LabNames,
    cni: Cni,
    family: IpFamily,
    node: &NodePlan,
    pod: &mut PodPlan,
    taken: &BTreeSet<IpAddr>,
    reserved: &BTreeSet<IpAddr>,
) -> Result<()> {
    let pod_name = pod.id.to_string();
    let ipam = if pod.static_ips {
        let s = config::static_ipam(cni, &pod.ips, taken)?;
        if cni == Cni::Bridge {
            for (gw, len) in &s.gateways {
                add_addr(&node.netns, &cidr(*gw, Some(*len)))?;
            }
        }
        s.ipam
    } else {
        let dir = ipam_dir(names, &node.name);
        config::host_local(node.index, family, &dir, reserved)
    };
    let name = network_name(names);
    let mut record = Record {
        pod: pod_name.clone(),
        node_netns: node.netns.clone(),
        pod_netns: pod.netns.clone(),
        container_id: pod.netns.clone(),
        loopback: config::loopback(&name),
        network: config::network(cni, &name, ipam)?,
    };
    save(names, &record)?;
    invoke(&target(&record, "lo"), CniCommand::Add, &record.loopback)
        .map_err(|m| plugin_error(&pod_name, &record.loopback, m))?;
    let result = invoke(&target(&record, "eth0"), CniCommand::Add, &record.network)
        .map_err(|m| plugin_error(&pod_name, &record.network, m))?;
    let parsed = result::parse_add(&result)
        .map_err(|m| plugin_error(&pod_name, &record.network, format!("its result: {m}")))?;
    if parsed.ips.is_empty() {
        return Err(plugin_error(
            &pod_name,
            &record.network,
            "its result gives the pod no address".into(),
        ));
    }
    pod.ips = parsed.ips;
    if let Some(iface) = parsed.host_interface {
        pod.interface = iface;
    }
    record.network["prevResult"] = result;
    save(names, &record)
}

/// The addresses `host-local` must leave out: every pod address from a manifest inside the
/// pod CIDR, and the gateway such a pod gets next to it.
pub fn reserved(plan: &crate::plan::Plan) -> BTreeSet<IpAddr> {
    let taken = plan.addresses();
    let mut out = BTreeSet::new();
    for pod in plan.pods.iter().filter(|p| p.static_ips) {
        for ip in pod.ips.iter().copied().filter(|ip| in_pod_cidr(*ip)) {
            out.insert(ip);
            if let Some((_, gw)) = crate::addressing::static_gateway(ip, &taken) {
                out.insert(gw);
            }
        }
    }
    out
}

/// CHECK of a pod wired by [`add_pod`] (the plugin verifies its work against `prevResult`).
pub fn check_pod(names: &LabNames, pod: &PodPlan) -> Result<()> {
    let record = load(&record_path(names, &pod.netns))?;
    invoke(&target(&record, "eth0"), CniCommand::Check, &record.network)
        .map(|_| ())
        .map_err(|m| plugin_error(&record.pod, &record.network, m))
}

fn load(path: &Path) -> Result<Record> {
    let bytes = std::fs::read(path)
        .map_err(|e| LabError::io(format!("cannot read {}", path.display()), e))?;
    serde_json::from_slice(&bytes).map_err(|e| LabError::State {
        path: path.to_path_buf(),
        reason: format!("unreadable CNI record: {e}"),
    })
}

/// DEL of the pod whose namespace is `pod_netns` (main plugin, then loopback), if the lab
/// has a record of it; the record goes. Both DELs are attempted; the first failure is
/// returned.
pub fn del_pod(names: &LabNames, pod_netns: &str) -> Result<()> {
    let path = record_path(names, pod_netns);
    if !path.exists() {
        return Ok(());
    }
    let record = load(&path)?;
    let main = invoke(&target(&record, "eth0"), CniCommand::Del, &record.network)
        .map_err(|m| plugin_error(&record.pod, &record.network, m));
    let lo = invoke(&target(&record, "lo"), CniCommand::Del, &record.loopback)
        .map_err(|m| plugin_error(&record.pod, &record.loopback, m));
    let _ = std::fs::remove_file(&path);
    main?;
    lo.map(|_| ())
}

/// DEL of every pod the lab has a record of; the failures, as messages.
pub fn del_all(names: &LabNames) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(records_dir(names)) else {
        return Vec::new();
    };
    let mut failures = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(id) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if let Err(e) = del_pod(names, id) {
            failures.push(e.to_string());
        }
    }
    failures
}
