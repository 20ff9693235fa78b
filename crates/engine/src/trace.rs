//! The verdict for one flow and the trace of why: per side (egress at the source pod, ingress
//! at the destination pod) whether the pod is isolated, the tiers and policies that select it
//! in evaluation order, and what decided. Serializable for `-o json`.

use std::net::IpAddr;

use palisade_model::{Action, Cluster, Direction, EndpointId, PolicyId};
use serde::{Deserialize, Serialize};

use crate::eval::{self, Decision, FlowEval, RuleHit, SideEval};
use crate::flow::{EngineError, Flow};

/// Whether a flow is allowed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub flow: Flow,
    pub allowed: bool,
    /// Source and destination are the same pod: always allowed (the traffic never leaves the
    /// pod's network namespace, so no dataplane sees it). The sides are still traced.
    pub same_pod: bool,
    /// The addresses the flow uses (`None` for a pod without an address of the flow's family).
    pub src_ip: Option<IpAddr>,
    pub dst_ip: Option<IpAddr>,
    /// Egress at the source; absent when the source is an address, not a pod.
    pub egress: Option<SideTrace>,
    /// Ingress at the destination; absent when the destination is an address, not a pod.
    pub ingress: Option<SideTrace>,
}

/// How one side judged the flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideTrace {
    pub direction: Direction,
    pub endpoint: EndpointId,
    /// A policy of a tier that ends with Deny (a NetworkPolicy) selects the pod for this
    /// direction: what no rule allows is denied. ClusterNetworkPolicies alone do not isolate.
    pub isolated: bool,
    pub allowed: bool,
    /// Tiers with the policies that select the pod, in evaluation order.
    pub tiers: Vec<TierTrace>,
    pub decision: DecisionTrace,
    /// Log and Pass rules that matched before the decision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub noted: Vec<RuleRef>,
    /// Tiers that selected the pod where no rule matched and that end with Pass (the
    /// ClusterNetworkPolicy tiers), each with where evaluation went next.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fell_through: Vec<FellThrough>,
    /// Policies of equal tier and priority that match the flow as well as the one that was
    /// taken: the API leaves the choice open; Palisade takes the first by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ties: Vec<TieTrace>,
    /// The pod is host-networked: no policy selects it (it is a flow end only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
    /// The far end is the pod's own node: the NetworkPolicy tier did not judge the flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_local: Option<String>,
}

/// What `explain` says when the NetworkPolicy tier skipped a flow to or from the pod's node.
pub const NODE_LOCAL_NOTE: &str = "NetworkPolicy tier: traffic between a pod and its own node is \
     not judged by NetworkPolicies (Kubernetes: always allowed); evaluation goes on";

/// A tier that had no matching rule and passed the flow on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FellThrough {
    pub tier: String,
    /// `tier <name>` of the next tier that selects the pod, or `the default allow`.
    pub next: String,
}

/// Equal priorities: the policy whose rule was taken, and the others that match too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TieTrace {
    pub tier: String,
    pub priority: u32,
    pub chosen: PolicyId,
    pub also_matching: Vec<PolicyId>,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierTrace {
    pub tier: String,
    pub policies: Vec<PolicyId>,
}

/// What decided a side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DecisionTrace {
    /// No policy selects the pod for this direction: open.
    Open,
    /// A rule matched and allowed or denied.
    Rule(RuleRef),
    /// Selected in `tier` by `policies` policies, no rule decided: denied at the end of the tier.
    EndOfTier { tier: String, policies: usize },
    /// No tier decided (each passed the flow on or ended with Pass): the default (open)
    /// applies.
    PassedAllTiers,
}

/// One rule of one policy; `peer` and `port` are the indices that matched (absent when the
/// rule's list is empty, which matches everything).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRef {
    pub policy: PolicyId,
    pub rule: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<usize>,
    pub action: Action,
    /// The rule's `name` (ClusterNetworkPolicy rules), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// For a Pass: where evaluation went next (`tier <name>` or `the default allow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl SideTrace {
    /// The number of policies selecting the pod.
    pub fn policy_count(&self) -> usize {
        self.tiers.iter().map(|t| t.policies.len()).sum()
    }

    /// One line: what decided this side.
    pub fn summary(&self) -> String {
        match &self.decision {
            DecisionTrace::Open => "no policy selects the pod: open".to_string(),
            DecisionTrace::Rule(r) => {
                let verb = match r.action {
                    Action::Allow => "allowed",
                    _ => "denied",
                };
                match &r.name {
                    Some(name) => format!("{verb} by {} rule {} ({name:?})", r.policy, r.rule),
                    None => format!("{verb} by {} rule {}", r.policy, r.rule),
                }
            }
            DecisionTrace::EndOfTier { tier, policies } => format!(
                "selected by {policies} {}, no rule allowed it: denied at end of tier {tier}",
                if *policies == 1 { "policy" } else { "policies" }
            ),
            DecisionTrace::PassedAllTiers => {
                "no tier decided (each passed the flow on): allowed by default".to_string()
            }
        }
    }
}

