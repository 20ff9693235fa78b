//! [`PodView`]: what the calculator reads of an endpoint (id, labels, addresses, ports), so
//! that set membership and selection work the same on a whole [`Endpoint`] and on the
//! catalog's compact copy ([`crate::catalog::Pod`]), whose labels and ports are shared
//! between the pods that have the same ones.

use std::net::IpAddr;

use palisade_model::{Endpoint, EndpointId, Labels, NamedPort, Protocol};

/// An endpoint as the calculator reads it.
pub trait PodView {
    fn id(&self) -> &EndpointId;
    fn labels(&self) -> &Labels;
    /// Pod IPs, primary first.
    fn ips(&self) -> &[IpAddr];
    /// Declared container ports; `name` is empty for unnamed ones.
    fn ports(&self) -> &[NamedPort];

    /// The number of the container port named `name` with this protocol, if declared.
    fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports()
            .iter()
            .find(|p| !p.name.is_empty() && p.name == name && p.protocol == protocol)
            .map(|p| p.port)
    }
}

impl PodView for Endpoint {
    fn id(&self) -> &EndpointId {
        &self.id
    }
    fn labels(&self) -> &Labels {
        &self.labels
    }
    fn ips(&self) -> &[IpAddr] {
        &self.ips
    }
    fn ports(&self) -> &[NamedPort] {
        &self.ports
    }
}
