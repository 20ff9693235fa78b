//! Pair-by-pair evaluation of one flow, the direct reading of the model's semantics
//! (`palisade_model::policy` docs and SEMANTICS.md). [`crate::verdict`] and
//! [`crate::naive_matrix`] both go through [`evaluate`]; the bitset matrix must agree with it.
//!
//! Addresses: a flow uses one address family. With two pods, the family is that of the first
//! source IP whose family the destination also has; failing that, the family of the source's
//! first IP (or the destination's, or IPv4). Each pod end then contributes its first IP of
//! that family, or none (an end without an address matches no ipBlock).

use std::net::IpAddr;

use palisade_model::{
    Action, Cluster, Direction, Endpoint, NamespaceMatch, Peer, Policy, PortMatch, PortSpec,
    Protocol, Rule, TierAction, DEFAULT_TIER,
};

use crate::flow::{EngineError, Flow, FlowEnd};

/// A flow end resolved against the cluster, with the address it uses for this flow.
#[derive(Debug, Clone, Copy)]
pub(crate) struct End<'a> {
    pub pod: Option<&'a Endpoint>,
    pub ip: Option<IpAddr>,
}

/// What decided one side (egress at the source or ingress at the destination).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// No policy selects the pod for this direction.
    Open,
    /// A rule matched and decided (Allow or Deny).
    Rule(RuleHit),
    /// The pod was selected in this tier and no rule decided or passed: denied.
    EndOfTier(String),
    /// No tier decided (each passed the flow on, or ended with Pass): the default (open)
    /// applies.
    PassedAll,
}

/// A rule that matched: indices into `cluster.policies`, the rule list, the peers and ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RuleHit {
    pub policy: usize,
    pub rule: usize,
    pub peer: Option<usize>,
    pub port: Option<usize>,
    pub action: Action,
}

/// The outcome of one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SideEval {
    /// Indices of the selecting policies in evaluation order.
    pub selecting: Vec<usize>,
    pub decision: Decision,
    /// Log and Pass rules that matched on the way.
    pub noted: Vec<RuleHit>,
    /// Tiers that selected the pod, had no matching rule and end with Pass.
    pub fell_through: Vec<String>,
    /// The pod is host-networked: no policy applies to it.
    pub host_network: bool,
    /// The far end is the pod's own node and the NetworkPolicy tier selected the pod: that
    /// tier did not judge the flow (Kubernetes: traffic to and from the node is always allowed).
    pub node_local: bool,
    /// For each deciding or passing hit whose policy shares its tier and order with other
    /// selecting policies that match the flow too: (the hit's policy, those others).
    pub ties: Vec<(usize, Vec<usize>)>,
}

impl SideEval {
    pub fn allowed(&self) -> bool {
        match &self.decision {
            Decision::Open | Decision::PassedAll => true,
            Decision::Rule(hit) => hit.action == Action::Allow,
            Decision::EndOfTier(_) => false,
        }
    }
}

/// The full evaluation of a flow.
#[derive(Debug, Clone)]
pub(crate) struct FlowEval<'a> {
    pub src: End<'a>,
    pub dst: End<'a>,
    pub same_pod: bool,
    pub egress: Option<SideEval>,
    pub ingress: Option<SideEval>,
}

impl FlowEval<'_> {
    pub fn allowed(&self) -> bool {
        self.same_pod
            || (self.egress.as_ref().is_none_or(SideEval::allowed)
                && self.ingress.as_ref().is_none_or(SideEval::allowed))
    }
}

/// The address family (`true` = IPv6) a flow between ends with these addresses uses.
pub(crate) fn pick_family(src: &[IpAddr], dst: &[IpAddr]) -> bool {
    for ip in src {
        if dst.iter().any(|d| d.is_ipv6() == ip.is_ipv6()) {
            return ip.is_ipv6();
        }
    }
    src.first()
        .or(dst.first())
        .map(|ip| ip.is_ipv6())
        .unwrap_or(false)
}

fn resolve<'a>(
    cluster: &'a Cluster,
    end: &FlowEnd,
) -> Result<(Option<&'a Endpoint>, Vec<IpAddr>), EngineError> {
    match end {
        FlowEnd::Pod(id) => {
            // `endpoints` should be sorted (binary search); stay right if it is not.
            let ep = cluster
                .endpoint(id)
                .or_else(|| cluster.endpoints.iter().find(|e| e.id == *id))
                .ok_or_else(|| EngineError::UnknownPod(id.clone()))?;
            Ok((Some(ep), ep.ips.clone()))
        }
        FlowEnd::Ip(ip) => Ok((None, vec![*ip])),
    }
}

