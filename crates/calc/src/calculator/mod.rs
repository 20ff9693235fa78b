//! The incremental calculation for one node (felix's calc graph, in small).
//!
//! ```text
//!  Update ─► updates.rs: catalog (namespaces, endpoints + indexes), policies (+ label index),
//!            │           local selection (policy ⇄ local endpoint), set membership (sets.rs)
//!            │           all kept current; touched policies and endpoints marked dirty
//!            ▼
//!            flush.rs:   dirty policies → active? compiled → set refcounts (create / drop)
//!                        dirty endpoints → ordered tiers;  → DesiredState + ordered Vec<Delta>
//! ```
//!
//! An update costs in proportion to what it touches: an endpoint change looks at the sets and
//! policies the label indexes name as candidates; a policy change at the local endpoints of its
//! namespace; a namespace change at the sets and local endpoints that depend on its labels.

mod flush;
mod updates;

use std::collections::{BTreeSet, HashMap};

use palisade_model::{EndpointId, Policy, PolicyId, Tier, TierAction};
use serde::Serialize;

use crate::catalog::Catalog;
use crate::compile::Compiled;
use crate::config::CalcConfig;
use crate::index::ScopedIndex;
use crate::sets::SetStore;
use crate::slab::Slab;
use crate::state::{Delta, DesiredState, IpSetId, Update};

struct PolicyEntry {
    policy: Policy,
    compiled: Compiled,
    /// Keys of the local endpoints it selects.
    selected: BTreeSet<u32>,
}

/// Keeps one node's [`DesiredState`] up to date with the cluster, one [`Update`] at a time.
pub struct Calculator {
    config: CalcConfig,
    /// Order and default action of every declared tier.
    tiers: HashMap<String, (u32, TierAction)>,
    catalog: Catalog,
    policies: Slab<PolicyId, PolicyEntry>,
    /// Policies by their endpoint selector, scoped to their namespace (or any).
    policy_index: ScopedIndex,
    sets: SetStore,
    /// The sets each active policy holds a reference on.
    active_refs: HashMap<PolicyId, Vec<IpSetId>>,
    state: DesiredState,
    dirty_policies: BTreeSet<PolicyId>,
    dirty_endpoints: BTreeSet<EndpointId>,
}

/// Sizes of the calculation, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CalcStats {
    pub endpoints: usize,
    pub local_endpoints: usize,
    pub policies: usize,
    pub active_policies: usize,
    pub ip_sets: usize,
    pub set_members: usize,
    /// Compiled rules of the active policies, both directions.
    pub rules: usize,
}

impl Calculator {
    /// An empty cluster view with the default tiers.
    pub fn new(config: CalcConfig) -> Self {
        Calculator {
            config,
            tiers: Tier::defaults()
                .into_iter()
                .map(|t| (t.name, (t.order, t.default_action)))
                .collect(),
            catalog: Catalog::default(),
            policies: Slab::default(),
            policy_index: ScopedIndex::default(),
            sets: SetStore::default(),
            active_refs: HashMap::new(),
            state: DesiredState::default(),
            dirty_policies: BTreeSet::new(),
            dirty_endpoints: BTreeSet::new(),
        }
    }

    pub fn config(&self) -> &CalcConfig {
        &self.config
    }

    /// What the node must enforce now.
    pub fn state(&self) -> &DesiredState {
        &self.state
    }

    /// Applies one update; returns the changes to [`Calculator::state`] in dependency-safe
    /// order (see [`Delta`]).
    pub fn apply(&mut self, update: Update) -> Vec<Delta> {
        self.process(update);
        self.flush()
    }

    /// Applies a batch of updates and returns the net changes, in dependency-safe order.
    /// Objects created and removed again inside the batch produce no delta.
    pub fn apply_all(&mut self, updates: impl IntoIterator<Item = Update>) -> Vec<Delta> {
        for update in updates {
            self.process(update);
        }
        self.flush()
    }

    pub fn stats(&self) -> CalcStats {
        let rules = self
            .state
            .policies
            .values()
            .map(|p| p.ingress.as_ref().map_or(0, Vec::len) + p.egress.as_ref().map_or(0, Vec::len))
            .sum();
        CalcStats {
            endpoints: self.catalog.endpoints.len(),
            local_endpoints: self.state.endpoints.len(),
            policies: self.policies.len(),
            active_policies: self.state.policies.len(),
            ip_sets: self.sets.len(),
            set_members: self.state.ip_sets.values().map(|s| s.members.len()).sum(),
            rules,
        }
    }

    /// A tier's order and default action; an undeclared tier goes last and ends with Deny.
    fn tier_of(tiers: &HashMap<String, (u32, TierAction)>, tier: &str) -> (u32, TierAction) {
        tiers
            .get(tier)
            .copied()
            .unwrap_or((u32::MAX, TierAction::Deny))
    }
}
