//! # palisade-model — the first stage of the pipeline
//!
//! ```text
//!  YAML/JSON manifests ─► manifest::parse_documents ─► k8s::{Namespace, Pod, Node, NetworkPolicy,
//!                                                         ClusterNetworkPolicy}
//!                                                         │ validate::*  (errors name file, doc, object, field)
//!                                                         ▼ convert::*   (pure, field by field)
//!                          Palisade model: Namespace, Endpoint, Policy{tier, order, Selector, Rule{Action, Peer, PortSpec}}
//!                                                         ▼
//!                          engine (semantics) · store (datastore values) · calc (per-node state)
//! ```
//!
//! This crate does no I/O: callers read files and hand their text in as values.
//! The semantics these types carry are written down in `shared/SEMANTICS.md`.

pub mod cluster;
pub mod convert;
pub mod endpoint;
pub mod k8s;
pub mod labels;
pub mod manifest;
pub mod node;
pub mod policy;
pub mod selector;
pub mod sha1;
pub mod validate;

pub use cluster::{Cluster, RuleNames};
pub use endpoint::{Endpoint, EndpointId, NamedPort, Namespace};
pub use labels::Labels;
pub use node::Node;
pub use policy::{
    Action, Direction, EndpointPeer, NamespaceMatch, Peer, Policy, PolicyId, PortMatch, PortSpec,
    Protocol, Rule, Tier, TierAction, ADMIN_TIER, BASELINE_TIER, DEFAULT_TIER,
    KUBERNETES_POLICY_ORDER, STAGED_ANNOTATION,
};
pub use selector::Selector;
