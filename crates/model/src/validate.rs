//! Validation of Kubernetes objects (SEMANTICS.md, "Invalid input"). Every problem is reported,
//! not just the first, with the path of the field it is about.
//!
//! The checks follow the API server's validation of `v1` Namespace and Pod (the fields
//! Palisade reads) and `networking.k8s.io/v1` NetworkPolicy; the NetworkPolicy rules are in
//! [`policy`], the shared pieces (metadata, labels, selectors, ports) here.

mod cnp;
#[cfg(test)]
mod cnp_tests;
mod policy;
#[cfg(test)]
mod tests;

pub use cnp::check_domain_name;

pub(crate) use policy::parse_cidr;

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::k8s;
use crate::labels::{check_label_key, check_label_value, is_dns_label, is_dns_subdomain};

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// e.g. `spec.ingress[0].from[1].ipBlock.except[0]`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

pub fn namespace(ns: &k8s::Namespace) -> Vec<FieldError> {
    let mut errs = Vec::new();
    metadata(&ns.metadata, NameRule::DnsLabel, false, &mut errs);
    errs
}

pub fn pod(pod: &k8s::Pod) -> Vec<FieldError> {
    let mut errs = Vec::new();
    metadata(&pod.metadata, NameRule::DnsSubdomain, true, &mut errs);
    if let Some(node) = &pod.spec.node_name {
        if !is_dns_subdomain(node) {
            errs.push(FieldError::new(
                "spec.nodeName",
                format!("{node:?} is not a valid node name (a DNS subdomain)"),
            ));
        }
    }
    let mut names: BTreeMap<&str, String> = BTreeMap::new();
    for (c, container) in pod.spec.containers.iter().enumerate() {
        for (i, port) in container.ports.iter().flatten().enumerate() {
            let at = format!("spec.containers[{c}].ports[{i}]");
            port_number(
                port.container_port,
                &format!("{at}.containerPort"),
                &mut errs,
            );
            if let Some(p) = &port.protocol {
                protocol(p, &format!("{at}.protocol"), &mut errs);
            }
            if let Some(name) = &port.name {
                let field = format!("{at}.name");
                if let Err(why) = check_port_name(name) {
                    errs.push(FieldError::new(field, why));
                } else if let Some(first) = names.get(name.as_str()) {
                    errs.push(FieldError::new(
                        field,
                        format!("duplicate port name {name:?} (already used at {first})"),
                    ));
                } else {
                    names.insert(name, field);
                }
            }
        }
    }
    if let Some(status) = &pod.status {
        pod_ips(status, &mut errs);
    }
    errs
}

pub fn network_policy(np: &k8s::NetworkPolicy) -> Vec<FieldError> {
    let mut errs = Vec::new();
    metadata(&np.metadata, NameRule::DnsSubdomain, true, &mut errs);
    staged_annotation(&np.metadata, &mut errs);
    policy::spec(&np.spec, &mut errs);
    errs
}

/// A ClusterNetworkPolicy, as its CRD's schema and validation rules would check it.
pub fn cluster_network_policy(cnp: &k8s::ClusterNetworkPolicy) -> Vec<FieldError> {
    let mut errs = Vec::new();
    // Cluster-scoped: a metadata.namespace is ignored, as the API server ignores it.
    metadata(&cnp.metadata, NameRule::DnsSubdomain, false, &mut errs);
    staged_annotation(&cnp.metadata, &mut errs);
    cnp::spec(cnp.spec.as_ref(), &mut errs);
    errs
}

/// The staged annotation ([`crate::policy::STAGED_ANNOTATION`]), when present, is `"true"` or
/// `"false"`.
fn staged_annotation(meta: &k8s::ObjectMeta, errs: &mut Vec<FieldError>) {
    let key = crate::policy::STAGED_ANNOTATION;
    if let Some(v) = meta.annotations.as_ref().and_then(|a| a.get(key)) {
        if v != "true" && v != "false" {
            errs.push(FieldError::new(
                format!("metadata.annotations[\"{key}\"]"),
                format!("{v:?} is not a valid value: it must be \"true\" or \"false\""),
            ));
        }
    }
}

