//! # palisade-calc — what one node must enforce
//!
//! ```text
//!  datastore events ─► Update ─► Calculator (label index, selector → IP set, policy → local
//!                                 endpoints)  ─► DesiredState + Vec<Delta> ─► render
//! ```
//!
//! Pure: no clock, no I/O, no async. The agent feeds [`Update`]s in; `render` turns the
//! [`DesiredState`] (full) or the [`Delta`]s (incremental) into kernel rules.

pub mod state;

pub use state::{
    ActivePolicy, CompiledRule, Delta, DesiredState, EndpointTiers, IpSet, IpSetId, IpSetKind,
    IpSetMember, LocalEndpoint, RulePeer, RulePort, TierPolicies, Update,
};
