//! From a logged packet to an attributed drop: the key in its NFLOG prefix names the drop
//! site (rendered from the same [`DesiredState`] by `palisade_render::names::drop_key`), and
//! the packet's addresses name the pods (any pod of the cluster, local or remote, by the
//! address book the agent keeps from the datastore's endpoints).

use std::collections::HashMap;
use std::net::IpAddr;

use palisade_calc::DesiredState;
use palisade_model::{Action, Direction, Endpoint, EndpointId, PolicyId};
use palisade_render::names::{drop_key, DropSite};

use super::packet::PacketHeaders;
use super::record::{DropRecord, PolicyNames};

/// What a drop key stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropOrigin {
    /// The local endpoint whose chain dropped the packet.
    pub endpoint: EndpointId,
    pub direction: Direction,
    pub tier: String,
    /// The Deny rule's policy, or every policy of the tier that selected the endpoint.
    pub policies: Vec<PolicyId>,
    /// The Deny rule's index; `None` for the drop at the end of a tier (a default deny).
    pub rule: Option<usize>,
}

/// Drop key → origin, for every drop site of a node's [`DesiredState`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropIndex {
    sites: HashMap<String, DropOrigin>,
}

impl DropIndex {
    /// Every end-of-tier drop of every local endpoint and every Deny rule of every active
    /// policy (attributed to a local endpoint the policy is active on in that direction).
    pub fn of(state: &DesiredState) -> DropIndex {
        let mut sites = HashMap::new();
        for ep in state.endpoints.values() {
            for (direction, tiers) in [
                (Direction::Ingress, &ep.tiers.ingress),
                (Direction::Egress, &ep.tiers.egress),
            ] {
                for tier in tiers {
                    let key = drop_key(DropSite::EndOfTier {
                        direction,
                        endpoint: &ep.id,
                        tier: &tier.tier,
                    });
                    sites.insert(
                        key,
                        DropOrigin {
                            endpoint: ep.id.clone(),
                            direction,
                            tier: tier.tier.clone(),
                            policies: tier.policies.clone(),
                            rule: None,
                        },
                    );
                    for pid in &tier.policies {
                        let Some(p) = state.policies.get(pid) else {
                            continue;
                        };
                        let rules = match direction {
                            Direction::Ingress => p.ingress.as_deref(),
                            Direction::Egress => p.egress.as_deref(),
                        };
                        for (i, r) in rules.unwrap_or(&[]).iter().enumerate() {
                            if r.action != Action::Deny {
                                continue;
                            }
                            let key = drop_key(DropSite::DenyRule {
                                direction,
                                policy: pid,
                                rule: i,
                            });
                            // A policy chain is shared by its endpoints: the packet's own
                            // address picks the endpoint later ([`DropIndex::attribute`]).
                            sites.entry(key).or_insert_with(|| DropOrigin {
                                endpoint: ep.id.clone(),
                                direction,
                                tier: tier.tier.clone(),
                                policies: vec![pid.clone()],
                                rule: Some(i),
                            });
                        }
                    }
                }
            }
        }
        DropIndex { sites }
    }

    pub fn get(&self, key: &str) -> Option<&DropOrigin> {
        self.sites.get(key)
    }

    pub fn len(&self) -> usize {
        self.sites.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sites.is_empty()
    }
}

/// Every pod's addresses (local and remote), kept current from the datastore's endpoints.
#[derive(Debug, Clone, Default)]
pub struct AddressBook {
    by_ip: HashMap<IpAddr, EndpointId>,
    by_id: HashMap<EndpointId, Vec<IpAddr>>,
}

impl AddressBook {
    pub fn upsert(&mut self, ep: &Endpoint) {
        self.remove(&ep.id);
        for ip in &ep.ips {
            self.by_ip.insert(*ip, ep.id.clone());
        }
        self.by_id.insert(ep.id.clone(), ep.ips.clone());
    }

    pub fn remove(&mut self, id: &EndpointId) {
        for ip in self.by_id.remove(id).unwrap_or_default() {
            if self.by_ip.get(&ip) == Some(id) {
                self.by_ip.remove(&ip);
            }
        }
    }

    pub fn get(&self, ip: &IpAddr) -> Option<&EndpointId> {
        self.by_ip.get(ip)
    }

    /// `NAMESPACE/POD` of the pod with this address, else the address.
    pub fn name(&self, ip: &IpAddr) -> String {
        match self.get(ip) {
            Some(id) => id.to_string(),
            None => ip.to_string(),
        }
    }
}

/// The record of one dropped packet: `None` when the key is not one of this node's drop
/// sites (a log of a program older than the index, or another program's prefix).
pub fn attribute(
    index: &DropIndex,
    book: &AddressBook,
    node: &str,
    time: String,
    key: &str,
    packet: &PacketHeaders,
) -> Option<DropRecord> {
    let origin = index.get(key)?;
    // The side that dropped it: ingress at the receiver, egress at the sender.
    let own_ip = match origin.direction {
        Direction::Ingress => packet.dst,
        Direction::Egress => packet.src,
    };
    let endpoint = book
        .get(&own_ip)
        .cloned()
        .unwrap_or_else(|| origin.endpoint.clone());
    let policy = match origin.rule {
        Some(_) => PolicyNames::One(origin.policies.first().map(|p| p.to_string())?),
        None => PolicyNames::Many(origin.policies.iter().map(|p| p.to_string()).collect()),
    };
    Some(DropRecord {
        time,
        node: node.to_string(),
        from: book.name(&packet.src),
        to: book.name(&packet.dst),
        protocol: packet.protocol_name(),
        port: packet.port,
        direction: origin.direction.to_string(),
        tier: origin.tier.clone(),
        policy,
        rule: origin.rule,
        endpoint: endpoint.to_string(),
    })
}
