//! Where everything goes: which node each pod runs on, its address, and the namespace and
//! interface names. Pure: computed from the cluster and the lab's settings, no kernel.
//!
//! Pods with `spec.nodeName` go to that node; a node name that is not one of `n1..nN` is
//! created as an extra node (so manifests written for a real cluster run unchanged). Pods
//! without one are spread round-robin over `n1..nN` in `ns/name` order. A pod keeps the IPv4
//! address of its `status.podIP(s)`; the others get the next free address of their node's
//! /24 of the pod CIDR (`10.244.<node index - 1>.0/24`, from `.2`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use palisade_model::{Cluster, EndpointId, NamedPort};
use serde::{Deserialize, Serialize};

use crate::error::{LabError, Result};
use crate::names::{check_node_name, LabNames};

/// The pod CIDR pods without an address are numbered from: one /24 per node.
pub const POD_CIDR_BASE: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 0);

/// The most nodes a lab can have (node link addresses are `169.254.255.<index>`).
pub const MAX_NODES: usize = 250;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    pub name: String,
    /// 1-based.
    pub index: usize,
    pub netns: String,
    /// The node's address on its links to the other nodes.
    pub link_addr: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodPlan {
    pub id: EndpointId,
    pub node: String,
    pub netns: String,
    /// Node-side veth name.
    pub interface: String,
    pub ip: Ipv4Addr,
    pub ports: Vec<NamedPort>,
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
}

/// Places every endpoint of `cluster` on a node with an address, and writes the node and the
/// address into the cluster's endpoints (which is what the datastore gets).
pub fn plan(names: &LabNames, cluster: &mut Cluster, node_count: usize) -> Result<Plan> {
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
            link_addr: Ipv4Addr::new(169, 254, 255, (i + 1) as u8),
        })
        .collect();

    // Addresses given in the manifests are taken first, so numbering never hands them out.
    let mut used: BTreeMap<Ipv4Addr, EndpointId> = BTreeMap::new();
    for ep in &cluster.endpoints {
        if ep.ips.is_empty() {
            continue;
        }
        let Some(IpAddr::V4(ip)) = ep.ip_of_family(false) else {
            return Err(LabError::Plan(format!(
                "pod {} has only IPv6 addresses; the lab runs IPv4 pods",
                ep.id
            )));
        };
        if let Some(other) = used.insert(ip, ep.id.clone()) {
            return Err(LabError::Plan(format!(
                "pods {other} and {} both have address {ip}",
                ep.id
            )));
        }
    }
    let mut next_host: BTreeMap<usize, u32> = BTreeMap::new();
    let mut taken: BTreeSet<Ipv4Addr> = used.keys().copied().collect();
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
        let ip = match ep.ip_of_family(false) {
            Some(IpAddr::V4(ip)) => ip,
            _ => next_free(
                &node,
                index,
                next_host.entry(index).or_insert(2),
                &mut taken,
            )?,
        };
        ep.node = Some(node.clone());
        ep.ips = vec![IpAddr::V4(ip)];
        pods.push(PodPlan {
            id: ep.id.clone(),
            node,
            netns: names.pod_netns(&ep.id),
            interface: palisade_model::endpoint::interface_name("pal", &ep.id),
            ip,
            ports: ep.ports.clone(),
        });
    }
    Ok(Plan { nodes, pods })
}

/// The next address of node `index`'s /24 of the pod CIDR, from host number `host` on, that
/// is not in `taken` (which then holds it).
fn next_free(
    node: &str,
    index: usize,
    host: &mut u32,
    taken: &mut BTreeSet<Ipv4Addr>,
) -> Result<Ipv4Addr> {
    let base = u32::from(POD_CIDR_BASE) + (((index - 1) as u32) << 8);
    loop {
        if *host > 254 {
            return Err(LabError::Plan(format!(
                "node {node} has no free address left in its /24 of the pod CIDR"
            )));
        }
        let candidate = Ipv4Addr::from(base + *host);
        *host += 1;
        if taken.insert(candidate) {
            return Ok(candidate);
        }
    }
}