/// Whether a validated policy's metadata stages it (the annotation is `"true"`).
pub(crate) fn staged(meta: &k8s::ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(crate::policy::STAGED_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// A Node: name, labels and `status.addresses`.
pub fn node(node: &k8s::Node) -> Vec<FieldError> {
    let mut errs = Vec::new();
    cnp::node(node, &mut errs);
    errs
}

/// Checks a label selector; field paths start with `at` (e.g. `spec.podSelector`).
pub fn label_selector(sel: &k8s::LabelSelector, at: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    selector(sel, at, &mut errs);
    if at.is_empty() {
        for e in &mut errs {
            e.field = e.field.trim_start_matches('.').to_string();
        }
    }
    errs
}

#[derive(Clone, Copy)]
enum NameRule {
    DnsLabel,
    DnsSubdomain,
}

fn metadata(meta: &k8s::ObjectMeta, rule: NameRule, namespaced: bool, errs: &mut Vec<FieldError>) {
    match meta.name.as_deref() {
        None | Some("") => errs.push(FieldError::new("metadata.name", "missing (required)")),
        Some(name) => {
            let (ok, what) = match rule {
                NameRule::DnsLabel => (is_dns_label(name), "a DNS label: at most 63 lower-case alphanumerics or '-', starting and ending alphanumeric"),
                NameRule::DnsSubdomain => (is_dns_subdomain(name), "a DNS subdomain: lower-case alphanumerics, '-' and '.', at most 253 characters"),
            };
            if !ok {
                errs.push(FieldError::new(
                    "metadata.name",
                    format!("{name:?} is not a valid name: it must be {what}"),
                ));
            }
        }
    }
    if namespaced {
        if let Some(ns) = meta.namespace.as_deref().filter(|s| !s.is_empty()) {
            if !is_dns_label(ns) {
                errs.push(FieldError::new(
                    "metadata.namespace",
                    format!("{ns:?} is not a valid namespace name (a DNS label: at most 63 lower-case alphanumerics or '-')"),
                ));
            }
        }
    }
    if let Some(labels) = &meta.labels {
        label_map(labels, "metadata.labels", errs);
    }
}

/// `base.key` for plain keys, `base["key"]` for keys with `.` or `/` (so the path stays
/// unambiguous).
pub(crate) fn key_field(base: &str, key: &str) -> String {
    if key.starts_with(|c: char| c.is_ascii_alphanumeric())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        format!("{base}.{key}")
    } else {
        format!("{base}[{key:?}]")
    }
}

fn label_map(labels: &BTreeMap<String, String>, at: &str, errs: &mut Vec<FieldError>) {
    for (key, value) in labels {
        let field = key_field(at, key);
        if let Err(why) = check_label_key(key) {
            errs.push(FieldError::new(field.clone(), why));
        }
        if let Err(why) = check_label_value(value) {
            errs.push(FieldError::new(field, why));
        }
    }
}

fn selector(sel: &k8s::LabelSelector, at: &str, errs: &mut Vec<FieldError>) {
    if let Some(labels) = &sel.match_labels {
        label_map(labels, &format!("{at}.matchLabels"), errs);
    }
    for (i, req) in sel.match_expressions.iter().flatten().enumerate() {
        let at = format!("{at}.matchExpressions[{i}]");
        if let Err(why) = check_label_key(&req.key) {
            errs.push(FieldError::new(format!("{at}.key"), why));
        }
        let values = req.values.as_deref().unwrap_or_default();
        match req.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => errs.push(FieldError::new(
                format!("{at}.values"),
                format!("operator {} needs at least one value", req.operator),
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => errs.push(FieldError::new(
                format!("{at}.values"),
                format!("operator {} takes no values", req.operator),
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => errs.push(FieldError::new(
                format!("{at}.operator"),
                format!("unknown operator {other:?}: must be In, NotIn, Exists or DoesNotExist"),
            )),
        }
        for (j, v) in values.iter().enumerate() {
            if let Err(why) = check_label_value(v) {
                errs.push(FieldError::new(format!("{at}.values[{j}]"), why));
            }
        }
    }
}

/// A port number field: 1..=65535.
fn port_number(port: i64, field: &str, errs: &mut Vec<FieldError>) {
    if !(1..=65535).contains(&port) {
        errs.push(FieldError::new(
            field,
            format!("port {port} is out of range: must be between 1 and 65535"),
        ));
    }
}

/// A protocol field: exactly `TCP`, `UDP` or `SCTP`, as the API server accepts.
fn protocol(p: &str, field: &str, errs: &mut Vec<FieldError>) {
    if !matches!(p, "TCP" | "UDP" | "SCTP") {
        errs.push(FieldError::new(
            field,
            format!("unsupported protocol {p:?}: must be TCP, UDP or SCTP"),
        ));
    }
}

/// An IANA service name (RFC 6335): at most 15 characters, lower-case alphanumerics and '-',
/// at least one letter, no '-' at either end and no "--".
pub fn check_port_name(name: &str) -> Result<(), String> {
    let why = if name.is_empty() {
        "must not be empty"
    } else if name.len() > 15 {
        "must be at most 15 characters"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        "may contain only lower-case letters, digits and '-'"
    } else if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        "must contain at least one letter"
    } else if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        "must not begin or end with '-' or contain \"--\""
    } else {
        return Ok(());
    };
    Err(format!(
        "port name {name:?} is not a valid IANA service name: it {why}"
    ))
}

fn pod_ips(status: &k8s::PodStatus, errs: &mut Vec<FieldError>) {
    let primary = status.pod_ip.as_deref().filter(|s| !s.is_empty());
    if let Some(ip) = primary {
        if ip.parse::<IpAddr>().is_err() {
            errs.push(FieldError::new(
                "status.podIP",
                format!("{ip:?} is not an IP address"),
            ));
        }
    }
    let mut families = [false; 2];
    for (i, entry) in status.pod_ips.iter().flatten().enumerate() {
        let field = format!("status.podIPs[{i}].ip");
        match entry.ip.parse::<IpAddr>() {
            Err(_) => errs.push(FieldError::new(
                field,
                format!("{:?} is not an IP address", entry.ip),
            )),
            Ok(ip) => {
                let family = usize::from(ip.is_ipv6());
                if families[family] {
                    errs.push(FieldError::new(
                        field.clone(),
                        "at most one address per IP family (dual-stack: one IPv4, one IPv6)",
                    ));
                }
                families[family] = true;
                if i == 0 {
                    if let Some(p) = primary.and_then(|p| p.parse::<IpAddr>().ok()) {
                        if p != ip {
                            errs.push(FieldError::new(
                                field,
                                format!("the first pod IP must equal status.podIP ({p})"),
                            ));
                        }
                    }
                }
            }
        }
    }
}
