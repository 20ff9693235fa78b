//! ClusterNetworkPolicy → model policy, Node → model node, host-networked Pod → endpoint.
//!
//! A ClusterNetworkPolicy becomes a cluster-wide policy of the `admin` or `baseline` tier
//! (both end with Pass: a flow no rule matches goes on to the next tier) with `order` =
//! `priority`; ties are broken by name (the API leaves the choice between equal priorities
//! open). Actions: Accept → Allow, Deny → Deny, Pass → Pass. A direction without rules does
//! not apply (the CNP does not affect it). `protocols` absent = every protocol and port; a
//! `destinationNamedPort` matches a container port of that name on the destination, of
//! whatever protocol it declares (one port spec per protocol).

use std::net::IpAddr;

use super::{checked, pod_ips, selector};
use crate::cluster::RuleNames;
use crate::endpoint::Endpoint;
use crate::k8s;
use crate::node::Node;
use crate::policy::{
    Action, EndpointPeer, NamespaceMatch, Peer, Policy, PolicyId, PortMatch, PortSpec, Protocol,
    Rule, ADMIN_TIER, BASELINE_TIER,
};
use crate::selector::Selector;
use crate::validate::{self, FieldError};

/// A validated ClusterNetworkPolicy as a model policy, with its rule names.
pub fn cluster_network_policy(
    cnp: &k8s::ClusterNetworkPolicy,
) -> Result<(Policy, RuleNames), Vec<FieldError>> {
    checked(validate::cluster_network_policy(cnp))?;
    // Validation guarantees the spec, tier, priority, subject and every action.
    let spec = cnp.spec.clone().unwrap_or_default();
    let tier = match spec.tier.as_deref() {
        Some("Baseline") => BASELINE_TIER,
        _ => ADMIN_TIER,
    };
    let subject = spec.subject.clone().unwrap_or_default();
    let (namespace_selector, pod_selector) = match (&subject.namespaces, &subject.pods) {
        (Some(ns), _) => (selector(ns), Selector::All),
        (None, Some(pods)) => namespaced_pod(pods),
        (None, None) => (Selector::All, Selector::All),
    };
    let mut names = RuleNames::default();
    let ingress: Vec<Rule> = spec
        .ingress
        .iter()
        .flatten()
        .map(|r| {
            names.ingress.push(r.name.clone().unwrap_or_default());
            let peers = r.from.iter().flatten().map(ingress_peer).collect();
            rule(r.action.as_deref(), peers, r.protocols.as_deref())
        })
        .collect();
    let egress: Vec<Rule> = spec
        .egress
        .iter()
        .flatten()
        .map(|r| {
            names.egress.push(r.name.clone().unwrap_or_default());
            let peers = r.to.iter().flatten().flat_map(egress_peer).collect();
            rule(r.action.as_deref(), peers, r.protocols.as_deref())
        })
        .collect();
    let policy = Policy {
        id: PolicyId {
            tier: tier.to_string(),
            namespace: None,
            name: cnp.metadata.name.clone().unwrap_or_default(),
        },
        order: u32::try_from(spec.priority.unwrap_or_default()).unwrap_or_default(),
        selector: pod_selector,
        namespace_selector,
        staged: validate::staged(&cnp.metadata),
        ingress: (!ingress.is_empty()).then_some(ingress),
        egress: (!egress.is_empty()).then_some(egress),
    };
    Ok((policy, names))
}

/// `(namespace selector, pod selector)`; an absent namespaceSelector selects every namespace.
fn namespaced_pod(pods: &k8s::NamespacedPod) -> (Selector, Selector) {
    let ns = pods
        .namespace_selector
        .as_ref()
        .map_or(Selector::All, selector);
    let pod = pods.pod_selector.as_ref().map_or(Selector::All, selector);
    (ns, pod)
}

fn action(a: Option<&str>) -> Action {
    match a {
        Some("Accept") => Action::Allow,
        Some("Pass") => Action::Pass,
        _ => Action::Deny,
    }
}

fn rule(
    action_text: Option<&str>,
    peers: Vec<Peer>,
    protocols: Option<&[k8s::ClusterNetworkPolicyProtocol]>,
) -> Rule {
    Rule {
        action: action(action_text),
        peers,
        ports: protocols
            .unwrap_or_default()
            .iter()
            .flat_map(ports)
            .collect(),
    }
}

fn ingress_peer(p: &k8s::ClusterNetworkPolicyIngressPeer) -> Peer {
    endpoints_peer(p.namespaces.as_ref(), p.pods.as_ref())
}

