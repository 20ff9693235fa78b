//! A snapshot of everything policy depends on: namespaces, endpoints, policies and tiers.
//! The engine computes verdicts over it; the CLI builds one from manifests, the lab from its
//! live state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::endpoint::{Endpoint, EndpointId, Namespace};
use crate::labels::Labels;
use crate::policy::{Policy, Tier};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub tiers: Vec<Tier>,
    pub namespaces: BTreeMap<String, Namespace>,
    /// Sorted by id.
    pub endpoints: Vec<Endpoint>,
    pub policies: Vec<Policy>,
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

    pub fn endpoint(&self, id: &EndpointId) -> Option<&Endpoint> {
        self.endpoints
            .binary_search_by(|e| e.id.cmp(id))
            .ok()
            .map(|i| &self.endpoints[i])
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
