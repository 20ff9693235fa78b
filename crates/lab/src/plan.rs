//! Where everything goes: which node each pod runs on, its addresses, and the namespace and
//! interface names. Pure: computed from the cluster and the lab's settings, no kernel.
//!
//! Nodes: one per Node manifest (in name order), with the addresses of its `status.addresses`;
//! without Node manifests `n1..nN` (`--nodes N`), without addresses. Pods with `spec.nodeName`
//! go to that node; without Node manifests a node name that is not one of `n1..nN` is created
//! as an extra node (so manifests written for a real cluster run unchanged), with them it is an
//! error. Pods without one are spread round-robin over the first N nodes in `ns/name` order.
//! A host-networked pod (`spec.hostNetwork: true`) gets no namespace of its own: it lives in
//! its node's namespace with its node's addresses (its node must come from a Node manifest
//! with addresses), and two of them on one node may not declare the same port and protocol.
//! Two nodes may not share an address.
//!
//! A pod keeps the addresses of its `status.podIP(s)`, every family (`static_ips`). The
//! others get theirs from IPAM: under `--cni bridge|ptp` from `host-local` when the pod is
//! wired (their `ips` are empty in the plan until then, and host-local leaves the manifests'
//! addresses out), under `--cni palisade` here, the next free address of their node's subnet
//! of each family of `--ip-family` (see [`crate::addressing`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use palisade_model::convert::node_addresses_for_pod;
use palisade_model::{Cluster, EndpointId, NamedPort, Node};
use serde::{Deserialize, Serialize};

use crate::addressing::{link_addr, node_subnet, offset};
use crate::error::{LabError, Result};
use crate::names::{check_node_name, LabNames};
use crate::wiring::{Cni, IpFamily};

/// The most nodes a lab can have (node link addresses are `169.254.255.<index>`).
pub const MAX_NODES: usize = 250;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    pub name: String,
    /// 1-based.
    pub index: usize,
    pub netns: String,
    /// The node's IPv4 address on its links to the other nodes.
    pub link_addr: IpAddr,
    /// The addresses of its Node manifest's `status.addresses` (none for `n1..nN`): the node's
    /// namespace has them, every other node routes them to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodPlan {
    pub id: EndpointId,
    pub node: String,
    pub netns: String,
    /// Node-side interface: under `--cni palisade` the name interface matching expects,
    /// under `bridge`/`ptp` the veth the plugin made.
    pub interface: String,
    /// Every address of the pod, its first address first.
    pub ips: Vec<IpAddr>,
    /// The addresses come from the manifest (`static` IPAM), not from IPAM.
    #[serde(default)]
    pub static_ips: bool,
    pub ports: Vec<NamedPort>,
    /// A host-networked pod: `netns` is its node's, `ips` are its node's addresses, it has no
    /// interface and nothing is wired for it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
}

impl PodPlan {
    /// The pod's first address.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ips.first().copied()
    }

    /// The pod's address of the family (`v6`).
    pub fn ip_of(&self, v6: bool) -> Option<IpAddr> {
        self.ips.iter().copied().find(|ip| ip.is_ipv6() == v6)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub nodes: Vec<NodePlan>,
    pub pods: Vec<PodPlan>,
}

impl Plan {
    pub fn node(&self, name: &str) -> Option<&NodePlan> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn pod(&self, id: &EndpointId) -> Option<&PodPlan> {
        self.pods.iter().find(|p| &p.id == id)
    }

    /// Looks a pod up by `ns/name` (or `name` in namespace `default`).
    pub fn pod_by_text(&self, text: &str) -> Option<&PodPlan> {
        let (ns, name) = text.split_once('/').unwrap_or(("default", text));
        self.pod(&EndpointId::new(ns, name))
    }

