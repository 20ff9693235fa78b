//! # palisade-calc — what one node must enforce
//!
//! ```text
//!  datastore events ─► Update ─► Calculator (label index, selector → IP set, policy → local
//!                                 endpoints)  ─► DesiredState + Vec<Delta> ─► render
//! ```
//!
//! Pure: no clock, no I/O, no async. The agent feeds [`Update`]s in; `render` turns the
//! [`DesiredState`] (full) or the [`Delta`]s (incremental) into kernel rules.
//! [`compute_full`] computes the same state from a whole [`palisade_model::Cluster`] the
//! plain way; tests hold the [`Calculator`] to it. [`Mirror`] replays deltas and checks that
//! every step leaves every reference valid.
//!
//! ```
//! use palisade_calc::{CalcConfig, Calculator, Delta, Update};
//! use palisade_model::{Endpoint, EndpointId, Policy, PolicyId, Selector};
//!
//! let mut calc = Calculator::new(CalcConfig::new("node-1"));
//! let web = Endpoint {
//!     id: EndpointId::new("shop", "web"),
//!     node: Some("node-1".into()),
//!     labels: [("app".to_string(), "web".to_string())].into(),
//!     ips: vec!["10.0.0.7".parse().unwrap()],
//!     ports: vec![],
//! };
//! assert_eq!(
//!     calc.apply(Update::EndpointUpsert(web)),
//!     vec![Delta::EndpointChanged { id: EndpointId::new("shop", "web") }]
//! );
//! // A deny-all-ingress policy for app=web: the policy first, then the endpoint using it.
//! let id = PolicyId { tier: "default".into(), namespace: Some("shop".into()), name: "deny".into() };
//! let deny = Policy {
//!     id: id.clone(),
//!     order: 1000,
//!     selector: Selector::parse("app == \"web\"").unwrap(),
//!     namespace_selector: Selector::All,
//!     staged: false,
//!     ingress: Some(vec![]),
//!     egress: None,
//! };
//! assert_eq!(
//!     calc.apply(Update::PolicyUpsert(deny)),
//!     vec![
//!         Delta::PolicyChanged { id: id.clone() },
//!         Delta::EndpointChanged { id: EndpointId::new("shop", "web") },
//!     ]
//! );
//! let web = &calc.state().endpoints[&EndpointId::new("shop", "web")];
//! assert_eq!(web.tiers.ingress[0].policies, vec![id]);
//! assert!(web.tiers.egress.is_empty()); // egress stays open
//! ```

mod calculator;
mod catalog;
pub mod compile;
pub mod config;
mod fasthash;
pub mod full;
mod index;
pub mod mirror;
pub mod pod;
pub mod setdef;
mod sets;
mod slab;
pub mod state;

pub use calculator::{CalcStats, Calculator};
pub use config::{CalcConfig, IfaceNaming};
pub use full::{cluster_updates, compute_full};
pub use mirror::{Mirror, MirrorError};
pub use pod::PodView;
pub use setdef::{named_port_set_id, peer_set_id, SetDef};
pub use state::{
    ActivePolicy, CompiledRule, Delta, DesiredState, EndpointTiers, IpSet, IpSetId, IpSetKind,
    IpSetMember, LocalEndpoint, RulePeer, RulePort, TierPolicies, Update,
};
