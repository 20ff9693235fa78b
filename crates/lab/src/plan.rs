//! Where everything goes: which node each pod runs on, its addresses, and the namespace and
//! interface names. Pure: computed from the cluster and the lab's settings, no kernel.
//!
//! Pods with `spec.nodeName` go to that node; a node name that is not one of `n1..nN` is
//! created as an extra node (so manifests written for a real cluster run unchanged). Pods
//! without one are spread round-robin over `n1..nN` in `ns/name` order. A pod keeps the
//! addresses of its `status.podIP(s)`, every family (`static_ips`). The others get theirs
//! from IPAM: under `--cni bridge|ptp` from `host-local` when the pod is wired (their `ips`
//! are empty in the plan until then, and host-local leaves the manifests' addresses out),
//! under `--cni palisade` here, the next free address of
//! their node's subnet of each family of `--ip-family` (see [`crate::addressing`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use palisade_model::{Cluster, EndpointId, NamedPort};
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

    /// Every address of every pod.
    pub fn addresses(&self) -> BTreeSet<IpAddr> {
        self.pods
            .iter()
            .flat_map(|p| p.ips.iter().copied())
            .collect()
    }
}

/// The lab settings the plan depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wiring {
    pub cni: Cni,
    pub family: IpFamily,
}

/// Places every endpoint of `cluster` on a node with its addresses (see the module doc), and
/// writes the node (and the addresses known now) into the cluster's endpoints.
pub fn plan(
    names: &LabNames,
    cluster: &mut Cluster,
    node_count: usize,
    wiring: Wiring,
) -> Result<Plan> {
    if node_count == 0 {
        return Err(LabError::Plan("a lab needs at least one node".into()));
    }
    let mut node_names: Vec<String> = (1..=node_count).map(|i| format!("n{i}")).collect();
    for ep in &cluster.endpoints {
        if let Some(n) = &ep.node {
            check_node_name(n)?;
            if !node_names.contains(n) {
                node_names.push(n.clone());
            }
        }
    }
    if node_names.len() > MAX_NODES {
        return Err(LabError::Plan(format!(
            "{} nodes asked for; a lab has at most {MAX_NODES}",
            node_names.len()
        )));
    }
    let nodes: Vec<NodePlan> = node_names
        .iter()
        .enumerate()
        .map(|(i, name)| NodePlan {
            name: name.clone(),
            index: i + 1,
            netns: names.node_netns(name),
            link_addr: link_addr(i + 1, false),
        })
        .collect();

    // Addresses given in the manifests are taken first, so numbering never hands them out.
    let mut used: BTreeMap<IpAddr, EndpointId> = BTreeMap::new();
    for ep in &cluster.endpoints {
        for &ip in &ep.ips {
            if let Some(other) = used.insert(ip, ep.id.clone()) {
                return Err(LabError::Plan(format!(
                    "pods {other} and {} both have address {ip}",
                    ep.id
                )));
            }
        }
    }
    let mut next_host: BTreeMap<(usize, bool), u32> = BTreeMap::new();
    let mut taken: BTreeSet<IpAddr> = used.keys().copied().collect();
    let mut pods = Vec::with_capacity(cluster.endpoints.len());
    let mut round_robin = 0usize;
    for ep in &mut cluster.endpoints {
        let node = match &ep.node {
            Some(n) => n.clone(),
            None => {
                let n = node_names[round_robin % node_count].clone();
                round_robin += 1;
                n
            }
        };
        let index = node_names.iter().position(|n| *n == node).unwrap_or(0) + 1;
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
        let p = plan(&names, &mut c, 2, OWN).unwrap();
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
        let mut p = plan(&names, &mut c, 2, OWN).unwrap();
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
        let p = plan(&names, &mut c, 2, OWN).unwrap();
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
        assert!(plan(&names, &mut c, 2, OWN).is_err());
        assert!(plan(&names, &mut Cluster::new(), 0, OWN).is_err());
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
        let p = plan(&names, &mut c, 1, dual).unwrap();
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
        let p = plan(&names, &mut c, 1, bridge).unwrap();
        assert!(p.pods[0].ips.is_empty());
    }
}
