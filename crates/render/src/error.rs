//! Errors of the renderer: bad configuration, input it refuses to put into rule text, and an
//! inconsistent [`DesiredState`](palisade_calc::DesiredState). Endpoints and policies are
//! named by their display form (`namespace/name`, `tier:namespace/name`).

use palisade_model::Direction;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("render config: {0}")]
    Config(String),
    #[error("endpoint {endpoint}: interface name {iface:?} is not usable in rules (1 to 15 characters of [a-zA-Z0-9_.-], starting with a letter or digit)")]
    BadInterface { endpoint: String, iface: String },
    #[error("endpoints {first} and {second} share interface {iface:?}")]
    DuplicateInterface {
        first: String,
        second: String,
        iface: String,
    },
    #[error("endpoints {first} and {second} share address {addr} (address matching needs one owner per address)")]
    DuplicateAddress {
        first: String,
        second: String,
        addr: String,
    },
    #[error("endpoint {endpoint}: {direction} tier {tier:?} refers to policy {policy}, which has no {direction} rules in the desired state")]
    MissingPolicy {
        endpoint: String,
        direction: Direction,
        tier: String,
        policy: String,
    },
    #[error("policy {policy}: rule refers to ip set {set:?}, which is not in the desired state")]
    MissingSet { policy: String, set: String },
}

impl RenderError {
    /// A delta named a set that neither the previous nor the next state has.
    pub fn unknown_set(set: &str) -> RenderError {
        RenderError::Config(format!(
            "delta refers to ip set {set:?}, which neither the previous nor the next state has"
        ))
    }
}
