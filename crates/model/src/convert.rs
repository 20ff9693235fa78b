//! Kubernetes → Palisade model. Each function validates first and converts only valid input,
//! so callers get either a model value or every field error.

mod cnp;
#[cfg(test)]
mod cnp_tests;
#[cfg(test)]
mod staged_tests;
#[cfg(test)]
mod tests;

pub use cnp::{cluster_network_policy, host_network_pod, node, node_addresses_for_pod};

use std::net::IpAddr;

use crate::cluster::Cluster;
use crate::endpoint::{Endpoint, EndpointId, NamedPort, Namespace};
use crate::k8s;
use crate::labels::NAMESPACE_NAME_LABEL;
use crate::manifest::{Document, ManifestError, Object};
use crate::policy::{
    Action, EndpointPeer, NamespaceMatch, Peer, Policy, PolicyId, PortMatch, PortSpec, Protocol,
    Rule, DEFAULT_TIER, KUBERNETES_POLICY_ORDER,
};
use crate::selector::Selector;
use crate::validate::{self, FieldError};

/// The namespace of a namespaced object whose metadata leaves it out.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A NetworkPolicy as a model policy: default tier, order 1000, Allow rules, effective
/// policyTypes applied (SEMANTICS.md 4-5), peers and ports normalized (8-12).
pub fn network_policy(np: &k8s::NetworkPolicy) -> Result<Policy, Vec<FieldError>> {
    checked(validate::network_policy(np))?;
    let ns = object_namespace(&np.metadata);
    let spec = &np.spec;
    let (ingress_on, egress_on) = effective_policy_types(spec);
    let ingress = if ingress_on {
        let rules = spec.ingress.iter().flatten().enumerate().map(|(i, r)| {
            let at = format!("spec.ingress[{i}]");
            rule(r.from.as_deref(), r.ports.as_deref(), &ns, &at, "from")
        });
        Some(rules.collect::<Result<Vec<_>, _>>().map_err(|e| vec![e])?)
    } else {
        None
    };
    let egress = if egress_on {
        let rules = spec.egress.iter().flatten().enumerate().map(|(i, r)| {
            let at = format!("spec.egress[{i}]");
            rule(r.to.as_deref(), r.ports.as_deref(), &ns, &at, "to")
        });
        Some(rules.collect::<Result<Vec<_>, _>>().map_err(|e| vec![e])?)
    } else {
        None
    };
    Ok(Policy {
        id: PolicyId {
            tier: DEFAULT_TIER.to_string(),
            namespace: Some(ns),
            name: np.metadata.name.clone().unwrap_or_default(),
        },
        order: KUBERNETES_POLICY_ORDER,
        selector: selector(&spec.pod_selector),
        namespace_selector: Selector::All,
        staged: validate::staged(&np.metadata),
        ingress,
        egress,
    })
}

/// SEMANTICS.md 4: `(ingress, egress)` — `spec.policyTypes` when non-empty, else Ingress, plus
/// Egress iff `spec.egress` has at least one rule.
pub fn effective_policy_types(spec: &k8s::NetworkPolicySpec) -> (bool, bool) {
    match spec.policy_types.as_deref() {
        Some(types) if !types.is_empty() => (
            types.iter().any(|t| t == "Ingress"),
            types.iter().any(|t| t == "Egress"),
        ),
        _ => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
    }
}

fn rule(
    peers: Option<&[k8s::NetworkPolicyPeer]>,
    ports: Option<&[k8s::NetworkPolicyPort]>,
    ns: &str,
    at: &str,
    peers_field: &str,
) -> Result<Rule, FieldError> {
    let peers = peers
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, p)| peer(p, ns, &format!("{at}.{peers_field}[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let ports = ports
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, p)| port(p, &format!("{at}.ports[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rule {
        action: Action::Allow,
        peers,
        ports,
    })
}

