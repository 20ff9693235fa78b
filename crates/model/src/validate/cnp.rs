//! ClusterNetworkPolicy (`policy.networking.k8s.io/v1alpha2`) and Node checks. The
//! ClusterNetworkPolicy rules are those of the upstream CRD (its OpenAPI schema and CEL rules,
//! `config/crd/*/policy.networking.k8s.io_clusternetworkpolicies.yaml` of network-policy-api):
//! required fields, enums, ranges, list sizes, "exactly one field" objects, unique set lists,
//! CIDR and domain-name formats, and no named port with networks/nodes/domainNames peers.
//! Label selectors are checked as for NetworkPolicy.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::policy::parse_cidr;
use super::{metadata, selector, FieldError, NameRule};
use crate::k8s;

/// The most rules per direction, peers per rule, protocols per rule, networks and domain
/// names per peer (`maxItems` in the CRD).
pub const MAX_ITEMS: usize = 25;
/// The longest rule name (`maxLength`).
pub const MAX_RULE_NAME: usize = 100;
/// The longest CIDR text (`maxLength` of `CIDR`).
pub const MAX_CIDR: usize = 43;
/// The priority range.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i64> = 0..=1000;

pub(super) fn spec(spec: Option<&k8s::ClusterNetworkPolicySpec>, errs: &mut Vec<FieldError>) {
    let Some(spec) = spec else {
        errs.push(FieldError::new("spec", "missing (required)"));
        return;
    };
    match spec.tier.as_deref() {
        None => errs.push(FieldError::new(
            "spec.tier",
            "missing (required): Admin or Baseline",
        )),
        Some("Admin" | "Baseline") => {}
        Some(other) => errs.push(FieldError::new(
            "spec.tier",
            format!("unsupported tier {other:?}: must be Admin or Baseline"),
        )),
    }
    match spec.priority {
        None => errs.push(FieldError::new(
            "spec.priority",
            "missing (required): 0 to 1000",
        )),
        Some(p) if !PRIORITY_RANGE.contains(&p) => errs.push(FieldError::new(
            "spec.priority",
            format!("priority {p} is out of range: must be between 0 and 1000"),
        )),
        Some(_) => {}
    }
    match &spec.subject {
        None => errs.push(FieldError::new(
            "spec.subject",
            "missing (required): set namespaces or pods",
        )),
        Some(subject) => {
            let set = [subject.namespaces.is_some(), subject.pods.is_some()];
            if one_of(&set, "spec.subject", "namespaces or pods", errs) {
                if let Some(sel) = &subject.namespaces {
                    selector(sel, "spec.subject.namespaces", errs);
                }
                if let Some(pods) = &subject.pods {
                    namespaced_pod(pods, "spec.subject.pods", errs);
                }
            }
        }
    }
    if let Some(rules) = &spec.ingress {
        max_items(rules.len(), "spec.ingress", errs);
        for (i, rule) in rules.iter().enumerate() {
            let at = format!("spec.ingress[{i}]");
            rule_head(rule.name.as_deref(), rule.action.as_deref(), &at, errs);
            match &rule.from {
                None => errs.push(FieldError::new(
                    format!("{at}.from"),
                    "missing (required): at least one peer",
                )),
                Some(peers) => {
                    list_size(peers.len(), &format!("{at}.from"), errs);
                    for (j, peer) in peers.iter().enumerate() {
                        ingress_peer(peer, &format!("{at}.from[{j}]"), errs);
                    }
                }
            }
            protocols(rule.protocols.as_deref(), &at, errs);
        }
    }
    if let Some(rules) = &spec.egress {
        max_items(rules.len(), "spec.egress", errs);
        for (i, rule) in rules.iter().enumerate() {
            let at = format!("spec.egress[{i}]");
            rule_head(rule.name.as_deref(), rule.action.as_deref(), &at, errs);
            match &rule.to {
                None => errs.push(FieldError::new(
                    format!("{at}.to"),
                    "missing (required): at least one peer",
                )),
                Some(peers) => {
                    list_size(peers.len(), &format!("{at}.to"), errs);
                    for (j, peer) in peers.iter().enumerate() {
                        egress_peer(peer, &format!("{at}.to[{j}]"), errs);
                    }
                }
            }
            protocols(rule.protocols.as_deref(), &at, errs);
            let address_peer = rule.to.iter().flatten().position(|p| {
                p.networks.is_some() || p.nodes.is_some() || p.domain_names.is_some()
            });
            let named = rule
                .protocols
                .iter()
                .flatten()
                .position(|p| p.destination_named_port.is_some());
            if let (Some(peer), Some(proto)) = (address_peer, named) {
                errs.push(FieldError::new(
                    format!("{at}.protocols[{proto}].destinationNamedPort"),
                    format!(
                        "networks/nodes/domainNames peer ({at}.to[{peer}]) cannot be set with \
                         namedPorts since there are no namedPorts for networks/nodes/domainNames"
                    ),
                ));
            }
        }
    }
}