fn tie(cluster: &Cluster, chosen: usize, others: &[usize]) -> TieTrace {
    let p = &cluster.policies[chosen];
    let also: Vec<PolicyId> = others
        .iter()
        .map(|&i| cluster.policies[i].id.clone())
        .collect();
    let names: Vec<String> = also.iter().map(|id| id.to_string()).collect();
    TieTrace {
        tier: p.id.tier.clone(),
        priority: p.order,
        note: format!(
            "{} shares priority {} in tier {} with {}, which match this flow too; the API \
             leaves the choice between equal priorities open: Palisade takes {} (first by name)",
            p.id,
            p.order,
            p.id.tier,
            names.join(", "),
            p.id
        ),
        chosen: p.id.clone(),
        also_matching: also,
    }
}

/// The verdict for one flow, with its trace.
pub fn verdict(cluster: &Cluster, flow: &Flow) -> Result<Verdict, EngineError> {
    let ev = eval::evaluate(cluster, flow)?;
    Ok(to_verdict(cluster, flow, &ev))
}

fn to_verdict(cluster: &Cluster, flow: &Flow, ev: &FlowEval<'_>) -> Verdict {
    let side = |s: &Option<SideEval>, dir: Direction, id: Option<&EndpointId>| {
        s.as_ref()
            .zip(id)
            .map(|(s, id)| side_trace(cluster, s, dir, id.clone()))
    };
    Verdict {
        flow: flow.clone(),
        allowed: ev.allowed(),
        same_pod: ev.same_pod,
        src_ip: ev.src.ip,
        dst_ip: ev.dst.ip,
        egress: side(&ev.egress, Direction::Egress, ev.src.pod.map(|p| &p.id)),
        ingress: side(&ev.ingress, Direction::Ingress, ev.dst.pod.map(|p| &p.id)),
    }
}

fn rule_ref(
    cluster: &Cluster,
    hit: &RuleHit,
    direction: Direction,
    tiers: &[TierTrace],
) -> RuleRef {
    let id = &cluster.policies[hit.policy].id;
    RuleRef {
        policy: id.clone(),
        rule: hit.rule,
        peer: hit.peer,
        port: hit.port,
        action: hit.action,
        name: cluster
            .rule_name(id, direction, hit.rule)
            .map(str::to_string),
        next: (hit.action == Action::Pass).then(|| next_after(tiers, &id.tier)),
    }
}

/// Where evaluation ends when no later tier selects the pod.
pub const DEFAULT_ALLOW: &str = "the default allow";

/// Where evaluation goes after `tier`: the next tier that selects the pod, or the default.
fn next_after(tiers: &[TierTrace], tier: &str) -> String {
    tiers
        .iter()
        .skip_while(|t| t.tier != tier)
        .nth(1)
        .map_or(DEFAULT_ALLOW.to_string(), |t| format!("tier {}", t.tier))
}

fn side_trace(
    cluster: &Cluster,
    s: &SideEval,
    direction: Direction,
    endpoint: EndpointId,
) -> SideTrace {
    let mut tiers: Vec<TierTrace> = Vec::new();
    for &pi in &s.selecting {
        let id = &cluster.policies[pi].id;
        match tiers.last_mut() {
            Some(t) if t.tier == id.tier => t.policies.push(id.clone()),
            _ => tiers.push(TierTrace {
                tier: id.tier.clone(),
                policies: vec![id.clone()],
            }),
        }
    }
    let decision = match &s.decision {
        Decision::Open => DecisionTrace::Open,
        Decision::Rule(hit) => DecisionTrace::Rule(rule_ref(cluster, hit, direction, &tiers)),
        Decision::EndOfTier(tier) => DecisionTrace::EndOfTier {
            tier: tier.clone(),
            policies: tiers
                .iter()
                .find(|t| t.tier == *tier)
                .map_or(0, |t| t.policies.len()),
        },
        Decision::PassedAll => DecisionTrace::PassedAllTiers,
    };
    let noted = s
        .noted
        .iter()
        .map(|h| rule_ref(cluster, h, direction, &tiers))
        .collect();
    let fell_through = s
        .fell_through
        .iter()
        .map(|t| FellThrough {
            tier: t.clone(),
            next: next_after(&tiers, t),
        })
        .collect();
    SideTrace {
        direction,
        endpoint,
        isolated: s.selecting.iter().any(|&pi| {
            cluster.tier_action(&cluster.policies[pi].id.tier) == palisade_model::TierAction::Deny
        }),
        allowed: s.allowed(),
        tiers,
        noted,
        fell_through,
        ties: s
            .ties
            .iter()
            .map(|(chosen, others)| tie(cluster, *chosen, others))
            .collect(),
        host_network: s.host_network,
        node_local: s.node_local.then(|| NODE_LOCAL_NOTE.to_string()),
        decision,
    }
}
