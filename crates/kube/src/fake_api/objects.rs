//! Builders of Kubernetes objects (k8s-openapi types) for tests and benchmarks.

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{json, Value};

use crate::crd::RawClusterNetworkPolicy;

fn labels(pairs: &[(&str, &str)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect(),
    )
}

/// A Namespace with these labels (plus its automatic name label).
pub fn namespace(name: &str, extra: &[(&str, &str)]) -> Namespace {
    let mut l = labels(extra);
    l["kubernetes.io/metadata.name"] = json!(name);
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": l},
    }))
    .unwrap_or_default()
}

/// A running Pod on `node` with `ip` (none: not yet assigned) and these labels, with one
/// container declaring TCP port 80 named `http`.
pub fn pod(ns: &str, name: &str, node: Option<&str>, ip: Option<&str>, l: &[(&str, &str)]) -> Pod {
    let mut v = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels(l)},
        "spec": {"containers": [{"name": "app", "image": "nginx",
                  "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}]}]},
        "status": {"phase": "Running"},
    });
    if let Some(node) = node {
        v["spec"]["nodeName"] = json!(node);
    }
    if let Some(ip) = ip {
        v["status"]["podIP"] = json!(ip);
        v["status"]["podIPs"] = json!([{"ip": ip}]);
    } else {
        v["status"]["phase"] = json!("Pending");
    }
    serde_json::from_value(v).unwrap_or_default()
}

/// A host-networked Pod (`spec.hostNetwork: true`) on `node`, declaring TCP port 9100 named
/// `metrics`, with `status.podIP` = `ip` if given (Kubernetes gives it its node's address).
pub fn host_network_pod(ns: &str, name: &str, node: &str, ip: Option<&str>) -> Pod {
    let mut p = pod(ns, name, Some(node), ip, &[("app", name)]);
    if let Some(spec) = p.spec.as_mut() {
        spec.host_network = Some(true);
        spec.containers[0].ports = serde_json::from_value(
            json!([{"name": "metrics", "containerPort": 9100, "protocol": "TCP"}]),
        )
        .ok();
    }
    if let Some(status) = p.status.as_mut() {
        status.phase = Some("Running".into());
    }
    p
}

/// A NetworkPolicy from its `spec` as JSON.
pub fn network_policy(ns: &str, name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }))
    .unwrap_or_default()
}

/// A policy that lets pods labelled `app=<from>` reach pods labelled `app=<to>` on TCP 80.
pub fn allow_from(ns: &str, name: &str, to: &str, from: &str) -> NetworkPolicy {
    network_policy(
        ns,
        name,
        json!({
            "podSelector": {"matchLabels": {"app": to}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": from}}}],
                         "ports": [{"protocol": "TCP", "port": 80}]}],
        }),
    )
}

/// A ClusterNetworkPolicy from its `spec` as JSON (not checked: invalid ones are for tests).
pub fn cluster_network_policy(name: &str, spec: Value) -> RawClusterNetworkPolicy {
    serde_json::from_value(json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap_or_default()
}

/// An Admin policy at `priority` that denies ingress from namespace `from` into namespace
/// `to` (both by their `kubernetes.io/metadata.name` label).
pub fn admin_deny(name: &str, priority: i64, to: &str, from: &str) -> RawClusterNetworkPolicy {
    let ns = |n: &str| json!({"matchLabels": {"kubernetes.io/metadata.name": n}});
    cluster_network_policy(
        name,
        json!({
            "tier": "Admin",
            "priority": priority,
            "subject": {"namespaces": ns(to)},
            "ingress": [{"name": "deny-from", "action": "Deny", "from": [{"namespaces": ns(from)}]}],
        }),
    )
}

/// A Node with these labels and an `InternalIP` address.
pub fn node(name: &str, internal_ip: &str, l: &[(&str, &str)]) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels(l)},
        "status": {"addresses": [
            {"type": "InternalIP", "address": internal_ip},
            {"type": "Hostname", "address": name},
        ]},
    }))
    .unwrap_or_default()
}
