//! What an IP set stands for ([`SetDef`]), its stable id, and which members an endpoint
//! contributes to it.
//!
//! Ids are `s:` (selector sets) or `np:` (named-port sets) followed by the first 12 hex
//! digits of a SHA-256 of the set's canonical text: at most 15 characters, so a renderer can
//! prefix them (`pal4-`, …) and stay within the 31 characters ipset allows. Identical peers
//! therefore share a set, and names survive restarts. Two different peers could collide only
//! with probability about n²/2⁴⁹ for n sets.

use std::net::IpAddr;

use ipnet::IpNet;
use palisade_model::{EndpointPeer, Labels, NamespaceMatch, Node, Protocol, Selector};
use sha2::{Digest, Sha256};

use crate::pod::PodView;
use crate::state::{IpSetId, IpSetKind, IpSetMember};

/// The meaning of an IP set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetDef {
    /// Addresses of every endpoint in the cluster matching the peer.
    Peer(EndpointPeer),
    /// `(address, protocol, port)` of every endpoint declaring a container port with this
    /// name and protocol.
    NamedPort { name: String, protocol: Protocol },
    /// The addresses of every node whose labels match (ClusterNetworkPolicy `nodes` peers);
    /// no endpoint is a member.
    Nodes(Selector),
}

impl SetDef {
    /// The set's stable id.
    pub fn id(&self) -> IpSetId {
        match self {
            SetDef::Peer(peer) => peer_set_id(peer),
            SetDef::NamedPort { name, protocol } => named_port_set_id(name, *protocol),
            SetDef::Nodes(sel) => IpSetId(format!("nd:{}", short_hash(&format!("nodes {sel}")))),
        }
    }

    pub fn kind(&self) -> IpSetKind {
        match self {
            SetDef::Peer(_) | SetDef::Nodes(_) => IpSetKind::Net,
            SetDef::NamedPort { .. } => IpSetKind::NetPort,
        }
    }

    /// Human-readable meaning, for `IpSet::description`.
    pub fn description(&self) -> String {
        match self {
            SetDef::Peer(peer) => peer_text(peer),
            SetDef::NamedPort { name, protocol } => format!("named port {name}/{protocol}"),
            SetDef::Nodes(sel) => format!("nodes {sel}"),
        }
    }

    /// Whether the endpoint belongs to the set, given its namespace's labels.
    pub fn matches<E: PodView + ?Sized>(&self, endpoint: &E, namespace_labels: &Labels) -> bool {
        match self {
            SetDef::Peer(peer) => peer_matches(peer, endpoint, namespace_labels),
            SetDef::NamedPort { name, protocol } => endpoint.named_port(name, *protocol).is_some(),
            SetDef::Nodes(_) => false,
        }
    }

    /// The members an endpoint contributes when it belongs to the set (sorted, each once).
    pub fn members<E: PodView + ?Sized>(&self, endpoint: &E) -> Vec<IpSetMember> {
        let mut members = match self {
            SetDef::Nodes(_) => Vec::new(),
            SetDef::Peer(_) => net_members(endpoint.ips()),
            SetDef::NamedPort { name, protocol } => match endpoint.named_port(name, *protocol) {
                Some(port) => endpoint
                    .ips()
                    .iter()
                    .map(|&ip| IpSetMember::NetPort {
                        ip,
                        protocol: *protocol,
                        port,
                    })
                    .collect(),
                None => Vec::new(),
            },
        };
        members.sort();
        members.dedup();
        members
    }
}

impl SetDef {
    /// Calls `f` once for each member [`SetDef::members`] returns, in no particular order and
    /// without allocating (filling a new set calls it for every endpoint in it).
    pub fn for_each_member<E: PodView + ?Sized>(
        &self,
        endpoint: &E,
        mut f: impl FnMut(IpSetMember),
    ) {
        let port = match self {
            SetDef::Nodes(_) => return,
            SetDef::Peer(_) => None,
            SetDef::NamedPort { name, protocol } => match endpoint.named_port(name, *protocol) {
                Some(port) => Some((*protocol, port)),
                None => return,
            },
        };
        let ips = endpoint.ips();
        for (i, &ip) in ips.iter().enumerate() {
            if ips[..i].contains(&ip) {
                continue;
            }
            f(match port {
                None => IpSetMember::Net(IpNet::from(ip)),
                Some((protocol, port)) => IpSetMember::NetPort { ip, protocol, port },
            });
        }
    }
}

