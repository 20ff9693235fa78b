//! NetworkPolicy spec checks: policyTypes, peers (selectors, ipBlock), ports.

use ipnet::IpNet;

use super::{check_port_name, port_number, protocol, selector, FieldError};
use crate::k8s;

pub(super) fn spec(spec: &k8s::NetworkPolicySpec, errs: &mut Vec<FieldError>) {
    selector(&spec.pod_selector, "spec.podSelector", errs);
    let types = spec.policy_types.as_deref().unwrap_or_default();
    for (i, t) in types.iter().enumerate() {
        let field = format!("spec.policyTypes[{i}]");
        if !matches!(t.as_str(), "Ingress" | "Egress") {
            errs.push(FieldError::new(
                field,
                format!("unknown policy type {t:?}: must be Ingress or Egress"),
            ));
        } else if types[..i].contains(t) {
            errs.push(FieldError::new(
                field,
                format!("duplicate policy type {t:?}"),
            ));
        }
    }
    for (i, rule) in spec.ingress.iter().flatten().enumerate() {
        let at = format!("spec.ingress[{i}]");
        peers(rule.from.as_deref(), &format!("{at}.from"), errs);
        ports(rule.ports.as_deref(), &format!("{at}.ports"), errs);
    }
    for (i, rule) in spec.egress.iter().flatten().enumerate() {
        let at = format!("spec.egress[{i}]");
        peers(rule.to.as_deref(), &format!("{at}.to"), errs);
        ports(rule.ports.as_deref(), &format!("{at}.ports"), errs);
    }
}

fn peers(peers: Option<&[k8s::NetworkPolicyPeer]>, at: &str, errs: &mut Vec<FieldError>) {
    for (i, peer) in peers.unwrap_or_default().iter().enumerate() {
        let at = format!("{at}[{i}]");
        if let Some(sel) = &peer.pod_selector {
            selector(sel, &format!("{at}.podSelector"), errs);
        }
        if let Some(sel) = &peer.namespace_selector {
            selector(sel, &format!("{at}.namespaceSelector"), errs);
        }
        let has_selector = peer.pod_selector.is_some() || peer.namespace_selector.is_some();
        match &peer.ip_block {
            Some(_) if has_selector => errs.push(FieldError::new(
                at.clone(),
                "ipBlock may not be combined with podSelector or namespaceSelector in one peer",
            )),
            Some(block) => ip_block(block, &format!("{at}.ipBlock"), errs),
            None if !has_selector => errs.push(FieldError::new(
                at.clone(),
                "a peer must set podSelector, namespaceSelector or ipBlock",
            )),
            None => {}
        }
    }
}

/// A CIDR in `address/prefix` form; host bits are allowed (they are masked on conversion).
pub(crate) fn parse_cidr(s: &str) -> Result<IpNet, String> {
    if !s.contains('/') {
        return Err(format!(
            "{s:?} is not a CIDR: write address/prefix, e.g. 10.0.0.0/8 or {s}/32"
        ));
    }
    s.parse::<IpNet>()
        .map_err(|_| format!("{s:?} is not a valid CIDR (address/prefix)"))
}

fn ip_block(block: &k8s::IpBlock, at: &str, errs: &mut Vec<FieldError>) {
    let cidr = match parse_cidr(&block.cidr) {
        Ok(c) => Some(c.trunc()),
        Err(why) => {
            errs.push(FieldError::new(format!("{at}.cidr"), why));
            None
        }
    };
    for (i, e) in block.except.iter().flatten().enumerate() {
        let field = format!("{at}.except[{i}]");
        let except = match parse_cidr(e) {
            Ok(x) => x.trunc(),
            Err(why) => {
                errs.push(FieldError::new(field, why));
                continue;
            }
        };
        let Some(cidr) = cidr else { continue };
        let inside = match (cidr, except) {
            (IpNet::V4(c), IpNet::V4(x)) => Some(c.contains(&x) && x.prefix_len() > c.prefix_len()),
            (IpNet::V6(c), IpNet::V6(x)) => Some(c.contains(&x) && x.prefix_len() > c.prefix_len()),
            _ => None,
        };
        match inside {
            None => errs.push(FieldError::new(
                field,
                format!("{e:?} is of another IP family than cidr {cidr}"),
            )),
            Some(false) => errs.push(FieldError::new(
                field,
                format!("{e:?} must be strictly inside cidr {cidr}"),
            )),
            Some(true) => {}
        }
    }
}

fn ports(ports: Option<&[k8s::NetworkPolicyPort]>, at: &str, errs: &mut Vec<FieldError>) {
    for (i, p) in ports.unwrap_or_default().iter().enumerate() {
        let at = format!("{at}[{i}]");
        if let Some(proto) = &p.protocol {
            protocol(proto, &format!("{at}.protocol"), errs);
        }
        match &p.port {
            Some(k8s::IntOrString::Int(n)) => port_number(*n, &format!("{at}.port"), errs),
            Some(k8s::IntOrString::String(name)) => {
                if let Err(why) = check_port_name(name) {
                    errs.push(FieldError::new(format!("{at}.port"), why));
                }
            }
            None => {}
        }
        if let Some(end) = p.end_port {
            let field = format!("{at}.endPort");
            match &p.port {
                Some(k8s::IntOrString::Int(start)) => {
                    if end > 65535 {
                        errs.push(FieldError::new(
                            field,
                            format!("endPort {end} is out of range: must be at most 65535"),
                        ));
                    } else if end < *start {
                        errs.push(FieldError::new(
                            field,
                            format!("endPort {end} must not be below port {start}"),
                        ));
                    }
                }
                _ => errs.push(FieldError::new(
                    field,
                    "endPort requires a numeric port (it cannot follow a named port or stand alone)",
                )),
            }
        }
    }
}
