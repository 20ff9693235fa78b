//! What-if: the pairs whose verdict a change of policy would flip, and why.
//!
//! [`what_if`] takes the cluster as it is (`now`) and as it would be after a change (`then`)
//! and returns every (source pod, destination pod, probe) whose verdict differs, each with the
//! policy and rule that cause the difference. Both matrices come from the bitset algebra of
//! [`crate::matrix`]; only the pairs that differ are explained pair by pair, through the same
//! evaluation as `explain`. Pods present on one side only have no "before" or "after": they
//! are counted apart, not listed as changes.

use std::collections::HashMap;

use palisade_model::{Cluster, EndpointId};
use serde::{Deserialize, Serialize};

use crate::flow::{Flow, FlowEnd};
use crate::index::Index;
use crate::matrix::Probe;
use crate::trace::{verdict, DecisionTrace, SideTrace, Verdict};

/// One pair whose verdict would change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub from: EndpointId,
    pub to: EndpointId,
    pub probe: Probe,
    /// The verdict today.
    pub now: bool,
    /// The verdict after the change.
    pub then: bool,
    /// The policy and rule that make the difference, in words.
    pub because: String,
}

/// The result of [`what_if`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WhatIf {
    /// Sorted by probe, then source, then destination (matrix order of the pods).
    pub changes: Vec<Change>,
    /// Pods the change adds (present only after it) and removes (present only before it).
    pub pods_added: Vec<EndpointId>,
    pub pods_removed: Vec<EndpointId>,
}

impl WhatIf {
    /// Pairs allowed now and denied after the change.
    pub fn newly_denied(&self) -> usize {
        self.changes.iter().filter(|c| c.now && !c.then).count()
    }

    /// Pairs denied now and allowed after the change.
    pub fn newly_allowed(&self) -> usize {
        self.changes.iter().filter(|c| !c.now && c.then).count()
    }
}

/// Every pair and probe whose verdict differs between `now` and `then`.
///
/// The two sides are computed on two threads (the index of a cluster is most of the cost),
/// and so are the explanations of the pairs that differ.
pub fn what_if(now: &Cluster, then: &Cluster, probes: &[Probe]) -> WhatIf {
    let side = |c| {
        let index = Index::new(c);
        let matrices: Vec<_> = probes.iter().map(|p| index.probe_matrix(*p)).collect();
        (index.pod_ids(), matrices)
    };
    let ((pods_now, m_now), (pods_then, m_then)) = std::thread::scope(|s| {
        let t = s.spawn(|| side(then));
        let n = side(now);
        (n, t.join().expect("what-if thread panicked"))
    });

    // Matrix indices of the pods present on both sides: (index now, index then).
    let then_pos: HashMap<&EndpointId, usize> =
        pods_then.iter().enumerate().map(|(i, p)| (p, i)).collect();
    let common: Vec<(usize, usize)> = pods_now
        .iter()
        .enumerate()
        .filter_map(|(i, p)| then_pos.get(p).map(|&j| (i, j)))
        .collect();
    let same_pods = common.len() == pods_now.len() && common.len() == pods_then.len();

    // (probe, from, to, allowed now), in probe, source, destination order.
    let mut flips: Vec<(Probe, usize, usize, bool)> = Vec::new();
    for (a, b) in m_now.iter().zip(&m_then) {
        if same_pods {
            // Same order on both sides: compare rows word by word.
            for (i, (ra, rb)) in a.rows.iter().zip(&b.rows).enumerate() {
                if ra != rb {
                    flips.extend(
                        ra.symmetric_difference(rb)
                            .map(|j| (a.probe, i, j, ra.contains(j))),
                    );
                }
            }
        } else {
            for &(i, ti) in &common {
                for &(j, tj) in &common {
                    let x = a.allowed(i, j);
                    if x != b.allowed(ti, tj) {
                        flips.push((a.probe, i, j, x));
                    }
                }
            }
        }
    }

    let explain = |chunk: &[(Probe, usize, usize, bool)]| -> Vec<Change> {
        chunk
            .iter()
            .map(|&(probe, i, j, x)| {
                explain_change(now, then, &pods_now[i], &pods_now[j], probe, x)
            })
            .collect()
    };
    let changes = if flips.len() < 256 {
        explain(&flips)
    } else {
        let (first, second) = flips.split_at(flips.len() / 2);
        std::thread::scope(|s| {
            let t = s.spawn(|| explain(second));
            let mut out = explain(first);
            out.extend(t.join().expect("what-if thread panicked"));
            out
        })
    };

    let now_set: std::collections::HashSet<&EndpointId> = pods_now.iter().collect();
    WhatIf {
        changes,
        pods_added: pods_then
            .iter()
            .filter(|p| !now_set.contains(p))
            .cloned()
            .collect(),
        pods_removed: pods_now
            .iter()
            .filter(|p| !then_pos.contains_key(p))
            .cloned()
            .collect(),
    }
}

