//! The agent's status in the datastore, at `/palisade/v1/status/<node>`.
//!
//! [`NodeStatus`] is the store's [`palisade_store::AgentStatus`] (node, in sync, revision,
//! last error, updated) plus what `palisade agent status` and `palisade counters` need: the
//! metrics address, the dataplane kind and a small summary of the active policies per local
//! endpoint. It is written in the store's envelope with kind `AgentStatus`, so readers that
//! only know `AgentStatus` (`palisade get status`) still decode it and ignore the extra fields.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use palisade_calc::DesiredState;
use palisade_model::PolicyId;
use palisade_store::codec::API_VERSION;
use palisade_store::{keys, Revision, OWNER_AGENT};
use serde::{Deserialize, Serialize};

/// Policies listed per endpoint and direction in the summary; the count says how many in all.
pub const SUMMARY_POLICIES: usize = 16;

/// An agent's report; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub node: String,
    /// The datastore is in sync and the dataplane was programmed from it without error.
    pub in_sync: bool,
    /// The datastore revision the dataplane was last programmed from.
    pub revision: Revision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub updated: u64,
    /// `host:port` of `/metrics` and `/counters`, if served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<String>,
    /// `iptables` or `nftables`.
    #[serde(default)]
    pub dataplane: String,
    /// Local endpoints and the policies active on them.
    #[serde(default)]
    pub endpoints: Vec<EndpointPolicies>,
    /// How local pods are found: `address` or `interface`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint_match: String,
    /// Interface matching only: the interface naming (`palisade` or `calico`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface_naming: Option<String>,
    /// Why the agent is not ready when that is not the datastore's or an apply's doing
    /// (e.g. a bridge sysctl that is off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_ready: Option<String>,
    /// Realization: every policy active on this node (`ns/name`, `tier:ns/name`) and the
    /// datastore revision of the policy that is programmed: revisions, not copies.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub policies: BTreeMap<String, Revision>,
}

/// The revision of every policy active in `state` (those that select a local endpoint).
pub fn programmed(
    state: &DesiredState,
    revisions: &HashMap<PolicyId, Revision>,
) -> BTreeMap<String, Revision> {
    state
        .policies
        .keys()
        .filter_map(|id| revisions.get(id).map(|r| (id.to_string(), *r)))
        .collect()
}

/// The policies that apply to one local endpoint, in evaluation order, per direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPolicies {
    /// `namespace/pod`.
    pub endpoint: String,
    pub iface: String,
    /// The first [`SUMMARY_POLICIES`] ingress policies (`ns/name`, `tier:ns/name`).
    pub ingress: Vec<String>,
    pub ingress_count: usize,
    pub egress: Vec<String>,
    pub egress_count: usize,
}

/// The summary of every local endpoint of `state`.
pub fn summarize(state: &DesiredState) -> Vec<EndpointPolicies> {
    fn names(tiers: &[palisade_calc::TierPolicies]) -> (Vec<String>, usize) {
        let n = tiers.iter().map(|t| t.policies.len()).sum();
        let first = tiers
            .iter()
            .flat_map(|t| t.policies.iter().map(|p| p.to_string()))
            .take(SUMMARY_POLICIES)
            .collect();
        (first, n)
    }
    state
        .endpoints
        .values()
        .map(|ep| {
            let (ingress, ingress_count) = names(&ep.tiers.ingress);
            let (egress, egress_count) = names(&ep.tiers.egress);
            EndpointPolicies {
                endpoint: ep.id.to_string(),
                iface: ep.iface.clone(),
                ingress,
                ingress_count,
                egress,
                egress_count,
            }
        })
        .collect()
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why a stored status cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("status at {key}: {reason}")]
    Decode { key: String, reason: String },
    #[error(transparent)]
    Key(#[from] palisade_store::StoreError),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<T> {
    api_version: String,
    kind: String,
    owner: String,
    spec: T,
}

impl NodeStatus {
    /// The key this status is stored under.
    pub fn key(&self) -> Result<String, StatusError> {
        Ok(keys::status(&self.node)?)
    }

    /// The stored value: the store's envelope, kind `AgentStatus`, owner `palisade-agent`.
    pub fn encode(&self) -> Result<Vec<u8>, StatusError> {
        let env = Envelope {
            api_version: API_VERSION.to_string(),
            kind: "AgentStatus".to_string(),
            owner: OWNER_AGENT.to_string(),
            spec: self,
        };
        serde_json::to_vec(&env).map_err(|e| StatusError::Decode {
            key: keys::status(&self.node).unwrap_or_default(),
            reason: e.to_string(),
        })
    }

