//! What `/counters` serves and `palisade counters` prints: per-rule packet and byte counters
//! attributed to policy, direction and rule, the end-of-chain drops per endpoint, and the
//! policies active on each local endpoint.

use palisade_dataplane::{CounterKind, RuleCounter};
use serde::{Deserialize, Serialize};

use crate::status::EndpointPolicies;

/// One counter, with names as users write them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CounterView {
    /// `rule` (a policy rule) or `drop` (the end of an endpoint's chain).
    pub kind: String,
    /// `ns/name` (or `tier:ns/name`) of a policy rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// `ingress` or `egress`.
    pub direction: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<usize>,
    /// `namespace/pod` of an endpoint drop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub packets: u64,
    pub bytes: u64,
}

impl From<&RuleCounter> for CounterView {
    fn from(c: &RuleCounter) -> Self {
        CounterView {
            kind: match c.kind {
                CounterKind::PolicyRule => "rule".into(),
                CounterKind::EndpointDrop => "drop".into(),
                CounterKind::SpoofDrop => "spoof".into(),
            },
            policy: c.policy.as_ref().map(|p| p.to_string()),
            direction: c.direction.to_string(),
            rule: c.rule_index,
            endpoint: c.endpoint.as_ref().map(|e| e.to_string()),
            packets: c.packets,
            bytes: c.bytes,
        }
    }
}

/// The whole `/counters` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CountersReport {
    pub node: String,
    pub dataplane: String,
    /// The datastore revision the rules were programmed from.
    pub revision: i64,
    pub endpoints: Vec<EndpointPolicies>,
    /// Policy rule counters, sorted by policy, direction, rule.
    pub rules: Vec<CounterView>,
    /// End-of-chain drops, sorted by endpoint and direction.
    pub drops: Vec<CounterView>,
    /// Packets dropped by anti-spoofing: from a local pod's address, but not from that pod's
    /// interface (both families).
    #[serde(default)]
    pub spoofed_packets: u64,
}

impl CountersReport {
    /// Sorts the dataplane's counters into rules and drops.
    pub fn new(
        node: &str,
        dataplane: &str,
        revision: i64,
        endpoints: Vec<EndpointPolicies>,
        counters: &[RuleCounter],
    ) -> Self {
        let mut rules: Vec<CounterView> = Vec::new();
        let mut drops: Vec<CounterView> = Vec::new();
        let mut spoofed_packets = 0;
        for c in counters {
            match c.kind {
                CounterKind::PolicyRule => rules.push(c.into()),
                CounterKind::EndpointDrop => drops.push(c.into()),
                CounterKind::SpoofDrop => spoofed_packets += c.packets,
            }
        }
        rules.sort_by(|a, b| {
            (&a.policy, &a.direction, a.rule).cmp(&(&b.policy, &b.direction, b.rule))
        });
        drops.sort_by(|a, b| (&a.endpoint, &a.direction).cmp(&(&b.endpoint, &b.direction)));
        CountersReport {
            node: node.to_string(),
            dataplane: dataplane.to_string(),
            revision,
            endpoints,
            rules,
            drops,
            spoofed_packets,
        }
    }

    /// Only what concerns `policy` (`ns/name` as printed): its rules, and the endpoints it is
    /// active on with their drops.
    pub fn only_policy(mut self, policy: &str) -> Self {
        self.rules.retain(|r| r.policy.as_deref() == Some(policy));
        self.endpoints
            .retain(|e| e.ingress.iter().chain(&e.egress).any(|p| p == policy));
        let eps: Vec<String> = self.endpoints.iter().map(|e| e.endpoint.clone()).collect();
        self.drops
            .retain(|d| d.endpoint.as_ref().is_some_and(|e| eps.contains(e)));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_model::{Direction, EndpointId, PolicyId};

    #[test]
    fn sorts_and_filters_by_policy() {
        let pid = |n: &str| PolicyId {
            tier: "default".into(),
            namespace: Some("prod".into()),
            name: n.into(),
        };
        let rule = |p: &str, i: usize, pk: u64| RuleCounter {
            kind: CounterKind::PolicyRule,
            policy: Some(pid(p)),
            direction: Direction::Ingress,
            rule_index: Some(i),
            endpoint: None,
            packets: pk,
            bytes: pk * 60,
        };
        let drop = RuleCounter {
            kind: CounterKind::EndpointDrop,
            policy: None,
            direction: Direction::Ingress,
            rule_index: None,
            endpoint: Some(EndpointId::new("prod", "web")),
            packets: 3,
            bytes: 180,
        };
        let eps = vec![EndpointPolicies {
            endpoint: "prod/web".into(),
            iface: "palx".into(),
            ingress: vec!["prod/b".into()],
            ingress_count: 1,
            egress: vec![],
            egress_count: 0,
        }];
        let r = CountersReport::new(
            "n1",
            "nftables",
            7,
            eps,
            &[rule("b", 1, 2), drop, rule("a", 0, 1), rule("b", 0, 5)],
        );
        let order: Vec<_> = r
            .rules
            .iter()
            .map(|c| (c.policy.clone().unwrap(), c.rule.unwrap()))
            .collect();
        assert_eq!(
            order,
            vec![
                ("prod/a".into(), 0),
                ("prod/b".into(), 0),
                ("prod/b".into(), 1)
            ]
        );
        assert_eq!(r.drops[0].endpoint.as_deref(), Some("prod/web"));
        assert_eq!(r.drops[0].kind, "drop");
        let only_b = r.clone().only_policy("prod/b");
        assert_eq!(only_b.rules.len(), 2);
        assert_eq!(only_b.drops.len(), 1);
        let only_a = r.only_policy("prod/a");
        assert_eq!(only_a.rules.len(), 1);
        assert!(only_a.endpoints.is_empty() && only_a.drops.is_empty());
    }
}
