//! Nodes, as ClusterNetworkPolicy `nodes` peers and host-networked pods see them.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::labels::Labels;

/// A node: its labels and the IP addresses of its `status.addresses` (InternalIP first, then
/// ExternalIP, each in the order the Node lists them; host names are left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
}

impl Node {
    /// Whether `ip` is one of the node's addresses.
    pub fn has_address(&self, ip: IpAddr) -> bool {
        self.addresses.contains(&ip)
    }
}
