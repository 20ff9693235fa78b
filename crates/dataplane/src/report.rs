//! What the dataplane tells its caller: an [`ApplyReport`] per apply or resync, and
//! [`RuleCounter`]s mapped back to the policy rule (or endpoint drop) they count.

use std::time::Duration;

use palisade_model::{Direction, EndpointId, PolicyId};
use serde::{Deserialize, Serialize};

use crate::runner::CommandRecord;

/// What a rendered rule stands for; carried next to its `pal:` hash so counters read from
/// the kernel can be attributed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RuleOrigin {
    pub kind: CounterKind,
    /// The policy of a policy rule; `None` for an endpoint drop.
    pub policy: Option<PolicyId>,
    pub direction: Direction,
    /// Index of the rule in the policy's rules of that direction.
    pub rule_index: Option<usize>,
    /// The endpoint, for rules in an endpoint chain (its final drop).
    pub endpoint: Option<EndpointId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CounterKind {
    /// A rule of a policy.
    PolicyRule,
    /// The drop at the end of an endpoint chain (a selecting tier decided nothing).
    EndpointDrop,
    /// Anti-spoofing: a packet from a local pod's address that did not enter through that
    /// pod's interface.
    SpoofDrop,
}

/// Packets and bytes of one rule, summed over the address families it is rendered for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleCounter {
    pub kind: CounterKind,
    pub policy: Option<PolicyId>,
    pub direction: Direction,
    pub rule_index: Option<usize>,
    pub endpoint: Option<EndpointId>,
    pub packets: u64,
    pub bytes: u64,
}

/// What one apply or resync did to the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub sets_created: Vec<String>,
    pub sets_updated: Vec<String>,
    pub sets_deleted: Vec<String>,
    pub members_added: usize,
    pub members_removed: usize,
    /// Chains flushed and written again (new chains included).
    pub chains_rewritten: Vec<String>,
    pub chains_deleted: Vec<String>,
    /// Kernel chains whose jump into our chains was inserted or repaired.
    pub jumps_written: Vec<String>,
    /// The last attempt rewrote everything (after repeated failures or on request).
    pub full_rewrite: bool,
    /// Attempts made (1 when the first write succeeded).
    pub attempts: u32,
    pub duration: Duration,
    /// Every command run, reads included, in order.
    pub commands: Vec<CommandRecord>,
}

impl ApplyReport {
    /// Adds the set, chain and member changes of `other` to this report.
    pub fn add_changes(&mut self, other: ApplyReport) {
        self.sets_created.extend(other.sets_created);
        self.sets_updated.extend(other.sets_updated);
        self.sets_deleted.extend(other.sets_deleted);
        self.members_added += other.members_added;
        self.members_removed += other.members_removed;
        self.chains_rewritten.extend(other.chains_rewritten);
        self.chains_deleted.extend(other.chains_deleted);
    }

    /// Nothing was written to the kernel.
    pub fn wrote_nothing(&self) -> bool {
        self.sets_created.is_empty()
            && self.sets_updated.is_empty()
            && self.sets_deleted.is_empty()
            && self.chains_rewritten.is_empty()
            && self.chains_deleted.is_empty()
            && self.jumps_written.is_empty()
    }

    /// The commands that wrote (restores, `nft -f`), not the reads.
    pub fn writes(&self) -> Vec<&CommandRecord> {
        self.commands.iter().filter(|c| c.stdin.is_some()).collect()
    }

    /// Time spent in the commands that wrote.
    pub fn write_time(&self) -> Duration {
        self.commands
            .iter()
            .filter(|c| c.stdin.is_some())
            .map(|c| c.elapsed)
            .sum()
    }

    /// Reset the per-attempt parts before a retry (commands and duration accumulate).
    pub(crate) fn clear_changes(&mut self) {
        self.sets_created.clear();
        self.sets_updated.clear();
        self.sets_deleted.clear();
        self.members_added = 0;
        self.members_removed = 0;
        self.chains_rewritten.clear();
        self.chains_deleted.clear();
        self.jumps_written.clear();
    }
}

/// Sums counters per rule origin (a rule is rendered once per family, and may be read in
/// several chains).
#[derive(Debug, Default)]
pub(crate) struct CounterSums {
    index: std::collections::HashMap<RuleOrigin, usize>,
    sums: Vec<RuleCounter>,
}

impl CounterSums {
    pub(crate) fn add(&mut self, origin: &RuleOrigin, packets: u64, bytes: u64) {
        let i = match self.index.get(origin) {
            Some(&i) => i,
            None => {
                self.sums.push(RuleCounter {
                    kind: origin.kind,
                    policy: origin.policy.clone(),
                    direction: origin.direction,
                    rule_index: origin.rule_index,
                    endpoint: origin.endpoint.clone(),
                    packets: 0,
                    bytes: 0,
                });
                self.index.insert(origin.clone(), self.sums.len() - 1);
                self.sums.len() - 1
            }
        };
        self.sums[i].packets += packets;
        self.sums[i].bytes += bytes;
    }

    pub(crate) fn finish(self) -> Vec<RuleCounter> {
        self.sums
    }
}
