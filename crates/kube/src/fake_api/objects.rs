//! Builders of Kubernetes objects (k8s-openapi types) for tests and benchmarks.

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{json, Value};

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