/// One changed pair with the reason: for a newly denied pair, the side that denies it after
/// the change; for a newly allowed one, the side that denied it before, as judged after.
fn explain_change(
    now: &Cluster,
    then: &Cluster,
    from: &EndpointId,
    to: &EndpointId,
    probe: Probe,
    allowed_now: bool,
) -> Change {
    let flow = Flow::new(
        FlowEnd::Pod(from.clone()),
        FlowEnd::Pod(to.clone()),
        probe.protocol,
        probe.port,
    );
    // Both ends are pods of both clusters, so evaluation cannot fail; a failure would only
    // cost the reason, never the change itself.
    let v_then = verdict(then, &flow).ok();
    let because = if allowed_now {
        // Denied after: name what denies it then.
        v_then
            .as_ref()
            .map(|v| denying_reasons(v).join("; "))
            .unwrap_or_default()
    } else {
        // Allowed after: name, for each side that denied it before, what decides it then.
        match (&verdict(now, &flow).ok(), &v_then) {
            (Some(n), Some(t)) => {
                let mut out = Vec::new();
                for (before, after) in [(&n.egress, &t.egress), (&n.ingress, &t.ingress)] {
                    if let (Some(b), Some(a)) = (before, after) {
                        if !b.allowed {
                            out.push(side_reason(a));
                        }
                    }
                }
                out.join("; ")
            }
            _ => String::new(),
        }
    };
    Change {
        from: from.clone(),
        to: to.clone(),
        probe,
        now: allowed_now,
        then: !allowed_now,
        because,
    }
}

fn denying_reasons(v: &Verdict) -> Vec<String> {
    [&v.egress, &v.ingress]
        .into_iter()
        .flatten()
        .filter(|s| !s.allowed)
        .map(side_reason)
        .collect()
}

/// `ingress at ns/pod: …` with the policy and rule that decide this side.
fn side_reason(s: &SideTrace) -> String {
    let what = match &s.decision {
        DecisionTrace::Open => "no policy selects the pod: open".to_string(),
        DecisionTrace::Rule(r) => {
            let verb = match r.action {
                palisade_model::Action::Allow => "allowed",
                _ => "denied",
            };
            format!("{verb} by {} rule {}", r.policy, r.rule)
        }
        DecisionTrace::EndOfTier { tier, .. } => {
            let names: Vec<String> = s
                .tiers
                .iter()
                .filter(|t| t.tier == *tier)
                .flat_map(|t| t.policies.iter().map(ToString::to_string))
                .collect();
            format!(
                "isolated by {} and no rule allows it: denied at end of tier {tier}",
                names.join(", ")
            )
        }
        DecisionTrace::PassedAllTiers => {
            "every selecting tier passed the flow on: open by default".to_string()
        }
    };
    format!("{} at {}: {what}", s.direction, s.endpoint)
}

#[cfg(test)]
mod tests;
