//! Workload endpoints (pods) and namespaces, as Palisade stores and computes with them.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::labels::Labels;
use crate::policy::Protocol;

/// `namespace/name` of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EndpointId {
    pub namespace: String,
    pub name: String,
}

impl EndpointId {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        EndpointId {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A container port with a name, which named ports in policies resolve against.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NamedPort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// A pod as a workload endpoint: where it runs, what it is labelled, its addresses and the
/// ports it declares. Unnamed container ports are kept too (the lab serves on them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: EndpointId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default)]
    pub labels: Labels,
    /// Pod IPs, primary first; empty while the pod has none.
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    /// Declared container ports; `name` is empty for unnamed ones.
    #[serde(default)]
    pub ports: Vec<NamedPort>,
}

impl Endpoint {
    /// The number of the container port named `name` with this protocol, if declared.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| !p.name.is_empty() && p.name == name && p.protocol == protocol)
            .map(|p| p.port)
    }

    /// The endpoint's first address of the same family as `other`, if any.
    pub fn ip_of_family(&self, v6: bool) -> Option<IpAddr> {
        self.ips.iter().copied().find(|ip| ip.is_ipv6() == v6)
    }
}

/// A namespace and its labels (which always include `kubernetes.io/metadata.name`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub name: String,
    #[serde(default)]
    pub labels: Labels,
}

impl Namespace {
    /// A namespace with only its automatic name label.
    pub fn implicit(name: &str) -> Self {
        let mut labels = Labels::new();
        labels.insert(
            crate::labels::NAMESPACE_NAME_LABEL.to_string(),
            name.to_string(),
        );
        Namespace {
            name: name.to_string(),
            labels,
        }
    }
}

/// The host-side interface name Calico's CNI gives a pod's veth: `cali` followed by the first 11
/// hex digits of the SHA-1 of `<namespace>.<pod>` (15 characters).
pub fn calico_interface_name(id: &EndpointId) -> String {
    let digest = crate::sha1::sha1(format!("{}.{}", id.namespace, id.name).as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("cali{}", &hex[..11])
}

/// The host-side interface name of a pod's veth, Calico style: `prefix` followed by the first
/// hex digits of a SHA-256 of `namespace/name`, 15 characters in all (the kernel's limit).
/// The lab names veths with it and calc/render match them with it.
pub fn interface_name(prefix: &str, id: &EndpointId) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{}/{}", id.namespace, id.name).as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let keep = 15usize.saturating_sub(prefix.len());
    format!("{prefix}{}", &hex[..keep.min(hex.len())])
}
