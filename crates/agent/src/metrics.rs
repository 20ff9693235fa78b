//! Prometheus metrics of the agent (prometheus-client), all prefixed `palisade_agent_`.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `applies_total` | counter | dataplane applies that succeeded |
//! | `apply_duration_seconds` | histogram | time of each apply (calculation, render and kernel write) |
//! | `rules` | gauge | compiled policy rules in force (both directions) |
//! | `ip_sets`, `ip_set_members` | gauge | IP sets and their members in force |
//! | `local_endpoints`, `active_policies` | gauge | local endpoints; policies that select one |
//! | `errors_total{kind}` | counter | `apply`, `resync`, `datastore`, `invalid_object`, `status_write`, `conntrack` |
//! | `resyncs_total` | counter | dataplane resyncs (re-read the kernel, repair drift) |
//! | `in_sync` | gauge | 1 while the datastore copy is in sync |
//! | `applied_revision` | gauge | datastore revision the dataplane was last programmed from |
//! | `conntrack_checked_total`, `conntrack_revoked_total` | counter | with `--established revoke`: tracked flows of local pods judged after applies, and those deleted because the new rules deny them |
//! | `policy_drops_total{namespace,pod,direction}` | counter | logged policy drops by the local pod whose chain dropped them (at most [`MAX_DROP_SERIES`] pods, the rest as `_other/_other`) |
//! | `staged_drops_total{namespace,pod,direction}` | counter | logged would-drops: packets the enforced policies let through and the staged ones would have dropped (same labels and bound) |

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use palisade_calc::CalcStats;

/// Kinds of errors counted in `errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Apply,
    Resync,
    Datastore,
    InvalidObject,
    StatusWrite,
    Conntrack,
}

impl ErrorKind {
    /// Every kind: each series is exposed at 0 from the start, so dashboards and alerts see
    /// "no errors yet" rather than a missing metric.
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Apply,
        ErrorKind::Resync,
        ErrorKind::Datastore,
        ErrorKind::InvalidObject,
        ErrorKind::StatusWrite,
        ErrorKind::Conntrack,
    ];

    fn labels(self) -> Labels {
        vec![("kind".to_string(), self.label().to_string())]
    }

    fn label(self) -> &'static str {
        match self {
            ErrorKind::Apply => "apply",
            ErrorKind::Resync => "resync",
            ErrorKind::Datastore => "datastore",
            ErrorKind::InvalidObject => "invalid_object",
            ErrorKind::StatusWrite => "status_write",
            ErrorKind::Conntrack => "conntrack",
        }
    }
}

type Labels = Vec<(String, String)>;

/// Most distinct pods `policy_drops_total` has series for; drops of further pods are counted
/// under `namespace="_other",pod="_other"`, so a node with many pods (or much churn) cannot
/// grow the exposition without bound.
pub const MAX_DROP_SERIES: usize = 256;
/// The namespace and pod label of drops past [`MAX_DROP_SERIES`].
pub const OTHER_LABEL: &str = "_other";

