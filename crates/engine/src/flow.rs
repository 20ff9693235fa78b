//! Flows (one new connection: source, destination, protocol, port) and the engine's errors.

use std::fmt;
use std::net::IpAddr;

use palisade_model::{EndpointId, Protocol};
use serde::{Deserialize, Serialize};

/// One end of a flow: a pod of the cluster, or an address outside it (or not known as a pod).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowEnd {
    Pod(EndpointId),
    Ip(IpAddr),
}

impl std::str::FromStr for FlowEnd {
    type Err = EngineError;

    /// An IP address, or `namespace/name` of a pod.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(FlowEnd::Ip(ip));
        }
        match text.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(FlowEnd::Pod(EndpointId::new(ns, name)))
            }
            _ => Err(EngineError::BadEnd(text.to_string())),
        }
    }
}

impl fmt::Display for FlowEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlowEnd::Pod(id) => write!(f, "{id}"),
            FlowEnd::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// A new connection from `src` to `dst` on `protocol`/`port` (`port` is 0 for ICMP).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Flow {
    pub src: FlowEnd,
    pub dst: FlowEnd,
    pub protocol: Protocol,
    pub port: u16,
}

impl Flow {
    pub fn new(src: FlowEnd, dst: FlowEnd, protocol: Protocol, port: u16) -> Self {
        Flow {
            src,
            dst,
            protocol,
            port,
        }
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.protocol.has_ports() {
            write!(
                f,
                "{} -> {} on {}/{}",
                self.src, self.dst, self.port, self.protocol
            )
        } else {
            write!(f, "{} -> {} on {}", self.src, self.dst, self.protocol)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("unknown pod {0}: the cluster has no endpoint with this namespace/name")]
    UnknownPod(EndpointId),
    #[error("flow end {0:?}: expected NAMESPACE/POD or an IP address")]
    BadEnd(String),
    #[error("flow from {src} to {dst}: the address families differ (IPv4 and IPv6)")]
    FamilyMismatch { src: IpAddr, dst: IpAddr },
}