/// The members of a nodes set: every address of every node whose labels match, as host
/// networks, sorted, each once.
pub fn node_members<'a>(
    selector: &Selector,
    nodes: impl IntoIterator<Item = &'a Node>,
) -> Vec<IpSetMember> {
    let mut out: Vec<IpSetMember> = nodes
        .into_iter()
        .filter(|n| selector.matches(&n.labels))
        .flat_map(|n| net_members(&n.addresses))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether an endpoint matches a rule peer: its namespace is the named one or has matching
/// labels, and its own labels match the pod selector.
pub fn peer_matches<E: PodView + ?Sized>(
    peer: &EndpointPeer,
    endpoint: &E,
    namespace_labels: &Labels,
) -> bool {
    let in_namespace = match &peer.namespaces {
        NamespaceMatch::Name(ns) => *ns == endpoint.id().namespace,
        NamespaceMatch::Selector(sel) => sel.matches(namespace_labels),
    };
    in_namespace && peer.pods.matches(endpoint.labels())
}

/// Each address as a host network (`/32` or `/128`).
pub fn net_members(ips: &[IpAddr]) -> Vec<IpSetMember> {
    ips.iter()
        .map(|&ip| IpSetMember::Net(IpNet::from(ip)))
        .collect()
}

/// The id of the set holding the addresses of the endpoints a peer matches.
pub fn peer_set_id(peer: &EndpointPeer) -> IpSetId {
    IpSetId(format!("s:{}", short_hash(&peer_text(peer))))
}

/// The id of the set holding every endpoint's `(address, protocol, port)` for a named port.
pub fn named_port_set_id(name: &str, protocol: Protocol) -> IpSetId {
    IpSetId(format!("np:{}", short_hash(&format!("{name}/{protocol}"))))
}

/// Canonical text of a peer: the namespace name is quoted with Rust escapes, selectors print
/// in their canonical form.
fn peer_text(peer: &EndpointPeer) -> String {
    match &peer.namespaces {
        NamespaceMatch::Name(ns) => format!("namespace {ns:?}; pods {}", peer.pods),
        NamespaceMatch::Selector(sel) => format!("namespaces {sel}; pods {}", peer.pods),
    }
}

fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_model::{Endpoint, EndpointId, NamedPort, Selector};

    fn peer(ns: &str, sel: &str) -> EndpointPeer {
        EndpointPeer {
            namespaces: NamespaceMatch::Name(ns.into()),
            pods: Selector::parse(sel).unwrap(),
        }
    }

    #[test]
    fn ids_are_stable_short_and_distinct() {
        let a = peer_set_id(&peer("prod", "app == \"web\""));
        assert_eq!(a, peer_set_id(&peer("prod", "app == \"web\"")));
        assert_ne!(a, peer_set_id(&peer("prod", "app == \"db\"")));
        assert_ne!(a, peer_set_id(&peer("dev", "app == \"web\"")));
        let by_selector = EndpointPeer {
            namespaces: NamespaceMatch::Selector(Selector::All),
            pods: Selector::All,
        };
        assert_ne!(peer_set_id(&by_selector), peer_set_id(&peer("x", "all()")));
        assert!(a.0.starts_with("s:") && a.0.len() == 14, "{a:?}");
        let np = named_port_set_id("http", Protocol::Tcp);
        assert!(np.0.starts_with("np:") && np.0.len() <= 20, "{np:?}");
        assert_ne!(np, named_port_set_id("http", Protocol::Udp));
    }

    #[test]
    fn members_per_kind() {
        let ep = Endpoint {
            id: EndpointId::new("prod", "web-1"),
            node: None,
            labels: Labels::new(),
            ips: vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
            ports: vec![NamedPort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 8080,
            }],
        };
        let each = |def: &SetDef, ep: &Endpoint| {
            let mut v = Vec::new();
            def.for_each_member(ep, |m| v.push(m));
            v.sort();
            v
        };
        let mut twice = ep.clone();
        twice.ips.push(ep.ips[0]);
        for def in [
            SetDef::Peer(peer("prod", "all()")),
            SetDef::NamedPort {
                name: "http".into(),
                protocol: Protocol::Tcp,
            },
            SetDef::NamedPort {
                name: "http".into(),
                protocol: Protocol::Udp,
            },
        ] {
            assert_eq!(each(&def, &ep), def.members(&ep));
            assert_eq!(each(&def, &twice), def.members(&twice));
        }
        let net = SetDef::Peer(peer("prod", "all()")).members(&ep);
        assert_eq!(
            net,
            vec![
                IpSetMember::Net("10.0.0.1/32".parse().unwrap()),
                IpSetMember::Net("fd00::1/128".parse().unwrap())
            ]
        );
        let np = SetDef::NamedPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
        };
        assert!(np.matches(&ep, &Labels::new()));
        assert_eq!(np.members(&ep).len(), 2);
        let udp = SetDef::NamedPort {
            name: "http".into(),
            protocol: Protocol::Udp,
        };
        assert!(!udp.matches(&ep, &Labels::new()));
        assert!(udp.members(&ep).is_empty());
    }
}