/// Evaluates a flow pair by pair from the model, without any precomputation.
pub(crate) fn evaluate<'a>(cluster: &'a Cluster, flow: &Flow) -> Result<FlowEval<'a>, EngineError> {
    let (src_pod, src_ips) = resolve(cluster, &flow.src)?;
    let (dst_pod, dst_ips) = resolve(cluster, &flow.dst)?;
    if let (FlowEnd::Ip(s), FlowEnd::Ip(d)) = (&flow.src, &flow.dst) {
        if s.is_ipv6() != d.is_ipv6() {
            return Err(EngineError::FamilyMismatch { src: *s, dst: *d });
        }
    }
    let v6 = pick_family(&src_ips, &dst_ips);
    let pick = |ips: &[IpAddr]| ips.iter().copied().find(|ip| ip.is_ipv6() == v6);
    let src = End {
        pod: src_pod,
        ip: pick(&src_ips),
    };
    let dst = End {
        pod: dst_pod,
        ip: pick(&dst_ips),
    };
    let same_pod = matches!((src_pod, dst_pod), (Some(a), Some(b)) if a.id == b.id);
    let egress = src_pod.map(|ep| evaluate_side(cluster, ep, Direction::Egress, dst, dst, flow));
    let ingress = dst_pod.map(|ep| evaluate_side(cluster, ep, Direction::Ingress, src, dst, flow));
    Ok(FlowEval {
        src,
        dst,
        same_pod,
        egress,
        ingress,
    })
}

/// The policies that select `ep` for `direction`, in evaluation order: tier order (then tier
/// name), policy order, policy name, namespace. Staged policies are not enforced: they never
/// select (evaluate `Cluster::with_staged_enforced` to see them at work).
pub(crate) fn selecting_policies(
    cluster: &Cluster,
    ep: &Endpoint,
    direction: Direction,
) -> Vec<usize> {
    if cluster.is_host_network(&ep.id) {
        return Vec::new();
    }
    let ns_labels = cluster.namespace_labels(&ep.id.namespace);
    let mut out: Vec<usize> = cluster
        .policies
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.staged && p.rules(direction).is_some() && p.selects(ep, &ns_labels))
        .map(|(i, _)| i)
        .collect();
    sort_policies(cluster, &mut out);
    out
}

/// Sorts policy indices into evaluation order.
pub(crate) fn sort_policies(cluster: &Cluster, idx: &mut [usize]) {
    idx.sort_by(|&a, &b| {
        policy_key(cluster, &cluster.policies[a]).cmp(&policy_key(cluster, &cluster.policies[b]))
    });
}

fn policy_key<'a>(
    cluster: &Cluster,
    p: &'a Policy,
) -> (u32, &'a str, u32, &'a str, Option<&'a str>) {
    (
        cluster.tier_order(&p.id.tier),
        p.id.tier.as_str(),
        p.order,
        p.id.name.as_str(),
        p.id.namespace.as_deref(),
    )
}

/// Judges one side: `ep` is the pod the policies select, `other` the far end of the flow,
/// `dst` the destination (where named ports resolve).
fn evaluate_side(
    cluster: &Cluster,
    ep: &Endpoint,
    direction: Direction,
    other: End<'_>,
    dst: End<'_>,
    flow: &Flow,
) -> SideEval {
    let selecting = selecting_policies(cluster, ep, direction);
    let own_node = is_own_node(cluster, ep, other);
    let mut node_local = false;
    let mut noted = Vec::new();
    let mut fell_through = Vec::new();
    let mut decision = if selecting.is_empty() {
        Decision::Open
    } else {
        Decision::PassedAll
    };
    let mut i = 0;
    'tiers: while i < selecting.len() {
        let tier = &cluster.policies[selecting[i]].id.tier;
        let mut j = i;
        while j < selecting.len() && cluster.policies[selecting[j]].id.tier == *tier {
            j += 1;
        }
        // NetworkPolicies do not judge traffic between a pod and its own node.
        if own_node && tier == DEFAULT_TIER {
            node_local = true;
            i = j;
            continue;
        }
        for &pi in &selecting[i..j] {
            let policy = &cluster.policies[pi];
            let rules = policy.rules(direction).unwrap_or(&[]);
            for (ri, rule) in rules.iter().enumerate() {
                let Some((peer, port)) = rule_matches(cluster, policy, rule, other, dst, flow)
                else {
                    continue;
                };
                let hit = RuleHit {
                    policy: pi,
                    rule: ri,
                    peer,
                    port,
                    action: rule.action,
                };
                match rule.action {
                    Action::Allow | Action::Deny => {
                        decision = Decision::Rule(hit);
                        break 'tiers;
                    }
                    Action::Pass => {
                        noted.push(hit);
                        i = j;
                        continue 'tiers;
                    }
                    Action::Log => noted.push(hit),
                }
            }
        }
        if cluster.tier_action(tier) == TierAction::Pass {
            fell_through.push(tier.clone());
            i = j;
            continue;
        }
        decision = Decision::EndOfTier(tier.clone());
        break;
    }
    let hits = noted
        .iter()
        .filter(|h| h.action == Action::Pass)
        .chain(match &decision {
            Decision::Rule(hit) => Some(hit),
            _ => None,
        });
    let ties = hits
        .filter_map(|hit| {
            let chosen = &cluster.policies[hit.policy];
            let others: Vec<usize> = selecting
                .iter()
                .copied()
                .filter(|&pi| {
                    let p = &cluster.policies[pi];
                    pi != hit.policy
                        && p.id.tier == chosen.id.tier
                        && p.order == chosen.order
                        && p.rules(direction).unwrap_or(&[]).iter().any(|r| {
                            r.action != Action::Log
                                && rule_matches(cluster, p, r, other, dst, flow).is_some()
                        })
                })
                .collect();
            (!others.is_empty()).then_some((hit.policy, others))
        })
        .collect();
    SideEval {
        selecting,
        decision,
        noted,
        fell_through,
        host_network: cluster.is_host_network(&ep.id),
        node_local,
        ties,
    }
}