fn peer(p: &k8s::NetworkPolicyPeer, ns: &str, at: &str) -> Result<Peer, FieldError> {
    if let Some(block) = &p.ip_block {
        let cidr = validate::parse_cidr(&block.cidr)
            .map_err(|why| FieldError::new(format!("{at}.ipBlock.cidr"), why))?
            .trunc();
        let except = block
            .except
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, e)| {
                validate::parse_cidr(e)
                    .map(|n| n.trunc())
                    .map_err(|why| FieldError::new(format!("{at}.ipBlock.except[{i}]"), why))
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Peer::Cidr { cidr, except });
    }
    let pods = p
        .pod_selector
        .as_ref()
        .map(selector)
        .unwrap_or(Selector::All);
    let namespaces = match &p.namespace_selector {
        Some(sel) => NamespaceMatch::Selector(selector(sel)),
        None => NamespaceMatch::Name(ns.to_string()),
    };
    Ok(Peer::Endpoints(EndpointPeer { namespaces, pods }))
}

fn port(p: &k8s::NetworkPolicyPort, at: &str) -> Result<PortSpec, FieldError> {
    let protocol = protocol_of(p.protocol.as_deref(), &format!("{at}.protocol"))?;
    let port = match &p.port {
        None => PortMatch::Any,
        Some(k8s::IntOrString::String(name)) => PortMatch::Named(name.clone()),
        Some(k8s::IntOrString::Int(n)) => {
            let start = port_u16(*n, &format!("{at}.port"))?;
            let end = match p.end_port {
                Some(e) => port_u16(e, &format!("{at}.endPort"))?,
                None => start,
            };
            PortMatch::Range { start, end }
        }
    };
    Ok(PortSpec { protocol, port })
}

fn protocol_of(p: Option<&str>, field: &str) -> Result<Protocol, FieldError> {
    match p {
        None => Ok(Protocol::Tcp),
        Some(s) => Protocol::parse(s)
            .filter(|p| p.has_ports())
            .ok_or_else(|| FieldError::new(field, format!("unsupported protocol {s:?}"))),
    }
}

fn port_u16(n: i64, field: &str) -> Result<u16, FieldError> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| FieldError::new(field, format!("port {n} is out of range")))
}

/// A validated label selector as a model selector.
fn selector(sel: &k8s::LabelSelector) -> Selector {
    let mut terms = Vec::new();
    for (k, v) in sel.match_labels.iter().flatten() {
        terms.push(Selector::Eq(k.clone(), v.clone()));
    }
    for req in sel.match_expressions.iter().flatten() {
        let values = || req.values.iter().flatten().cloned().collect();
        terms.push(match req.operator.as_str() {
            "In" => Selector::In(req.key.clone(), values()),
            "NotIn" => Selector::NotIn(req.key.clone(), values()),
            "Exists" => Selector::Has(req.key.clone()),
            // DoesNotExist; validation has refused every other operator.
            _ => Selector::Not(Box::new(Selector::Has(req.key.clone()))),
        });
    }
    Selector::and(terms)
}

/// A Pod as a workload endpoint; `Ok(None)` for pods that are not workload endpoints
/// (hostNetwork, phase Succeeded/Failed, or being deleted).
pub fn pod(pod: &k8s::Pod) -> Result<Option<Endpoint>, Vec<FieldError>> {
    checked(validate::pod(pod))?;
    let status = pod.status.as_ref();
    let finished = status
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    if pod.spec.host_network == Some(true) || finished || pod.metadata.deletion_timestamp.is_some()
    {
        return Ok(None);
    }
    let ips = pod_ips(status).map_err(|e| vec![e])?;
    let mut ports = Vec::new();
    for (c, container) in pod.spec.containers.iter().enumerate() {
        for (i, p) in container.ports.iter().flatten().enumerate() {
            let at = format!("spec.containers[{c}].ports[{i}]");
            ports.push(NamedPort {
                name: p.name.clone().unwrap_or_default(),
                protocol: protocol_of(p.protocol.as_deref(), &format!("{at}.protocol"))
                    .map_err(|e| vec![e])?,
                port: port_u16(p.container_port, &format!("{at}.containerPort"))
                    .map_err(|e| vec![e])?,
            });
        }
    }
    Ok(Some(Endpoint {
        id: EndpointId::new(
            object_namespace(&pod.metadata),
            pod.metadata.name.clone().unwrap_or_default(),
        ),
        node: pod.spec.node_name.clone(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        ips,
        ports,
    }))
}

/// `status.podIPs` when non-empty, else `status.podIP`, else none.
fn pod_ips(status: Option<&k8s::PodStatus>) -> Result<Vec<IpAddr>, FieldError> {
    let Some(status) = status else {
        return Ok(Vec::new());
    };
    let parse = |s: &str, field: String| {
        s.parse::<IpAddr>()
            .map_err(|_| FieldError::new(field, format!("{s:?} is not an IP address")))
    };
    match status.pod_ips.as_deref() {
        Some(list) if !list.is_empty() => list
            .iter()
            .enumerate()
            .map(|(i, p)| parse(&p.ip, format!("status.podIPs[{i}].ip")))
            .collect(),
        _ => match status.pod_ip.as_deref().filter(|s| !s.is_empty()) {
            Some(ip) => Ok(vec![parse(ip, "status.podIP".into())?]),
            None => Ok(Vec::new()),
        },
    }
}

/// A Namespace with its labels plus `kubernetes.io/metadata.name`.
pub fn namespace(ns: &k8s::Namespace) -> Result<Namespace, Vec<FieldError>> {
    checked(validate::namespace(ns))?;
    let name = ns.metadata.name.clone().unwrap_or_default();
    let mut labels = ns.metadata.labels.clone().unwrap_or_default();
    labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.clone());
    Ok(Namespace { name, labels })
}