/// Places one more pod in a running lab's `plan` (`lab apply` of a Pod the lab does not have):
/// on its `spec.nodeName`, which must be one of the lab's nodes, else on the node with the
/// fewest pods; at its own IPv4 address if it has one and no pod uses it, else the next free
/// address of its node. Writes node and address into `ep`.
pub fn place_pod(
    names: &LabNames,
    plan: &Plan,
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
    let mut taken: BTreeSet<Ipv4Addr> = plan.pods.iter().map(|p| p.ip).collect();
    let ip = match ep.ip_of_family(false) {
        Some(IpAddr::V4(ip)) => {
            if let Some(other) = plan.pods.iter().find(|p| p.ip == ip) {
                return Err(LabError::Plan(format!(
                    "pods {} and {} both have address {ip}",
                    other.id, ep.id
                )));
            }
            ip
        }
        _ if !ep.ips.is_empty() => {
            return Err(LabError::Plan(format!(
                "pod {} has only IPv6 addresses; the lab runs IPv4 pods",
                ep.id
            )));
        }
        _ => next_free(&node.name, node.index, &mut 2, &mut taken)?,
    };
    ep.node = Some(node.name.clone());
    ep.ips = vec![IpAddr::V4(ip)];
    Ok(PodPlan {
        id: ep.id.clone(),
        node: node.name.clone(),
        netns: names.pod_netns(&ep.id),
        interface: palisade_model::endpoint::interface_name("pal", &ep.id),
        ip,
        ports: ep.ports.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_model::Endpoint;

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
        let p = plan(&names, &mut c, 2).unwrap();
        let placed: Vec<(&str, &str, String)> = p
            .pods
            .iter()
            .map(|p| (p.id.name.as_str(), p.node.as_str(), p.ip.to_string()))
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
        let mut p = plan(&names, &mut c, 2).unwrap();
        // n1 has a and c (10.244.0.2, .3), n2 has b.
        let mut d = ep("x", "d", None, None);
        let placed = place_pod(&names, &p, &mut d).unwrap();
        assert_eq!(
            (placed.node.as_str(), placed.ip.to_string()),
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
        let placed = place_pod(&names, &p, &mut e).unwrap();
        assert_eq!(
            (placed.node.as_str(), placed.ip.to_string()),
            ("n1", "10.9.9.9".into())
        );
        // Refused: a pod the lab has, a node it does not, a used address, IPv6 only.
        for (bad, why) in [
            (ep("x", "a", None, None), "already"),
            (ep("x", "f", Some("n7"), None), "node n7"),
            (ep("x", "g", None, Some("10.244.0.2")), "both have"),
            (ep("x", "h", None, Some("fd00::1")), "IPv6"),
        ] {
            let mut bad = bad;
            let err = place_pod(&names, &p, &mut bad).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn unknown_node_names_become_nodes() {
        let names = LabNames::new("t").unwrap();
        let mut c = Cluster::new();
        c.upsert_endpoint(ep("x", "a", Some("worker-7"), None));
        let p = plan(&names, &mut c, 2).unwrap();
        assert_eq!(p.nodes.len(), 3);
        assert_eq!(p.nodes[2].name, "worker-7");
        assert_eq!(p.pods[0].ip.to_string(), "10.244.2.2");
    }

    #[test]
    fn duplicate_and_v6_only_addresses_are_errors() {
        let names = LabNames::new("t").unwrap();
        let mut c = Cluster::new();
        c.upsert_endpoint(ep("x", "a", None, Some("10.0.0.1")));
        c.upsert_endpoint(ep("x", "b", None, Some("10.0.0.1")));
        assert!(plan(&names, &mut c, 2).is_err());
        let mut c = Cluster::new();
        c.upsert_endpoint(ep("x", "a", None, Some("fd00::1")));
        assert!(plan(&names, &mut c, 1).is_err());
        assert!(plan(&names, &mut Cluster::new(), 0).is_err());
    }
}