/// Exactly one of the fields (`set`) is present; `false` (and an error) otherwise.
fn one_of(set: &[bool], at: &str, names: &str, errs: &mut Vec<FieldError>) -> bool {
    match set.iter().filter(|s| **s).count() {
        1 => true,
        0 => {
            errs.push(FieldError::new(
                at,
                format!("exactly one of {names} must be set (none is)"),
            ));
            false
        }
        n => {
            errs.push(FieldError::new(
                at,
                format!("exactly one of {names} must be set ({n} are)"),
            ));
            false
        }
    }
}

fn max_items(len: usize, at: &str, errs: &mut Vec<FieldError>) {
    if len > MAX_ITEMS {
        errs.push(FieldError::new(
            at,
            format!("{len} items: at most {MAX_ITEMS} are allowed"),
        ));
    }
}

/// A list with `minItems: 1` and `maxItems: 25`.
fn list_size(len: usize, at: &str, errs: &mut Vec<FieldError>) {
    if len == 0 {
        errs.push(FieldError::new(at, "must have at least one item"));
    }
    max_items(len, at, errs);
}

fn rule_head(name: Option<&str>, action: Option<&str>, at: &str, errs: &mut Vec<FieldError>) {
    if let Some(name) = name {
        if name.chars().count() > MAX_RULE_NAME {
            errs.push(FieldError::new(
                format!("{at}.name"),
                format!("must be at most {MAX_RULE_NAME} characters"),
            ));
        }
    }
    match action {
        None => errs.push(FieldError::new(
            format!("{at}.action"),
            "missing (required): Accept, Deny or Pass",
        )),
        Some("Accept" | "Deny" | "Pass") => {}
        Some(other) => errs.push(FieldError::new(
            format!("{at}.action"),
            format!("unsupported action {other:?}: must be Accept, Deny or Pass"),
        )),
    }
}

fn namespaced_pod(pods: &k8s::NamespacedPod, at: &str, errs: &mut Vec<FieldError>) {
    if let Some(sel) = &pods.namespace_selector {
        selector(sel, &format!("{at}.namespaceSelector"), errs);
    }
    match &pods.pod_selector {
        None => errs.push(FieldError::new(
            format!("{at}.podSelector"),
            "missing (required; {} selects every pod)",
        )),
        Some(sel) => selector(sel, &format!("{at}.podSelector"), errs),
    }
}

fn ingress_peer(peer: &k8s::ClusterNetworkPolicyIngressPeer, at: &str, errs: &mut Vec<FieldError>) {
    let set = [peer.namespaces.is_some(), peer.pods.is_some()];
    if !one_of(&set, at, "namespaces or pods", errs) {
        return;
    }
    if let Some(sel) = &peer.namespaces {
        selector(sel, &format!("{at}.namespaces"), errs);
    }
    if let Some(pods) = &peer.pods {
        namespaced_pod(pods, &format!("{at}.pods"), errs);
    }
}

fn egress_peer(peer: &k8s::ClusterNetworkPolicyEgressPeer, at: &str, errs: &mut Vec<FieldError>) {
    let set = [
        peer.namespaces.is_some(),
        peer.pods.is_some(),
        peer.nodes.is_some(),
        peer.networks.is_some(),
        peer.domain_names.is_some(),
    ];
    if !one_of(
        &set,
        at,
        "namespaces, pods, nodes, networks or domainNames",
        errs,
    ) {
        return;
    }
    if let Some(sel) = &peer.namespaces {
        selector(sel, &format!("{at}.namespaces"), errs);
    }
    if let Some(pods) = &peer.pods {
        namespaced_pod(pods, &format!("{at}.pods"), errs);
    }
    if let Some(sel) = &peer.nodes {
        selector(sel, &format!("{at}.nodes"), errs);
    }
    if let Some(networks) = &peer.networks {
        let at = format!("{at}.networks");
        list_size(networks.len(), &at, errs);
        unique(networks, &at, errs);
        for (i, n) in networks.iter().enumerate() {
            let field = format!("{at}[{i}]");
            if n.len() > MAX_CIDR {
                errs.push(FieldError::new(
                    field,
                    format!("must be at most {MAX_CIDR} characters"),
                ));
            } else if let Err(why) = parse_cidr(n) {
                errs.push(FieldError::new(
                    field,
                    format!("Invalid CIDR format provided: {why}"),
                ));
            }
        }
    }
    if let Some(names) = &peer.domain_names {
        let at = format!("{at}.domainNames");
        list_size(names.len(), &at, errs);
        unique(names, &at, errs);
        for (i, n) in names.iter().enumerate() {
            if let Err(why) = check_domain_name(n) {
                errs.push(FieldError::new(format!("{at}[{i}]"), why));
            }
        }
    }
}

/// `listType: set`: no value twice.
fn unique(values: &[String], at: &str, errs: &mut Vec<FieldError>) {
    let mut seen = BTreeSet::new();
    for (i, v) in values.iter().enumerate() {
        if !seen.insert(v.as_str()) {
            errs.push(FieldError::new(
                format!("{at}[{i}]"),
                format!("duplicate value {v:?} (the list is a set)"),
            ));
        }
    }
}

