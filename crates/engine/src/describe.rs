//! Plain-words rendering of a [`Verdict`]: what `palisade explain` prints.

use std::fmt::Write as _;

use palisade_model::{
    Action, Cluster, Direction, NamespaceMatch, Peer, Policy, PolicyId, Rule, Selector,
};

use crate::trace::{DecisionTrace, SideTrace, Verdict};

/// The verdict and its trace in plain words, several lines, ending with a newline.
pub fn explain_text(cluster: &Cluster, v: &Verdict) -> String {
    let mut out = String::new();
    let head = if v.allowed { "ALLOWED" } else { "DENIED" };
    let _ = writeln!(out, "{head}: {}", v.flow);
    let addr =
        |ip: Option<std::net::IpAddr>| ip.map_or("no address".to_string(), |i| i.to_string());
    if v.src_ip.is_some() || v.dst_ip.is_some() {
        let _ = writeln!(out, "  addresses: {} -> {}", addr(v.src_ip), addr(v.dst_ip));
    }
    if v.same_pod {
        let _ = writeln!(
            out,
            "  same pod: always allowed (the traffic stays inside the pod's network namespace; no policy applies)"
        );
    }
    for (side, missing) in [
        (
            &v.egress,
            "egress: the source is an address, not a pod: no egress policy applies",
        ),
        (
            &v.ingress,
            "ingress: the destination is an address, not a pod: no ingress policy applies",
        ),
    ] {
        match side {
            Some(s) => side_text(cluster, v, s, &mut out),
            None => {
                let _ = writeln!(out, "  {missing}");
            }
        }
    }
    out
}

fn side_text(cluster: &Cluster, v: &Verdict, s: &SideTrace, out: &mut String) {
    let verdict = if s.allowed { "allows" } else { "denies" };
    let _ = writeln!(out, "  {} at {}: {verdict}", s.direction, s.endpoint);
    if s.host_network {
        let _ = writeln!(
            out,
            "    host-networked pod: no policy selects it (never a ClusterNetworkPolicy subject)"
        );
    }
    if s.tiers.is_empty() {
        let _ = writeln!(out, "    {}", s.summary());
        return;
    }
    for t in &s.tiers {
        let names: Vec<String> = t
            .policies
            .iter()
            .map(|id| policy_label(cluster, id))
            .collect();
        let _ = writeln!(
            out,
            "    tier {}: selected by {}",
            tier_label(&t.tier),
            names.join(", ")
        );
    }
    for r in &s.noted {
        if r.action == Action::Pass {
            let next = r.next.as_deref().unwrap_or("the next tier");
            let _ = writeln!(
                out,
                "    passed by {}: evaluation goes on with {next}",
                rule_label(r)
            );
        } else {
            let _ = writeln!(out, "    logged by {}", rule_label(r));
        }
    }
    if let Some(note) = &s.node_local {
        let _ = writeln!(out, "    {note}");
    }
    for f in &s.fell_through {
        let _ = writeln!(
            out,
            "    tier {}: no rule matched; the tier passes the flow on to {}",
            f.tier, f.next
        );
    }
    for t in &s.ties {
        let _ = writeln!(out, "    note: {}", t.note);
    }
    let far = match s.direction {
        Direction::Ingress => format!("from {}", v.flow.src),
        Direction::Egress => format!("to {}", v.flow.dst),
    };
    let what = if v.flow.protocol.has_ports() {
        format!("{}/{}", v.flow.protocol, v.flow.port)
    } else {
        v.flow.protocol.to_string()
    };
    match &s.decision {
        DecisionTrace::Open => {}
        DecisionTrace::Rule(r) => {
            let rule = find_rule(cluster, &r.policy, s.direction, r.rule);
            let desc = rule.map_or(String::new(), |(p, rule)| {
                format!(": {}", describe_rule(p, rule, s.direction))
            });
            let verb = if r.action == Action::Allow {
                "allowed"
            } else {
                "denied"
            };
            let _ = writeln!(out, "    {verb} {what} {far} by {}{desc}", rule_label(r));
        }
        DecisionTrace::EndOfTier { tier, .. } => {
            let _ = writeln!(
                out,
                "    no rule allowed {what} {far}: denied at end of tier {tier}"
            );
            for t in s.tiers.iter().filter(|t| t.tier == *tier) {
                for id in &t.policies {
                    let Some(p) = cluster.policies.iter().find(|p| p.id == *id) else {
                        continue;
                    };
                    let rules = p.rules(s.direction).unwrap_or(&[]);
                    if rules.is_empty() {
                        let _ =
                            writeln!(out, "      {id}: has no {} rules (denies all)", s.direction);
                    }
                    for (i, rule) in rules.iter().enumerate() {
                        let _ = writeln!(
                            out,
                            "      {id} rule {i} {}",
                            describe_rule(p, rule, s.direction)
                        );
                    }
                }
            }
        }
        DecisionTrace::PassedAllTiers => {
            let _ = writeln!(out, "    {}", s.summary());
        }
    }
}

