//! [`DropRecord`]: one attributed drop, one JSON object per line at `/drops`.

use serde::{Deserialize, Serialize};

/// The policy a drop is attributed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PolicyNames {
    /// The policy whose Deny rule matched.
    One(String),
    /// A default deny: every policy of the tier that selected the endpoint (none allowed it).
    Many(Vec<String>),
}

impl PolicyNames {
    /// Whether `name` is (one of) the policies.
    pub fn names(&self, name: &str) -> bool {
        match self {
            PolicyNames::One(p) => p == name,
            PolicyNames::Many(ps) => ps.iter().any(|p| p == name),
        }
    }
}

impl std::fmt::Display for PolicyNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicyNames::One(p) => f.write_str(p),
            PolicyNames::Many(ps) => f.write_str(&ps.join(",")),
        }
    }
}

/// One dropped packet, attributed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropRecord {
    /// When the agent read it (RFC 3339, UTC).
    pub time: String,
    pub node: String,
    /// `NAMESPACE/POD` when the source address is a pod's, else the address.
    pub from: String,
    /// `NAMESPACE/POD` when the destination address is a pod's, else the address.
    pub to: String,
    /// `TCP`, `UDP`, `SCTP`, `ICMP`, `ICMPv6` (else the protocol number).
    pub protocol: String,
    /// Destination port; `null` for ICMP.
    pub port: Option<u16>,
    /// `ingress` or `egress`: the side whose policies dropped it.
    pub direction: String,
    pub tier: String,
    pub policy: PolicyNames,
    /// Index of the Deny rule in the policy's rules of that direction; `null` for a default
    /// deny.
    pub rule: Option<usize>,
    /// The local pod whose policies dropped it (`to` for ingress, `from` for egress).
    pub endpoint: String,
    /// A would-drop: the enforced policies let the packet through, the staged ones (as if
    /// enforced) would have dropped it; `policy` names the staged policies of that side.
    /// Left out when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub staged: bool,
    /// Dropped, but the staged policies (as if enforced) would have let it through; `tier` and
    /// `policy` are the enforced ones that dropped it. Left out when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub staged_allow: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}