/// The agent's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    pub applies: Counter,
    pub apply_duration: Histogram,
    pub rules: Gauge,
    pub ip_sets: Gauge,
    pub ip_set_members: Gauge,
    pub local_endpoints: Gauge,
    pub active_policies: Gauge,
    errors: Family<Labels, Counter>,
    pub resyncs: Counter,
    pub in_sync: Gauge,
    pub applied_revision: Gauge,
    pub conntrack_checked: Counter,
    pub conntrack_revoked: Counter,
    policy_drops: Family<Labels, Counter>,
    staged_drops: Family<Labels, Counter>,
    drop_pods: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("palisade_agent");
        let m = Metrics {
            applies: Counter::default(),
            // 0.5 ms .. ~16 s.
            apply_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            rules: Gauge::default(),
            ip_sets: Gauge::default(),
            ip_set_members: Gauge::default(),
            local_endpoints: Gauge::default(),
            active_policies: Gauge::default(),
            errors: Family::default(),
            resyncs: Counter::default(),
            in_sync: Gauge::default(),
            applied_revision: Gauge::default(),
            conntrack_checked: Counter::default(),
            conntrack_revoked: Counter::default(),
            policy_drops: Family::default(),
            staged_drops: Family::default(),
            drop_pods: Default::default(),
            registry: Registry::default(),
        };
        registry.register(
            "applies",
            "Dataplane applies that succeeded",
            m.applies.clone(),
        );
        registry.register(
            "apply_duration_seconds",
            "Time of each apply: calculation, render and kernel write",
            m.apply_duration.clone(),
        );
        registry.register("rules", "Compiled policy rules in force", m.rules.clone());
        registry.register("ip_sets", "IP sets in force", m.ip_sets.clone());
        registry.register(
            "ip_set_members",
            "Members of the IP sets in force",
            m.ip_set_members.clone(),
        );
        registry.register(
            "local_endpoints",
            "Endpoints on this node",
            m.local_endpoints.clone(),
        );
        registry.register(
            "active_policies",
            "Policies that select at least one local endpoint",
            m.active_policies.clone(),
        );
        registry.register("errors", "Errors by kind", m.errors.clone());
        registry.register(
            "resyncs",
            "Dataplane resyncs (kernel re-read, drift repaired)",
            m.resyncs.clone(),
        );
        registry.register(
            "in_sync",
            "1 while the datastore copy is in sync",
            m.in_sync.clone(),
        );
        registry.register(
            "applied_revision",
            "Datastore revision the dataplane was last programmed from",
            m.applied_revision.clone(),
        );
        registry.register(
            "conntrack_checked",
            "Tracked flows of local pods judged against the new rules after applies (--established revoke)",
            m.conntrack_checked.clone(),
        );
        registry.register(
            "conntrack_revoked",
            "Tracked flows deleted because the new rules deny them (--established revoke)",
            m.conntrack_revoked.clone(),
        );
        registry.register(
            "policy_drops",
            "Packets dropped by policy and logged (rate-limited in the kernel), by the local pod whose policies dropped them",
            m.policy_drops.clone(),
        );
        registry.register(
            "staged_drops",
            "Packets the enforced policies let through and the staged policies would have dropped, logged (rate-limited in the kernel), by the local pod whose staged policies would have dropped them",
            m.staged_drops.clone(),
        );
        for kind in ErrorKind::ALL {
            drop(m.errors.get_or_create(&kind.labels()));
        }
        Metrics { registry, ..m }
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors.get_or_create(&kind.labels()).inc();
    }

    /// Errors of one kind so far.
    pub fn errors(&self, kind: ErrorKind) -> u64 {
        self.errors.get_or_create(&kind.labels()).get()
    }

    /// Counts one logged drop of the local pod `namespace/pod` in `direction`.
    pub fn policy_drop(&self, namespace: &str, pod: &str, direction: &str) {
        let labels = self.drop_labels(namespace, pod, direction);
        self.policy_drops.get_or_create(&labels).inc();
    }

    /// Counts one logged would-drop (staged policies) of the local pod `namespace/pod`.
    pub fn staged_drop(&self, namespace: &str, pod: &str, direction: &str) {
        let labels = self.drop_labels(namespace, pod, direction);
        self.staged_drops.get_or_create(&labels).inc();
    }

    /// The labels of a drop series, pods past [`MAX_DROP_SERIES`] as `_other`.
    fn drop_labels(&self, namespace: &str, pod: &str, direction: &str) -> Labels {
        let known = {
            let mut pods = self.drop_pods.lock().unwrap_or_else(|e| e.into_inner());
            let key = (namespace.to_string(), pod.to_string());
            pods.contains(&key) || (pods.len() < MAX_DROP_SERIES && pods.insert(key))
        };
        let (ns, pod) = if known {
            (namespace, pod)
        } else {
            (OTHER_LABEL, OTHER_LABEL)
        };
        vec![
            ("namespace".to_string(), ns.to_string()),
            ("pod".to_string(), pod.to_string()),
            ("direction".to_string(), direction.to_string()),
        ]
    }

    /// Sizes of what is in force, after a successful apply.
    pub fn set_sizes(&self, s: &CalcStats) {
        self.rules.set(s.rules as i64);
        self.ip_sets.set(s.ip_sets as i64);
        self.ip_set_members.set(s.set_members as i64);
        self.local_endpoints.set(s.local_endpoints as i64);
        self.active_policies.set(s.active_policies as i64);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_every_metric_with_its_prefix() {
        let m = Metrics::new();
        m.applies.inc();
        m.apply_duration.observe(0.002);
        m.error(ErrorKind::Apply);
        m.error(ErrorKind::Apply);
        m.applied_revision.set(17);
        let text = m.encode();
        for name in [
            "palisade_agent_applies_total 1",
            "palisade_agent_apply_duration_seconds_count 1",
            "palisade_agent_errors_total{kind=\"apply\"} 2",
            "palisade_agent_errors_total{kind=\"datastore\"} 0",
            "palisade_agent_errors_total{kind=\"status_write\"} 0",
            "palisade_agent_applied_revision 17",
            "palisade_agent_in_sync 0",
            "palisade_agent_resyncs_total 0",
            "palisade_agent_ip_set_members 0",
            "palisade_agent_rules 0",
        ] {
            assert!(text.contains(name), "missing {name:?} in\n{text}");
        }
        assert_eq!(m.errors(ErrorKind::Apply), 2);
    }

    #[test]
    fn policy_drops_have_bounded_cardinality() {
        let m = Metrics::new();
        for i in 0..MAX_DROP_SERIES + 10 {
            m.policy_drop("ns", &format!("pod-{i}"), "ingress");
        }
        m.policy_drop("ns", "pod-0", "egress");
        let text = m.encode();
        assert!(text.contains(
            "palisade_agent_policy_drops_total{namespace=\"ns\",pod=\"pod-0\",direction=\"egress\"} 1"
        ));
        assert!(text.contains(
            "palisade_agent_policy_drops_total{namespace=\"_other\",pod=\"_other\",direction=\"ingress\"} 10"
        ));
        let series = text
            .lines()
            .filter(|l| l.starts_with("palisade_agent_policy_drops_total{"))
            .count();
        assert_eq!(series, MAX_DROP_SERIES + 2);
    }
}