/// `admin:x rule 2 ("name")`, or without the name when the rule has none.
fn rule_label(r: &crate::trace::RuleRef) -> String {
    match &r.name {
        Some(name) => format!("{} rule {} ({name:?})", r.policy, r.rule),
        None => format!("{} rule {}", r.policy, r.rule),
    }
}

/// A tier with what it holds: `admin (ClusterNetworkPolicy Admin tier)`.
fn tier_label(tier: &str) -> String {
    match tier {
        palisade_model::ADMIN_TIER => format!("{tier} (ClusterNetworkPolicy Admin tier)"),
        palisade_model::BASELINE_TIER => format!("{tier} (ClusterNetworkPolicy Baseline tier)"),
        other => other.to_string(),
    }
}

/// A policy with its priority when it is cluster-wide: `admin:x (priority 3)`.
fn policy_label(cluster: &Cluster, id: &PolicyId) -> String {
    match cluster.policies.iter().find(|p| p.id == *id) {
        Some(p) if id.namespace.is_none() => format!("{id} (priority {})", p.order),
        _ => id.to_string(),
    }
}

fn find_rule<'c>(
    cluster: &'c Cluster,
    id: &PolicyId,
    dir: Direction,
    index: usize,
) -> Option<(&'c Policy, &'c Rule)> {
    let p = cluster.policies.iter().find(|p| p.id == *id)?;
    Some((p, p.rules(dir)?.get(index)?))
}

/// A rule in words: "allows only from pods role == \"frontend\" in namespace myns on 6379/TCP".
pub fn describe_rule(policy: &Policy, rule: &Rule, dir: Direction) -> String {
    let action = match rule.action {
        Action::Allow => "allows",
        Action::Deny => "denies",
        Action::Pass => "passes",
        Action::Log => "logs",
    };
    let prep = match dir {
        Direction::Ingress => "from",
        Direction::Egress => "to",
    };
    let _ = policy;
    let peers = if rule.peers.is_empty() {
        "anywhere".to_string()
    } else {
        rule.peers
            .iter()
            .map(describe_peer)
            .collect::<Vec<_>>()
            .join(" or ")
    };
    let ports = if rule.ports.is_empty() {
        "any port".to_string()
    } else {
        describe_ports(&rule.ports).join(", ")
    };
    let only = if rule.peers.is_empty() && rule.ports.is_empty() {
        ""
    } else {
        "only "
    };
    format!("{action} {only}{prep} {peers} on {ports}")
}

/// Port specs in words; a name given for TCP, UDP and SCTP alike (a ClusterNetworkPolicy
/// `destinationNamedPort`, which takes the protocol the destination declares) is said once.
fn describe_ports(ports: &[palisade_model::PortSpec]) -> Vec<String> {
    use palisade_model::{PortMatch, Protocol};
    let every = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];
    let any_protocol = |name: &str| {
        every.iter().all(|proto| {
            ports
                .iter()
                .any(|p| p.protocol == *proto && p.port == PortMatch::Named(name.to_string()))
        })
    };
    let mut out: Vec<String> = Vec::new();
    for p in ports {
        let text = match &p.port {
            PortMatch::Named(name) if any_protocol(name) => format!("the port named {name}"),
            _ => p.to_string(),
        };
        if !out.contains(&text) {
            out.push(text);
        }
    }
    out
}

fn describe_peer(peer: &Peer) -> String {
    match peer {
        Peer::Endpoints(e) => {
            let pods = match &e.pods {
                Selector::All => "all pods".to_string(),
                s => format!("pods {s}"),
            };
            match &e.namespaces {
                NamespaceMatch::Name(n) => format!("{pods} in namespace {n}"),
                NamespaceMatch::Selector(Selector::All) => format!("{pods} in every namespace"),
                NamespaceMatch::Selector(s) => format!("{pods} in namespaces {s}"),
            }
        }
        Peer::Cidr { cidr, except } if except.is_empty() => format!("addresses in {cidr}"),
        Peer::Cidr { cidr, except } => {
            let ex: Vec<String> = except.iter().map(|e| e.to_string()).collect();
            format!("addresses in {cidr} except {}", ex.join(", "))
        }
        Peer::Nodes(Selector::All) => "every node's addresses".to_string(),
        Peer::Nodes(s) => format!("the addresses of nodes {s}"),
        Peer::DomainNames(names) => format!(
            "domain names {} (never matched: enforcement is by address)",
            names.join(", ")
        ),
    }
}