/// A Kubernetes label selector as a model selector (empty selects everything).
pub fn label_selector(sel: &k8s::LabelSelector) -> Result<Selector, Vec<FieldError>> {
    checked(validate::label_selector(sel, ""))?;
    Ok(selector(sel))
}

/// Every document of a batch into one cluster: all of it, or every error and nothing.
pub fn cluster(documents: &[Document]) -> Result<Cluster, Vec<ManifestError>> {
    let mut errors = Vec::new();
    let mut converted = Vec::new();
    for doc in documents {
        let result = match &doc.object {
            Object::Namespace(ns) => namespace(ns).map(Converted::Namespace),
            Object::Pod(p) if p.spec.host_network == Some(true) => {
                host_network_pod(p).map(Converted::HostNetwork)
            }
            Object::Pod(p) => pod(p).map(Converted::Endpoint),
            Object::NetworkPolicy(np) => network_policy(np).map(Converted::Policy),
            Object::ClusterNetworkPolicy(cnp) => {
                cluster_network_policy(cnp).map(|(p, names)| Converted::Cluster(p, names))
            }
            Object::Node(n) => node(n).map(Converted::Node),
        };
        match result {
            Ok(c) => converted.push(c),
            Err(field_errors) => {
                let object = doc.object.describe();
                errors.extend(field_errors.into_iter().map(|e| ManifestError {
                    location: doc.source.clone(),
                    object: Some(object.clone()),
                    field: e.field,
                    message: e.message,
                }))
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut cluster = Cluster::new();
    let mut host_network = Vec::new();
    for c in converted {
        match c {
            Converted::Namespace(ns) => cluster.upsert_namespace(ns),
            Converted::Endpoint(Some(ep)) => cluster.upsert_endpoint(ep),
            Converted::Endpoint(None) | Converted::HostNetwork(None) => {}
            Converted::HostNetwork(Some(ep)) => host_network.push(ep),
            Converted::Policy(p) => cluster.upsert_policy(p),
            Converted::Cluster(p, names) => {
                cluster.rule_names.insert(p.id.clone(), names);
                cluster.upsert_policy(p);
            }
            Converted::Node(n) => cluster.upsert_node(n),
        }
    }
    // Host-networked pods have their node's addresses once the node is known.
    for ep in host_network {
        cluster.upsert_host_network(ep);
    }
    Ok(cluster)
}

enum Converted {
    Namespace(Namespace),
    Endpoint(Option<Endpoint>),
    HostNetwork(Option<Endpoint>),
    Policy(Policy),
    Cluster(Policy, crate::cluster::RuleNames),
    Node(crate::node::Node),
}

fn checked(errors: Vec<FieldError>) -> Result<(), Vec<FieldError>> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn object_namespace(meta: &k8s::ObjectMeta) -> String {
    meta.namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
}