fn endpoints_peer(
    namespaces: Option<&k8s::LabelSelector>,
    pods: Option<&k8s::NamespacedPod>,
) -> Peer {
    let (ns, pod) = match (namespaces, pods) {
        (Some(ns), _) => (selector(ns), Selector::All),
        (None, Some(pods)) => namespaced_pod(pods),
        (None, None) => (Selector::All, Selector::All),
    };
    Peer::Endpoints(EndpointPeer {
        namespaces: NamespaceMatch::Selector(ns),
        pods: pod,
    })
}

/// One model peer per egress peer, except `networks`: one CIDR peer per network.
fn egress_peer(p: &k8s::ClusterNetworkPolicyEgressPeer) -> Vec<Peer> {
    if let Some(networks) = &p.networks {
        return networks
            .iter()
            .filter_map(|n| validate::parse_cidr(n).ok())
            .map(|cidr| Peer::Cidr {
                cidr: cidr.trunc(),
                except: Vec::new(),
            })
            .collect();
    }
    if let Some(nodes) = &p.nodes {
        return vec![Peer::Nodes(selector(nodes))];
    }
    if let Some(names) = &p.domain_names {
        return vec![Peer::DomainNames(names.clone())];
    }
    vec![endpoints_peer(p.namespaces.as_ref(), p.pods.as_ref())]
}

fn ports(p: &k8s::ClusterNetworkPolicyProtocol) -> Vec<PortSpec> {
    if let Some(name) = &p.destination_named_port {
        return [Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
            .into_iter()
            .map(|protocol| PortSpec {
                protocol,
                port: PortMatch::Named(name.clone()),
            })
            .collect();
    }
    let entries = [
        (Protocol::Tcp, &p.tcp),
        (Protocol::Udp, &p.udp),
        (Protocol::Sctp, &p.sctp),
    ];
    entries
        .into_iter()
        .filter_map(|(protocol, ports)| {
            let port = ports.as_ref()?.destination_port.as_ref();
            let port = match (
                port.and_then(|p| p.number),
                port.and_then(|p| p.range.as_ref()),
            ) {
                (Some(n), _) => {
                    let n = u16::try_from(n).ok()?;
                    PortMatch::Range { start: n, end: n }
                }
                (None, Some(r)) => PortMatch::Range {
                    start: u16::try_from(r.start?).ok()?,
                    end: u16::try_from(r.end?).ok()?,
                },
                (None, None) => PortMatch::Any,
            };
            Some(PortSpec { protocol, port })
        })
        .collect()
}

/// A Node: name, labels and its IP addresses, InternalIP first.
pub fn node(node: &k8s::Node) -> Result<Node, Vec<FieldError>> {
    checked(validate::node(node))?;
    let addresses = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_deref())
        .unwrap_or_default();
    let mut ips: Vec<IpAddr> = Vec::new();
    for kind in ["InternalIP", "ExternalIP"] {
        for a in addresses.iter().filter(|a| a.kind == kind) {
            if let Ok(ip) = a.address.parse::<IpAddr>() {
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
    }
    Ok(Node {
        name: node.metadata.name.clone().unwrap_or_default(),
        labels: node.metadata.labels.clone().unwrap_or_default(),
        addresses: ips,
    })
}

/// A host-networked Pod (`spec.hostNetwork: true`) as a flow end: its `status.podIPs` for now
/// (the cluster gives it its node's addresses when it knows the node); `Ok(None)` for any
/// other pod, or one that has finished or is being deleted.
pub fn host_network_pod(pod: &k8s::Pod) -> Result<Option<Endpoint>, Vec<FieldError>> {
    if pod.spec.host_network != Some(true) {
        return Ok(None);
    }
    checked(validate::pod(pod))?;
    let mut as_workload = pod.clone();
    as_workload.spec.host_network = None;
    let mut endpoint = match super::pod(&as_workload)? {
        Some(e) => e,
        None => return Ok(None),
    };
    endpoint.ips = pod_ips(pod.status.as_ref()).map_err(|e| vec![e])?;
    Ok(Some(endpoint))
}

/// The addresses a host-networked pod has on `node`: the node's first address of each family,
/// in the node's order.
pub fn node_addresses_for_pod(node: &Node) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in &node.addresses {
        if !out.iter().any(|o| o.is_ipv6() == ip.is_ipv6()) {
            out.push(*ip);
        }
    }
    out
}