/// Whether `other` is `ep`'s own node: a host-networked pod on the same node, or (an address
/// end) one of that node's addresses. Kubernetes: "traffic to and from the node where a Pod is
/// running is always allowed" by NetworkPolicies.
pub(crate) fn is_own_node(cluster: &Cluster, ep: &Endpoint, other: End<'_>) -> bool {
    let Some(node) = ep.node.as_deref() else {
        return false;
    };
    if cluster.is_host_network(&ep.id) {
        return false;
    }
    match other.pod {
        Some(p) => cluster.is_host_network(&p.id) && p.node.as_deref() == Some(node),
        None => other
            .ip
            .is_some_and(|ip| cluster.nodes.get(node).is_some_and(|n| n.has_address(ip))),
    }
}

/// Whether a rule matches: `Some((peer index, port index))` (`None` inside for an empty list).
pub(crate) fn rule_matches(
    cluster: &Cluster,
    policy: &Policy,
    rule: &Rule,
    other: End<'_>,
    dst: End<'_>,
    flow: &Flow,
) -> Option<(Option<usize>, Option<usize>)> {
    let peer = if rule.peers.is_empty() {
        None
    } else {
        Some(
            rule.peers
                .iter()
                .position(|p| peer_matches(cluster, policy, p, other))?,
        )
    };
    // Named ports never resolve on a host-networked pod (its ports are the node's; the
    // dataplane's named-port sets hold workload endpoints only).
    let named_on = dst.pod.filter(|p| !cluster.is_host_network(&p.id));
    let port = if rule.ports.is_empty() {
        None
    } else {
        Some(
            rule.ports
                .iter()
                .position(|p| port_matches(p, named_on, flow.protocol, flow.port))?,
        )
    };
    Some((peer, port))
}

/// Whether a peer admits the far end of the flow.
pub(crate) fn peer_matches(
    cluster: &Cluster,
    _policy: &Policy,
    peer: &Peer,
    other: End<'_>,
) -> bool {
    match peer {
        Peer::Endpoints(ep_peer) => {
            // Host-networked pods never match pod or namespace peers.
            let Some(pod) = other.pod.filter(|p| !cluster.is_host_network(&p.id)) else {
                return false;
            };
            let ns_ok = match &ep_peer.namespaces {
                NamespaceMatch::Name(n) => *n == pod.id.namespace,
                NamespaceMatch::Selector(s) => {
                    s.matches(&cluster.namespace_labels(&pod.id.namespace))
                }
            };
            ns_ok && ep_peer.pods.matches(&pod.labels)
        }
        Peer::Cidr { cidr, except } => other
            .ip
            .is_some_and(|ip| Peer::cidr_contains(cidr, except, ip)),
        Peer::Nodes(selector) => other.ip.is_some_and(|ip| {
            cluster
                .nodes
                .values()
                .any(|n| n.has_address(ip) && selector.matches(&n.labels))
        }),
        // Address-based enforcement cannot see domain names.
        Peer::DomainNames(_) => false,
    }
}

/// Whether a port spec admits `protocol`/`port` on destination `dst` (named ports resolve on
/// it; an IP destination matches no named port).
pub(crate) fn port_matches(
    spec: &PortSpec,
    dst: Option<&Endpoint>,
    protocol: Protocol,
    port: u16,
) -> bool {
    if spec.protocol != protocol {
        return false;
    }
    match &spec.port {
        PortMatch::Any => true,
        PortMatch::Range { start, end } => (*start..=*end).contains(&port),
        PortMatch::Named(name) => dst
            .and_then(|d| d.named_port(name, protocol))
            .is_some_and(|p| p == port),
    }
}