    /// Reads a stored status (also one written by an agent that knew only `AgentStatus`).
    pub fn decode(key: &str, value: &[u8]) -> Result<NodeStatus, StatusError> {
        let bad = |reason: String| StatusError::Decode {
            key: key.to_string(),
            reason,
        };
        let env: Envelope<NodeStatus> =
            serde_json::from_slice(value).map_err(|e| bad(e.to_string()))?;
        if env.api_version != API_VERSION || env.kind != "AgentStatus" {
            return Err(bad(format!(
                "expected {API_VERSION} AgentStatus, found {} {}",
                env.api_version, env.kind
            )));
        }
        Ok(env.spec)
    }

    /// Whether everything but the timestamp is the same.
    pub fn same_content(&self, other: &NodeStatus) -> bool {
        NodeStatus {
            updated: 0,
            ..self.clone()
        } == NodeStatus {
            updated: 0,
            ..other.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_store::{Record, StoredObject};

    fn status() -> NodeStatus {
        NodeStatus {
            node: "n1".into(),
            in_sync: true,
            revision: 42,
            last_error: Some("boom".into()),
            updated: 5,
            metrics_addr: Some("127.0.0.1:9095".into()),
            dataplane: "nftables".into(),
            endpoints: vec![EndpointPolicies {
                endpoint: "prod/web".into(),
                iface: "pal0123456789ab".into(),
                ingress: vec!["prod/deny".into()],
                ingress_count: 1,
                egress: vec![],
                egress_count: 0,
            }],
            endpoint_match: "interface".into(),
            iface_naming: Some("calico".into()),
            not_ready: None,
            policies: BTreeMap::from([("prod/deny".to_string(), 40)]),
        }
    }

    #[test]
    fn the_summary_names_the_first_policies_in_order_and_counts_them_all() {
        use palisade_calc::{EndpointTiers, LocalEndpoint, TierPolicies};
        use palisade_model::{EndpointId, PolicyId};
        let ids = |tier: &str, n: usize| -> Vec<PolicyId> {
            (0..n)
                .map(|i| PolicyId {
                    tier: tier.into(),
                    namespace: Some("prod".into()),
                    name: format!("p{i:02}"),
                })
                .collect()
        };
        let id = EndpointId {
            namespace: "prod".into(),
            name: "web".into(),
        };
        let mut state = DesiredState::default();
        state.endpoints.insert(
            id.clone(),
            LocalEndpoint {
                id,
                iface: "pal0123456789ab".into(),
                iface_aliases: vec![],
                ips: vec![],
                tiers: EndpointTiers {
                    ingress: vec![
                        TierPolicies {
                            tier: "security".into(),
                            policies: ids("security", 10),
                            default_action: Default::default(),
                        },
                        TierPolicies {
                            tier: palisade_model::DEFAULT_TIER.into(),
                            policies: ids(palisade_model::DEFAULT_TIER, 10),
                            default_action: Default::default(),
                        },
                    ],
                    egress: vec![],
                    ..Default::default()
                },
            },
        );
        let summary = summarize(&state);
        let web = &summary[0];
        assert_eq!(web.endpoint, "prod/web");
        assert_eq!(web.ingress_count, 20);
        assert_eq!(web.ingress.len(), SUMMARY_POLICIES);
        assert_eq!(web.ingress[0], "security:prod/p00");
        assert_eq!(web.ingress[10], "prod/p00");
        assert_eq!(web.ingress[15], "prod/p05");
        assert_eq!((web.egress.len(), web.egress_count), (0, 0));
    }

    #[test]
    fn round_trips_and_the_store_reads_it_as_agent_status() {
        let s = status();
        let key = s.key().unwrap();
        assert_eq!(key, "/palisade/v1/status/n1");
        let bytes = s.encode().unwrap();
        assert_eq!(NodeStatus::decode(&key, &bytes).unwrap(), s);
        let rec = Record::decode(&key, &bytes).unwrap();
        assert_eq!(rec.owner, OWNER_AGENT);
        match rec.object {
            StoredObject::Status(a) => {
                assert!(a.in_sync);
                assert_eq!(a.revision, 42);
                assert_eq!(a.last_error.as_deref(), Some("boom"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_a_plain_agent_status_and_rejects_other_kinds() {
        let plain = StoredObject::Status(palisade_store::AgentStatus {
            node: "n2".into(),
            in_sync: false,
            revision: 3,
            last_error: None,
            updated: 9,
        });
        let key = plain.key().unwrap();
        let s = NodeStatus::decode(&key, &plain.encode("x").unwrap()).unwrap();
        assert_eq!(
            (s.node.as_str(), s.revision, s.metrics_addr),
            ("n2", 3, None)
        );
        let ns = StoredObject::Namespace(palisade_model::Namespace::implicit("a"));
        let err = NodeStatus::decode(&key, &ns.encode("x").unwrap());
        assert!(err.is_err());
    }

    #[test]
    fn same_content_ignores_the_timestamp() {
        let a = status();
        let mut b = status();
        b.updated = 99;
        assert!(a.same_content(&b));
        b.revision = 43;
        assert!(!a.same_content(&b));
    }
}
