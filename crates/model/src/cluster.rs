//! A snapshot of everything policy depends on: namespaces, endpoints, policies, tiers and
//! nodes.
//! The engine computes verdicts over it; the CLI builds one from manifests, the lab from its
//! live state.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::endpoint::{Endpoint, EndpointId, Namespace};
use crate::labels::Labels;
use crate::node::Node;
use crate::policy::{Direction, Policy, PolicyId, Tier};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub tiers: Vec<Tier>,
    pub namespaces: BTreeMap<String, Namespace>,
    /// Sorted by id.
    pub endpoints: Vec<Endpoint>,
    pub policies: Vec<Policy>,
    /// Nodes by name (for `nodes` peers and the addresses of host-networked pods).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes: BTreeMap<String, Node>,
    /// Endpoints that are host-networked pods: they have their node's address, are never
    /// selected by a policy and never match a pod or namespace peer, but are flow ends.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub host_network: BTreeSet<EndpointId>,
    /// Rule names (ClusterNetworkPolicy `name`s) by policy, for explanations. In JSON a list
    /// of `{"policy", "ingress", "egress"}` (a map key must be a string).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "rule_names_as_list"
    )]
    pub rule_names: BTreeMap<PolicyId, RuleNames>,
}

mod rule_names_as_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::RuleNames;
    use crate::policy::PolicyId;

    #[derive(Serialize, Deserialize)]
    struct Entry {
        policy: PolicyId,
        #[serde(flatten)]
        names: RuleNames,
    }

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<PolicyId, RuleNames>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let list: Vec<Entry> = map
            .iter()
            .map(|(policy, names)| Entry {
                policy: policy.clone(),
                names: names.clone(),
            })
            .collect();
        list.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<PolicyId, RuleNames>, D::Error> {
        let list = Vec::<Entry>::deserialize(d)?;
        Ok(list.into_iter().map(|e| (e.policy, e.names)).collect())
    }
}

/// The names of a policy's rules, per direction, by rule index (empty: unnamed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleNames {
    #[serde(default)]
    pub ingress: Vec<String>,
    #[serde(default)]
    pub egress: Vec<String>,
}

impl RuleNames {
    /// The name of rule `index` of a direction, if it has one.
    pub fn get(&self, direction: Direction, index: usize) -> Option<&str> {
        let names = match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        };
        names
            .get(index)
            .map(String::as_str)
            .filter(|n| !n.is_empty())
    }
}

impl Cluster {
    /// An empty cluster with the default tiers.
    pub fn new() -> Self {
        Cluster {
            tiers: Tier::defaults(),
            ..Default::default()
        }
    }

    /// Labels of a namespace; a namespace that was never declared has only its name label.
    pub fn namespace_labels(&self, name: &str) -> Labels {
        match self.namespaces.get(name) {
            Some(ns) => ns.labels.clone(),
            None => Namespace::implicit(name).labels,
        }
    }

    /// Adds or replaces an endpoint, keeping `endpoints` sorted, and declares its namespace
    /// implicitly if it is unknown.
    pub fn upsert_endpoint(&mut self, endpoint: Endpoint) {
        self.namespaces
            .entry(endpoint.id.namespace.clone())
            .or_insert_with(|| Namespace::implicit(&endpoint.id.namespace));
        match self.endpoints.binary_search_by(|e| e.id.cmp(&endpoint.id)) {
            Ok(i) => self.endpoints[i] = endpoint,
            Err(i) => self.endpoints.insert(i, endpoint),
        }
    }

    /// Adds or replaces a namespace.
    pub fn upsert_namespace(&mut self, namespace: Namespace) {
        self.namespaces.insert(namespace.name.clone(), namespace);
    }

    /// Adds or replaces a policy (same id replaces it whole).
    pub fn upsert_policy(&mut self, policy: Policy) {
        match self.policies.iter_mut().find(|p| p.id == policy.id) {
            Some(p) => *p = policy,
            None => self.policies.push(policy),
        }
    }

    /// The cluster as it would be if its staged policies were enforced (`--staged`): every
    /// policy unstaged.
    pub fn with_staged_enforced(mut self) -> Cluster {
        for p in &mut self.policies {
            p.staged = false;
        }
        self
    }

    /// Whether any policy is staged.
    pub fn has_staged(&self) -> bool {
        self.policies.iter().any(|p| p.staged)
    }

    /// Whether an endpoint is a host-networked pod.
    pub fn is_host_network(&self, id: &EndpointId) -> bool {
        self.host_network.contains(id)
    }

    /// The name of a rule of a policy, if it has one.
    pub fn rule_name(&self, policy: &PolicyId, direction: Direction, index: usize) -> Option<&str> {
        self.rule_names.get(policy)?.get(direction, index)
    }

    /// Adds or replaces a node; the host-networked pods on it take its addresses
    /// ([`Cluster::upsert_host_network`]).
    pub fn upsert_node(&mut self, node: Node) {
        let addresses = crate::convert::node_addresses_for_pod(&node);
        if !addresses.is_empty() && !self.host_network.is_empty() {
            for ep in &mut self.endpoints {
                if ep.node.as_deref() == Some(node.name.as_str())
                    && self.host_network.contains(&ep.id)
                {
                    ep.ips = addresses.clone();
                }
            }
        }
        self.nodes.insert(node.name.clone(), node);
    }

    /// Adds or replaces a host-networked pod: a flow end that is never a subject or a
    /// pod/namespace peer. It has its node's addresses (the node's first address of each
    /// family) once the node is known and has any, else its own (`status.podIPs`); a node
    /// added later gives it its addresses then.
    pub fn upsert_host_network(&mut self, mut endpoint: Endpoint) {
        let node = endpoint.node.as_ref().and_then(|n| self.nodes.get(n));
        if let Some(addresses) = node.map(crate::convert::node_addresses_for_pod) {
            if !addresses.is_empty() {
                endpoint.ips = addresses;
            }
        }
        self.host_network.insert(endpoint.id.clone());
        self.upsert_endpoint(endpoint);
    }

    pub fn endpoint(&self, id: &EndpointId) -> Option<&Endpoint> {
        self.endpoints
            .binary_search_by(|e| e.id.cmp(id))
            .ok()
            .map(|i| &self.endpoints[i])
    }

    /// What ends a tier: its declared default action, `Deny` for a tier that is not declared.
    pub fn tier_action(&self, tier: &str) -> crate::policy::TierAction {
        self.tiers
            .iter()
            .find(|t| t.name == tier)
            .map(|t| t.default_action)
            .unwrap_or_default()
    }

    /// The order of a tier, or `u32::MAX` for a tier that is not declared.
    pub fn tier_order(&self, tier: &str) -> u32 {
        self.tiers
            .iter()
            .find(|t| t.name == tier)
            .map(|t| t.order)
            .unwrap_or(u32::MAX)
    }
}