    /// Every address of every pod and node.
    pub fn addresses(&self) -> BTreeSet<IpAddr> {
        self.pods
            .iter()
            .flat_map(|p| p.ips.iter().copied())
            .chain(self.nodes.iter().flat_map(|n| n.addresses.iter().copied()))
            .collect()
    }
}

/// The lab settings the plan depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wiring {
    pub cni: Cni,
    pub family: IpFamily,
}

/// The lab's nodes: one per Node of `cluster` (with its addresses) if it has any, then
/// `--nodes` (`asked`) must be absent or equal their count; else `n1..nN` (N = `asked`,
/// default 2), plus one per other `spec.nodeName` of a pod. Also how many of them, from the
/// first, take the pods without a `spec.nodeName` (all but those extra ones).
pub fn node_plans(
    names: &LabNames,
    cluster: &Cluster,
    asked: Option<usize>,
) -> Result<(Vec<NodePlan>, usize)> {
    let mut declared: Vec<(String, Vec<IpAddr>)> = Vec::new();
    let spread;
    if cluster.nodes.is_empty() {
        let count = asked.unwrap_or(DEFAULT_NODES);
        if count == 0 {
            return Err(LabError::Plan("a lab needs at least one node".into()));
        }
        declared.extend((1..=count).map(|i| (format!("n{i}"), Vec::new())));
        spread = count;
        for ep in &cluster.endpoints {
            if let Some(n) = &ep.node {
                check_node_name(n)?;
                if !declared.iter().any(|(d, _)| d == n) {
                    declared.push((n.clone(), Vec::new()));
                }
            }
        }
    } else {
        check_node_count(cluster.nodes.len(), asked)?;
        spread = cluster.nodes.len();
        for node in cluster.nodes.values() {
            check_node_name(&node.name)?;
            for ip in &node.addresses {
                if let Some((other, _)) = declared.iter().find(|(_, a)| a.contains(ip)) {
                    return Err(LabError::Plan(format!(
                        "nodes {other} and {} both have address {ip}",
                        node.name
                    )));
                }
            }
            declared.push((node.name.clone(), node.addresses.clone()));
        }
        for ep in &cluster.endpoints {
            if let Some(n) = ep.node.as_ref().filter(|n| !cluster.nodes.contains_key(*n)) {
                return Err(LabError::Plan(format!(
                    "pod {}: spec.nodeName {n:?} is none of the Node manifests ({})",
                    ep.id,
                    cluster.nodes.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
    }
    if declared.len() > MAX_NODES {
        return Err(LabError::Plan(format!(
            "{} nodes asked for; a lab has at most {MAX_NODES}",
            declared.len()
        )));
    }
    let nodes = declared
        .into_iter()
        .enumerate()
        .map(|(i, (name, addresses))| NodePlan {
            netns: names.node_netns(&name),
            name,
            index: i + 1,
            link_addr: link_addr(i + 1, false),
            addresses,
        })
        .collect();
    Ok((nodes, spread))
}

/// The number of nodes without Node manifests and without `--nodes`.
pub const DEFAULT_NODES: usize = 2;

/// With `nodes` Node manifests, `--nodes` (`asked`) must be absent or equal.
pub fn check_node_count(nodes: usize, asked: Option<usize>) -> Result<()> {
    match asked {
        Some(n) if n != nodes => Err(LabError::Plan(format!(
            "--nodes {n} does not match the {nodes} Node manifest(s): leave --nodes out, or give one Node per lab node"
        ))),
        _ => Ok(()),
    }
}

/// Places every endpoint of `cluster` on a node with its addresses (see the module doc), and
/// writes the node (and the addresses known now) into the cluster's endpoints. `nodes` is
/// `--nodes` (see [`node_plans`]).
pub fn plan(
    names: &LabNames,
    cluster: &mut Cluster,
    nodes: Option<usize>,
    wiring: Wiring,
) -> Result<Plan> {
    let (nodes, node_count) = node_plans(names, cluster, nodes)?;
    let host_network = cluster.host_network.clone();

    // Addresses given in the manifests are taken first, so numbering never hands them out.
    let mut used: BTreeMap<IpAddr, EndpointId> = BTreeMap::new();
    for ep in cluster
        .endpoints
        .iter()
        .filter(|e| !host_network.contains(&e.id))
    {
        for &ip in &ep.ips {
            if let Some(other) = used.insert(ip, ep.id.clone()) {
                return Err(LabError::Plan(format!(
                    "pods {other} and {} both have address {ip}",
                    ep.id
                )));
            }
            if let Some(node) = nodes.iter().find(|n| n.addresses.contains(&ip)) {
                return Err(LabError::Plan(format!(
                    "pod {} has address {ip}, which is node {}'s",
                    ep.id, node.name
                )));
            }
        }
    }
    let mut next_host: BTreeMap<(usize, bool), u32> = BTreeMap::new();
    let mut taken: BTreeSet<IpAddr> = used.keys().copied().collect();
    taken.extend(nodes.iter().flat_map(|n| n.addresses.iter().copied()));
    let mut pods = Vec::with_capacity(cluster.endpoints.len());
    let mut round_robin = 0usize;
    for ep in &mut cluster.endpoints {
        let on_host = host_network.contains(&ep.id);
        let node = match &ep.node {
            Some(n) => n.clone(),
            None if on_host => {
                return Err(LabError::Plan(format!(
                    "host-networked pod {} has no spec.nodeName: the lab runs it in its node's namespace",
                    ep.id
                )))
            }
            None => {
                let n = nodes[round_robin % node_count].name.clone();
                round_robin += 1;
                n
            }
        };
        let Some(at) = nodes.iter().find(|n| n.name == node) else {
            return Err(LabError::Plan(format!("pod {}: no node {node}", ep.id)));
        };
        if on_host {
            if at.addresses.is_empty() {
                return Err(LabError::Plan(format!(
                    "host-networked pod {} runs on node {node}, which has no addresses: give a Node manifest with status.addresses",
                    ep.id
                )));
            }
            let ips = node_addresses_for_pod(&Node {
                name: node.clone(),
                labels: Default::default(),
                addresses: at.addresses.clone(),
            });
            if let Some(clash) = pods.iter().find_map(|p: &PodPlan| {
                let port = p.ports.iter().find(|a| {
                    ep.ports
                        .iter()
                        .any(|b| a.port == b.port && a.protocol == b.protocol)
                })?;
                (p.host_network && p.node == node).then(|| (p.id.clone(), port.clone()))
            }) {
                return Err(LabError::Plan(format!(
                    "host-networked pods {} and {} on node {node} both declare port {}/{}: they share the node's addresses",
                    clash.0, ep.id, clash.1.port, clash.1.protocol
                )));
            }
            ep.node = Some(node.clone());
            ep.ips = ips.clone();
            pods.push(PodPlan {
                id: ep.id.clone(),
                node,
                netns: at.netns.clone(),
                interface: String::new(),
                ips,
                static_ips: true,
                ports: ep.ports.clone(),
                host_network: true,
            });
            continue;
        }
        let index = at.index;
        let static_ips = !ep.ips.is_empty();
        let ips = if static_ips {
            ep.ips.clone()
        } else {
            let mut ips = Vec::new();
            for v6 in families(wiring) {
                let host = next_host.entry((index, v6)).or_insert(2);
                ips.push(next_free(&node, index, v6, host, &mut taken)?);
            }
            ips
        };
        ep.node = Some(node.clone());
        ep.ips = ips.clone();
        pods.push(PodPlan {
            id: ep.id.clone(),
            node,
            netns: names.pod_netns(&ep.id),
            interface: palisade_model::endpoint::interface_name("pal", &ep.id),
            ips,
            static_ips,
            ports: ep.ports.clone(),
            host_network: false,
        });
    }
    Ok(Plan { nodes, pods })
}

/// The families the lab numbers itself (`--cni palisade`); none under a real CNI (IPAM does).
fn families(wiring: Wiring) -> Vec<bool> {
    if wiring.cni != Cni::Palisade {
        return Vec::new();
    }
    let mut f = Vec::new();
    if wiring.family.has_v4() {
        f.push(false);
    }
    if wiring.family.has_v6() {
        f.push(true);
    }
    f
}

/// The next address of node `index`'s subnet of the family, from host number `host` on, that
/// is not in `taken` (which then holds it).
fn next_free(
    node: &str,
    index: usize,
    v6: bool,
    host: &mut u32,
    taken: &mut BTreeSet<IpAddr>,
) -> Result<IpAddr> {
    let (net, _) = node_subnet(index, v6);
    loop {
        if *host > 254 {
            return Err(LabError::Plan(format!(
                "node {node} has no free address left in its subnet of the pod CIDR"
            )));
        }
        let candidate = offset(net, *host);
        *host += 1;
        if taken.insert(candidate) {
            return Ok(candidate);
        }
    }
}

/// Places one more pod in a running lab's `plan` (`lab apply` of a Pod the lab does not have):
/// on its `spec.nodeName`, which must be one of the lab's nodes, else on the node with the
/// fewest pods; at its own addresses if it has some and no pod uses them, else (under
/// `--cni palisade`) the next free addresses of its node; under a real CNI, IPAM gives them
/// when the pod is wired. Writes node and addresses into `ep`.
pub fn place_pod(
    names: &LabNames,
    plan: &Plan,
    wiring: Wiring,
    ep: &mut palisade_model::Endpoint,
) -> Result<PodPlan> {
    if plan.pod(&ep.id).is_some() {
        return Err(LabError::Plan(format!(
            "pod {} is already in the lab",
            ep.id
        )));
    }
    let node = match &ep.node {
        Some(n) => plan.node(n).ok_or_else(|| {
            LabError::Plan(format!(
                "pod {} asks for node {n}, which the lab does not have (nodes are made by `lab up`)",
                ep.id
            ))
        })?,
        None => plan
            .nodes
            .iter()
            .min_by_key(|n| (plan.pods.iter().filter(|p| p.node == n.name).count(), n.index))
            .ok_or_else(|| LabError::Plan("the lab has no node".into()))?,
    };
    let mut taken = plan.addresses();
    let static_ips = !ep.ips.is_empty();
    let ips = if static_ips {
        for &ip in &ep.ips {
            if let Some(other) = plan.pods.iter().find(|p| p.ips.contains(&ip)) {
                return Err(LabError::Plan(format!(
                    "pods {} and {} both have address {ip}",
                    other.id, ep.id
                )));
            }
        }
        ep.ips.clone()
    } else {
        let mut ips = Vec::new();
        for v6 in families(wiring) {
            ips.push(next_free(&node.name, node.index, v6, &mut 2, &mut taken)?);
        }
        ips
    };
    ep.node = Some(node.name.clone());
    ep.ips = ips.clone();
    Ok(PodPlan {
        id: ep.id.clone(),
        node: node.name.clone(),
        netns: names.pod_netns(&ep.id),
        interface: palisade_model::endpoint::interface_name("pal", &ep.id),
        ips,
        static_ips,
        ports: ep.ports.clone(),
        host_network: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_model::Endpoint;

    const OWN: Wiring = Wiring {
        cni: Cni::Palisade,
        family: IpFamily::Ipv4,
    };

    fn ep(ns: &str, name: &str, node: Option<&str>, ip: Option<&str>) -> Endpoint {
        Endpoint {
            id: EndpointId::new(ns, name),
            node: node.map(str::to_string),
            labels: Default::default(),
            ips: ip.map(|i| vec![i.parse().unwrap()]).unwrap_or_default(),
            ports: vec![],
        }
    }

    #[test]
    fn spreads_round_robin_and_numbers_addresses() {
        let names = LabNames::new("t").unwrap();
        let mut c = Cluster::new();
        for n in ["a", "b", "c"] {
            c.upsert_endpoint(ep("x", n, None, None));
        }
        c.upsert_endpoint(ep("y", "fixed", None, Some("10.244.0.2")));
        let p = plan(&names, &mut c, Some(2), OWN).unwrap();
        let placed: Vec<(&str, &str, String)> = p
            .pods
            .iter()
            .map(|p| {
                (
                    p.id.name.as_str(),
                    p.node.as_str(),
                    p.ip().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            placed,
            vec![
                ("a", "n1", "10.244.0.3".to_string()),
                ("b", "n2", "10.244.1.2".to_string()),
                ("c", "n1", "10.244.0.4".to_string()),
                ("fixed", "n2", "10.244.0.2".to_string()),
            ]
        );
        assert_eq!(c.endpoints[1].node.as_deref(), Some("n2"));
        assert_eq!(p.pods[0].interface.len(), 15);
        assert!(p.pods[0].interface.starts_with("pal"));
    }

    #[test]
    fn a_pod_added_later_goes_to_the_emptiest_node_at_a_free_address() {
        let names = LabNames::new("t").unwrap();
        let mut c = Cluster::new();
        for n in ["a", "b", "c"] {
            c.upsert_endpoint(ep("x", n, None, None));
        }
        let mut p = plan(&names, &mut c, Some(2), OWN).unwrap();
        // n1 has a and c (10.244.0.2, .3), n2 has b.
        let mut d = ep("x", "d", None, None);
        let placed = place_pod(&names, &p, OWN, &mut d).unwrap();
        assert_eq!(
            (placed.node.as_str(), placed.ip().unwrap().to_string()),
            ("n2", "10.244.1.3".into())
        );
        assert_eq!(d.node.as_deref(), Some("n2"));
        assert_eq!(d.ips, vec!["10.244.1.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            placed.interface,
            palisade_model::endpoint::interface_name("pal", &d.id)
        );
        p.pods.push(placed);
        // An asked-for node and address are kept.
        let mut e = ep("x", "e", Some("n1"), Some("10.9.9.9"));
        let placed = place_pod(&names, &p, OWN, &mut e).unwrap();
        assert_eq!(
            (placed.node.as_str(), placed.ip().unwrap().to_string()),
            ("n1", "10.9.9.9".into())
        );
        // Refused: a pod the lab has, a node it does not, a used address.
        for (bad, why) in [
            (ep("x", "a", None, None), "already"),
            (ep("x", "f", Some("n7"), None), "node n7"),
            (ep("x", "g", None, Some("10.244.0.2")), "both have"),
        ] {
            let mut bad = bad;
            let err = place_pod(&names, &p, OWN, &mut bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn unknown_node_names_become_nodes() {
        let names = LabNames::new("t").unwrap();
        let mut c = Cluster::new();
        c.upsert_endpoint(ep("x", "a", Some("worker-7"), None));
        let p = plan(&names, &mut c, Some(2), OWN).unwrap();
        assert_eq!(p.nodes.len(), 3);
        assert_eq!(p.nodes[2].name, "worker-7");
        assert_eq!(p.pods[0].ip().unwrap().to_string(), "10.244.2.2");
    }

    #[test]
    fn duplicate_addresses_are_errors() {
        let names = LabNames::new("t").unwrap();
        let mut c = Cluster::new();
        c.upsert_endpoint(ep("x", "a", None, Some("10.0.0.1")));
        c.upsert_endpoint(ep("x", "b", None, Some("10.0.0.1")));
        assert!(plan(&names, &mut c, Some(2), OWN).is_err());
        assert!(plan(&names, &mut Cluster::new(), Some(0), OWN).is_err());
    }

    #[test]
    fn families_static_and_numbered() {
        let names = LabNames::new("t").unwrap();
        let mut c = Cluster::new();
        c.upsert_endpoint(ep("x", "six", None, Some("fd00::a00:101")));
        c.upsert_endpoint(ep("x", "dual", None, None));
        let dual = Wiring {
            cni: Cni::Palisade,
            family: IpFamily::Dual,
        };
        let p = plan(&names, &mut c, Some(1), dual).unwrap();
        let ips =
            |i: usize| -> Vec<String> { p.pods[i].ips.iter().map(|a| a.to_string()).collect() };
        assert_eq!(ips(0), ["10.244.0.2", "fd00:10:244::2"]);
        assert!(!p.pods[0].static_ips);
        assert_eq!(ips(1), ["fd00::a00:101"]);
        assert!(p.pods[1].static_ips);
        assert_eq!(p.pods[1].ip_of(false), None);
        // Under a real CNI, IPAM numbers pods when they are wired.
        let bridge = Wiring {
            cni: Cni::Bridge,
            family: IpFamily::Dual,
        };
        let mut c = Cluster::new();
        c.upsert_endpoint(ep("x", "a", None, None));
        let p = plan(&names, &mut c, Some(1), bridge).unwrap();
        assert!(p.pods[0].ips.is_empty());
    }

    fn node(name: &str, addresses: &[&str]) -> Node {
        Node {
            name: name.into(),
            labels: Default::default(),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn port(port: u16) -> NamedPort {
        NamedPort {
            name: String::new(),
            protocol: palisade_model::Protocol::Tcp,
            port,
        }
    }

    /// Two Nodes, pods placed by nodeName and round-robin, and a host-networked pod.
    fn manifests() -> Cluster {
        let mut c = Cluster::new();
        c.upsert_node(node("kind-worker2", &["172.18.0.3", "fc00::3"]));
        c.upsert_node(node("kind-worker", &["172.18.0.2"]));
        c.upsert_endpoint(ep("x", "a", Some("kind-worker2"), None));
        c.upsert_endpoint(ep("x", "b", None, None));
        c.upsert_endpoint(ep("x", "c", None, None));
        let mut host = ep("y", "agent", Some("kind-worker2"), Some("172.18.0.3"));
        host.ports = vec![port(9100)];
        c.host_network.insert(host.id.clone());
        c.upsert_endpoint(host);
        c
    }

    #[test]
    fn nodes_come_from_node_manifests_with_their_addresses() {
        let names = LabNames::new("t").unwrap();
        let mut c = manifests();
        let p = plan(&names, &mut c, None, OWN).unwrap();
        let nodes: Vec<(&str, usize, Vec<String>)> = p
            .nodes
            .iter()
            .map(|n| {
                let a = n.addresses.iter().map(ToString::to_string).collect();
                (n.name.as_str(), n.index, a)
            })
            .collect();
        assert_eq!(
            nodes,
            vec![
                ("kind-worker", 1, vec!["172.18.0.2".to_string()]),
                (
                    "kind-worker2",
                    2,
                    vec!["172.18.0.3".into(), "fc00::3".into()]
                ),
            ]
        );
        assert_eq!(p.nodes[0].netns, names.node_netns("kind-worker"));
        let placed: Vec<(&str, &str)> = p
            .pods
            .iter()
            .map(|p| (p.id.name.as_str(), p.node.as_str()))
            .collect();
        // By nodeName, else round-robin over every node.
        assert_eq!(
            placed,
            vec![
                ("a", "kind-worker2"),
                ("b", "kind-worker"),
                ("c", "kind-worker2"),
                ("agent", "kind-worker2")
            ]
        );
        // Numbered pods avoid nothing of the nodes' (they are outside the pod CIDR).
        assert_eq!(p.pods[1].ip().unwrap().to_string(), "10.244.0.2");
        // --nodes equal to the number of Nodes is fine.
        let mut c = manifests();
        assert_eq!(plan(&names, &mut c, Some(2), OWN).unwrap().nodes.len(), 2);
    }

    #[test]
    fn a_host_networked_pod_lives_in_its_nodes_namespace_with_its_addresses() {
        let names = LabNames::new("t").unwrap();
        let mut c = manifests();
        let p = plan(&names, &mut c, None, OWN).unwrap();
        let agent = p.pod_by_text("y/agent").unwrap();
        assert!(agent.host_network);
        assert_eq!(agent.netns, names.node_netns("kind-worker2"));
        assert_eq!(agent.interface, "");
        let ips: Vec<String> = agent.ips.iter().map(ToString::to_string).collect();
        assert_eq!(ips, ["172.18.0.3", "fc00::3"]);
        assert!(!p.pod_by_text("x/a").unwrap().host_network);
        // The cluster's endpoint agrees (what the engine judges).
        let ep = c.endpoint(&EndpointId::new("y", "agent")).unwrap();
        assert_eq!(ep.ips, agent.ips);
    }

    #[test]
    fn node_manifests_refuse_what_does_not_fit() {
        let names = LabNames::new("t").unwrap();
        let err = |mut c: Cluster, nodes: Option<usize>| {
            plan(&names, &mut c, nodes, OWN).unwrap_err().to_string()
        };
        let e = err(manifests(), Some(3));
        assert!(e.contains("--nodes 3") && e.contains("2 Node"), "{e}");
        let mut c = manifests();
        c.upsert_endpoint(ep("x", "lost", Some("n7"), None));
        let e = err(c, None);
        assert!(e.contains("x/lost") && e.contains("\"n7\""), "{e}");
        // Two host-networked pods on one node may not serve the same port.
        let mut c = manifests();
        let mut twin = ep("y", "twin", Some("kind-worker2"), None);
        twin.ports = vec![port(9100)];
        c.host_network.insert(twin.id.clone());
        c.upsert_endpoint(twin);
        let e = err(c, None);
        assert!(
            e.contains("y/agent") && e.contains("y/twin") && e.contains("9100/TCP"),
            "{e}"
        );
        // ... but on another node they may.
        let mut c = manifests();
        let mut other = ep("y", "other", Some("kind-worker"), None);
        other.ports = vec![port(9100)];
        c.host_network.insert(other.id.clone());
        c.upsert_endpoint(other);
        let p = plan(&names, &mut c, None, OWN).unwrap();
        assert_eq!(
            p.pod_by_text("y/other").unwrap().ips[0].to_string(),
            "172.18.0.2"
        );
        // A host-networked pod needs a node with addresses, so a Node manifest.
        let mut c = Cluster::new();
        let h = ep("y", "h", Some("n1"), None);
        c.host_network.insert(h.id.clone());
        c.upsert_endpoint(h);
        let e = err(c, None);
        assert!(e.contains("y/h") && e.contains("no addresses"), "{e}");
        // Two nodes may not share an address.
        let mut c = manifests();
        c.upsert_node(node("kind-worker3", &["172.18.0.2"]));
        let e = err(c, None);
        assert!(
            e.contains("kind-worker and kind-worker3") && e.contains("172.18.0.2"),
            "{e}"
        );
        // A pod may not take a node's address.
        let mut c = manifests();
        c.upsert_endpoint(ep("x", "thief", None, Some("172.18.0.2")));
        let e = err(c, None);
        assert!(e.contains("x/thief") && e.contains("kind-worker"), "{e}");
    }

    #[test]
    fn without_node_manifests_nodes_defaults_to_two() {
        let names = LabNames::new("t").unwrap();
        let p = plan(&names, &mut Cluster::new(), None, OWN).unwrap();
        let n: Vec<&str> = p.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(n, ["n1", "n2"]);
        assert!(p.nodes.iter().all(|n| n.addresses.is_empty()));
    }
}