/// The CRD's `DomainName` pattern:
/// `^(\*\.)?([a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.)+[a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.?$`
/// (a wildcard `*.` only as a prefix, at least two labels, an optional final dot). `A-z` in
/// its first class is kept as written: it also admits `[`, `\`, `]`, `^`, `_` and `` ` ``.
pub fn check_domain_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{name:?} is not a valid domain name: {why}"));
    let rest = name.strip_prefix("*.").unwrap_or(name);
    let rest = rest.strip_suffix('.').unwrap_or(rest);
    let labels: Vec<&str> = rest.split('.').collect();
    if labels.len() < 2 {
        return bad("it needs at least two labels, e.g. example.com or *.example.com");
    }
    let first = |c: char| c.is_ascii_digit() || ('A'..='z').contains(&c);
    let last = |c: char| c.is_ascii_alphanumeric();
    let middle = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    for label in labels {
        let mut chars = label.chars();
        let Some(c0) = chars.next() else {
            return bad("empty label");
        };
        if !first(c0) {
            return bad("a label must begin with a letter or digit ('*' only as a '*.' prefix)");
        }
        let tail: Vec<char> = chars.collect();
        if let Some((end, mid)) = tail.split_last() {
            if !last(*end) || !mid.iter().all(|c| middle(*c)) {
                return bad(
                    "labels hold letters, digits, '-' and '_', and end with a letter or digit",
                );
            }
        }
    }
    Ok(())
}

fn protocols(
    protocols: Option<&[k8s::ClusterNetworkPolicyProtocol]>,
    rule: &str,
    errs: &mut Vec<FieldError>,
) {
    let Some(protocols) = protocols else { return };
    let at = format!("{rule}.protocols");
    list_size(protocols.len(), &at, errs);
    for (i, p) in protocols.iter().enumerate() {
        let at = format!("{at}[{i}]");
        let set = [
            p.tcp.is_some(),
            p.udp.is_some(),
            p.sctp.is_some(),
            p.destination_named_port.is_some(),
        ];
        if !one_of(&set, &at, "tcp, udp, sctp or destinationNamedPort", errs) {
            continue;
        }
        for (name, ports) in [("tcp", &p.tcp), ("udp", &p.udp), ("sctp", &p.sctp)] {
            let Some(ports) = ports else { continue };
            let at = format!("{at}.{name}");
            match &ports.destination_port {
                None => errs.push(FieldError::new(
                    at,
                    "must set destinationPort (leave the protocol entry out to match every port)",
                )),
                Some(port) => destination_port(port, &format!("{at}.destinationPort"), errs),
            }
        }
    }
}

fn destination_port(port: &k8s::CnpPort, at: &str, errs: &mut Vec<FieldError>) {
    if !one_of(
        &[port.number.is_some(), port.range.is_some()],
        at,
        "number or range",
        errs,
    ) {
        return;
    }
    if let Some(n) = port.number {
        port_value(n, &format!("{at}.number"), errs);
    }
    if let Some(range) = &port.range {
        let at = format!("{at}.range");
        let start = range.start;
        let end = range.end;
        for (name, value) in [("start", start), ("end", end)] {
            match value {
                None => errs.push(FieldError::new(
                    format!("{at}.{name}"),
                    "missing (required)",
                )),
                Some(v) => port_value(v, &format!("{at}.{name}"), errs),
            }
        }
        if let (Some(s), Some(e)) = (start, end) {
            if s >= e {
                errs.push(FieldError::new(
                    at,
                    format!("Start port must be less than End port (start {s}, end {e})"),
                ));
            }
        }
    }
}

fn port_value(n: i64, at: &str, errs: &mut Vec<FieldError>) {
    if !(1..=65535).contains(&n) {
        errs.push(FieldError::new(
            at,
            format!("port {n} is out of range: must be between 1 and 65535"),
        ));
    }
}

/// A Node: its name (a DNS subdomain), labels and addresses (`InternalIP`/`ExternalIP` must
/// be IP addresses; every address needs a type and a value).
pub(super) fn node(node: &k8s::Node, errs: &mut Vec<FieldError>) {
    metadata(&node.metadata, NameRule::DnsSubdomain, false, errs);
    let addresses = node.status.as_ref().and_then(|s| s.addresses.as_deref());
    for (i, a) in addresses.unwrap_or_default().iter().enumerate() {
        let at = format!("status.addresses[{i}]");
        match a.kind.as_str() {
            "InternalIP" | "ExternalIP" => {
                if a.address.parse::<IpAddr>().is_err() {
                    errs.push(FieldError::new(
                        format!("{at}.address"),
                        format!("{:?} is not an IP address (type {})", a.address, a.kind),
                    ));
                }
            }
            "Hostname" | "InternalDNS" | "ExternalDNS" => {
                if a.address.is_empty() {
                    errs.push(FieldError::new(
                        format!("{at}.address"),
                        "missing (required)",
                    ));
                }
            }
            other => errs.push(FieldError::new(
                format!("{at}.type"),
                format!(
                    "unknown address type {other:?}: must be InternalIP, ExternalIP, Hostname, \
                     InternalDNS or ExternalDNS"
                ),
            )),
        }
    }
}
