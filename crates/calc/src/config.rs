//! [`CalcConfig`]: which node the calculation is for and how its interfaces are named.

use serde::{Deserialize, Serialize};

/// The interface prefix Palisade uses for pod veths unless configured otherwise.
pub const DEFAULT_IFACE_PREFIX: &str = "pal";

/// What one node's calculation needs to know about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalcConfig {
    /// The node whose endpoints are local (`Endpoint::node`).
    pub node: String,
    /// Prefix of host-side interface names (`palisade_model::endpoint::interface_name`).
    pub iface_prefix: String,
}

impl CalcConfig {
    /// The configuration for `node` with the default interface prefix.
    pub fn new(node: impl Into<String>) -> Self {
        CalcConfig {
            node: node.into(),
            iface_prefix: DEFAULT_IFACE_PREFIX.to_string(),
        }
    }
}
