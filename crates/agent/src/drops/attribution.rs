//! From a logged packet to an attributed drop: the key in its NFLOG prefix names the drop
//! site (rendered from the same [`DesiredState`] by `palisade_render::names::drop_key`), and
//! the packet's addresses name the pods (any pod of the cluster, local or remote, by the
//! address book the agent keeps from the datastore's endpoints).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

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
    /// What the log says about staged policies.
    pub staged: StagedKind,
}

/// A drop site of the enforced policies, or one of the staged evaluation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StagedKind {
    /// A drop (the staged policies, if any, would have dropped it too).
    #[default]
    No,
    /// Passed, but the staged policies would have dropped it.
    WouldDrop,
    /// Dropped at the end of a tier, but the staged policies would have let it through.
    WouldAllow,
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
                    // A tier that ends with Pass (ClusterNetworkPolicy) drops nothing at its
                    // end (only Deny rules can drop in it), so it has no end-of-tier site and
                    // no staged-allow site either.
                    if tier.default_action != palisade_model::TierAction::Pass {
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
                                staged: StagedKind::No,
                            },
                        );
                        if ep.tiers.staged(direction).is_some() {
                            let key = drop_key(DropSite::StagedAllow {
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
                                    staged: StagedKind::WouldAllow,
                                },
                            );
                        }
                    }
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
                                staged: StagedKind::No,
                            });
                        }
                    }
                }
            }
        }
        for ep in state.endpoints.values() {
            for direction in [Direction::Ingress, Direction::Egress] {
                if let Some(origin) = would_drop_origin(state, ep, direction) {
                    let key = drop_key(DropSite::StagedDrop {
                        direction,
                        endpoint: &ep.id,
                    });
                    sites.insert(key, origin);
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

/// The would-drop site of `ep` in `direction`, when staged policies select it there: named
/// after the staged policies of its staged tiers (the first one's tier).
fn would_drop_origin(
    state: &DesiredState,
    ep: &palisade_calc::LocalEndpoint,
    direction: Direction,
) -> Option<DropOrigin> {
    let tiers = ep.tiers.staged(direction)?;
    let staged: Vec<(&str, &PolicyId)> = tiers
        .iter()
        .flat_map(|t| t.policies.iter().map(move |p| (t.tier.as_str(), p)))
        .filter(|(_, p)| state.policies.get(*p).is_some_and(|a| a.staged))
        .collect();
    Some(DropOrigin {
        endpoint: ep.id.clone(),
        direction,
        tier: staged.first().map(|(t, _)| t.to_string())?,
        policies: staged.iter().map(|(_, p)| (*p).clone()).collect(),
        rule: None,
        staged: StagedKind::WouldDrop,
    })
}

/// Every pod's addresses (local and remote), kept current from the datastore's endpoints.
///
/// An agent holds one entry per pod of the cluster here, so each pod's `namespace/name` is
/// one shared string (not an id per address and per pod) and its addresses a boxed slice.
#[derive(Debug, Clone, Default)]
pub struct AddressBook {
    by_ip: HashMap<IpAddr, Arc<str>>,
    by_name: HashMap<Arc<str>, Box<[IpAddr]>>,
}

/// `namespace/name`, as the book names a pod.
fn pod_name(id: &EndpointId) -> String {
    format!("{}/{}", id.namespace, id.name)
}

impl AddressBook {
    pub fn upsert(&mut self, ep: &Endpoint) {
        let name: Arc<str> = pod_name(&ep.id).into();
        self.remove_name(&name);
        for ip in &ep.ips {
            self.by_ip.insert(*ip, name.clone());
        }
        self.by_name.insert(name, ep.ips.clone().into_boxed_slice());
    }

    pub fn remove(&mut self, id: &EndpointId) {
        self.remove_name(&pod_name(id));
    }

    fn remove_name(&mut self, name: &str) {
        for ip in self.by_name.remove(name).unwrap_or_default() {
            if self.by_ip.get(&ip).is_some_and(|n| **n == *name) {
                self.by_ip.remove(&ip);
            }
        }
    }

    /// `NAMESPACE/POD` of the pod with this address.
    pub fn get(&self, ip: &IpAddr) -> Option<&str> {
        self.by_ip.get(ip).map(|n| &**n)
    }

    /// `NAMESPACE/POD` of the pod with this address, else the address.
    pub fn name(&self, ip: &IpAddr) -> String {
        match self.get(ip) {
            Some(name) => name.to_string(),
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
    let endpoint = match book.get(&own_ip) {
        Some(name) => name.to_string(),
        None => origin.endpoint.to_string(),
    };
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
        endpoint,
        staged: origin.staged == StagedKind::WouldDrop,
        staged_allow: origin.staged == StagedKind::WouldAllow,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_calc::{compute_full, CalcConfig};
    use palisade_model::{Cluster, Namespace, PortMatch, PortSpec, Protocol, Rule, Selector};
    use palisade_render::ir::Action as IrAction;
    use palisade_render::{build, names, RenderConfig};

    fn ep(ns: &str, name: &str, node: &str, ip: &str) -> Endpoint {
        Endpoint {
            id: EndpointId::new(ns, name),
            node: Some(node.into()),
            labels: [("app".to_string(), name.to_string())].into(),
            ips: vec![ip.parse().unwrap()],
            ports: vec![],
        }
    }

    fn pid(tier: &str, ns: Option<&str>, name: &str) -> PolicyId {
        PolicyId {
            tier: tier.into(),
            namespace: ns.map(str::to_string),
            name: name.into(),
        }
    }

    /// `shop/web` on n1 (10.0.0.1) with a deny-all ingress policy in the default tier and an
    /// admin-tier policy whose egress rule 1 denies DNS; `bob/client` on n2 (10.0.1.1).
    fn state() -> DesiredState {
        let mut c = Cluster::new();
        for ns in ["shop", "bob"] {
            c.namespaces.insert(
                ns.into(),
                Namespace {
                    name: ns.into(),
                    labels: Default::default(),
                },
            );
        }
        c.endpoints = vec![
            ep("bob", "client", "n2", "10.0.1.1"),
            ep("shop", "web", "n1", "10.0.0.1"),
        ];
        let web = Selector::parse("app == \"web\"").unwrap();
        c.policies = vec![
            palisade_model::Policy {
                id: pid("default", Some("shop"), "web-deny-all"),
                order: 1000,
                selector: web.clone(),
                namespace_selector: Selector::All,
                staged: false,
                ingress: Some(vec![]),
                egress: None,
            },
            palisade_model::Policy {
                id: pid("admin", None, "no-dns"),
                order: 10,
                selector: web,
                namespace_selector: Selector::All,
                staged: false,
                ingress: None,
                egress: Some(vec![
                    Rule {
                        action: Action::Pass,
                        peers: vec![],
                        ports: vec![PortSpec {
                            protocol: Protocol::Tcp,
                            port: PortMatch::Any,
                        }],
                    },
                    Rule {
                        action: Action::Deny,
                        peers: vec![],
                        ports: vec![PortSpec {
                            protocol: Protocol::Udp,
                            port: PortMatch::Range { start: 53, end: 53 },
                        }],
                    },
                ]),
            },
        ];
        compute_full(&CalcConfig::new("n1"), &c)
    }

    fn headers(src: &str, dst: &str, protocol: u8, port: Option<u16>) -> PacketHeaders {
        PacketHeaders {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol,
            port,
        }
    }

    fn book(state: &DesiredState) -> AddressBook {
        let mut b = AddressBook::default();
        b.upsert(&ep("bob", "client", "n2", "10.0.1.1"));
        for e in state.endpoints.values() {
            b.upsert(&Endpoint {
                id: e.id.clone(),
                node: Some("n1".into()),
                labels: Default::default(),
                ips: e.ips.clone(),
                ports: vec![],
            });
        }
        b
    }

    /// Every drop prefix the renderer writes has its key in the index, and only those.
    #[test]
    fn every_rendered_drop_key_is_indexed() {
        let s = state();
        let cfg = RenderConfig {
            drop_log_group: Some(2),
            ..RenderConfig::default()
        };
        let rs = build(&s, &cfg).unwrap();
        let index = DropIndex::of(&s);
        let mut keys = Vec::new();
        for chain in &rs.chains {
            for r in &chain.rules {
                if let IrAction::Log { prefix, group: 2 } = &r.action {
                    keys.push(names::drop_key_of_prefix(prefix).unwrap().to_string());
                }
            }
        }
        keys.sort();
        keys.dedup();
        // web: the end of the ingress default tier; no-dns rule 1 (the admin tier ends with
        // Pass: nothing is dropped at its end).
        assert_eq!(keys.len(), 2, "{keys:?}");
        assert_eq!(index.len(), 2);
        for k in &keys {
            assert!(index.get(k).is_some(), "{k} not indexed");
        }
    }

    #[test]
    fn a_default_deny_names_the_selecting_policies_and_no_rule() {
        let s = state();
        let key = drop_key(DropSite::EndOfTier {
            direction: Direction::Ingress,
            endpoint: &EndpointId::new("shop", "web"),
            tier: "default",
        });
        let r = attribute(
            &DropIndex::of(&s),
            &book(&s),
            "n1",
            "t".into(),
            &key,
            &headers("10.0.1.1", "10.0.0.1", 6, Some(80)),
        )
        .unwrap();
        assert_eq!((r.from.as_str(), r.to.as_str()), ("bob/client", "shop/web"));
        assert_eq!((r.protocol.as_str(), r.port), ("TCP", Some(80)));
        assert_eq!(
            (r.direction.as_str(), r.tier.as_str()),
            ("ingress", "default")
        );
        assert_eq!(
            r.policy,
            PolicyNames::Many(vec!["shop/web-deny-all".into()])
        );
        assert_eq!((r.rule, r.endpoint.as_str()), (None, "shop/web"));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["rule"], serde_json::Value::Null);
    }

    #[test]
    fn a_deny_rule_is_named_with_its_index() {
        let s = state();
        let key = drop_key(DropSite::DenyRule {
            direction: Direction::Egress,
            policy: &pid("admin", None, "no-dns"),
            rule: 1,
        });
        let r = attribute(
            &DropIndex::of(&s),
            &book(&s),
            "n1",
            "t".into(),
            &key,
            &headers("10.0.0.1", "192.0.2.53", 17, Some(53)),
        )
        .unwrap();
        assert_eq!((r.from.as_str(), r.to.as_str()), ("shop/web", "192.0.2.53"));
        assert_eq!((r.direction.as_str(), r.tier.as_str()), ("egress", "admin"));
        assert_eq!(r.policy, PolicyNames::One("admin:no-dns".into()));
        assert_eq!(r.rule, Some(1));
        assert_eq!(serde_json::to_value(&r).unwrap()["policy"], "admin:no-dns");
    }

    /// [`state`] with `shop/web-deny-all` staged and a staged `shop/web-allow-client` (which
    /// alone would not isolate web, but with web-deny-all enforced would let the client in).
    fn staged_state(deny_all_staged: bool) -> DesiredState {
        let mut c = Cluster::new();
        for ns in ["shop", "bob"] {
            c.namespaces.insert(
                ns.into(),
                Namespace {
                    name: ns.into(),
                    labels: Default::default(),
                },
            );
        }
        c.endpoints = vec![
            ep("bob", "client", "n2", "10.0.1.1"),
            ep("shop", "web", "n1", "10.0.0.1"),
        ];
        let web = Selector::parse("app == \"web\"").unwrap();
        let mut deny_all = palisade_model::Policy {
            id: pid("default", Some("shop"), "web-deny-all"),
            order: 1000,
            selector: web.clone(),
            namespace_selector: Selector::All,
            staged: deny_all_staged,
            ingress: Some(vec![]),
            egress: None,
        };
        c.policies.push(deny_all.clone());
        if !deny_all_staged {
            deny_all.id.name = "web-allow-all".into();
            deny_all.staged = true;
            deny_all.ingress = Some(vec![Rule {
                action: Action::Allow,
                peers: vec![],
                ports: vec![],
            }]);
            c.policies.push(deny_all);
        }
        compute_full(&CalcConfig::new("n1"), &c)
    }

    #[test]
    fn staged_keys_are_indexed_and_attributed_as_staged() {
        for deny_all_staged in [true, false] {
            let s = staged_state(deny_all_staged);
            let cfg = RenderConfig {
                drop_log_group: Some(2),
                ..RenderConfig::default()
            };
            let rs = build(&s, &cfg).unwrap();
            let index = DropIndex::of(&s);
            for chain in &rs.chains {
                for r in &chain.rules {
                    if let IrAction::Log { prefix, group: 2 } = &r.action {
                        let key = names::drop_key_of_prefix(prefix).unwrap();
                        assert!(index.get(key).is_some(), "{prefix} not indexed");
                    }
                }
            }
        }
        let web = EndpointId::new("shop", "web");
        let s = staged_state(true);
        let key = drop_key(DropSite::StagedDrop {
            direction: Direction::Ingress,
            endpoint: &web,
        });
        let h = headers("10.0.1.1", "10.0.0.1", 6, Some(80));
        let r = attribute(&DropIndex::of(&s), &book(&s), "n1", "t".into(), &key, &h).unwrap();
        assert!(r.staged && !r.staged_allow);
        assert_eq!(
            r.policy,
            PolicyNames::Many(vec!["shop/web-deny-all".into()])
        );
        assert_eq!(
            (r.tier.as_str(), r.endpoint.as_str()),
            ("default", "shop/web")
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["staged"], true);
        assert!(v.get("staged_allow").is_none());

        let s = staged_state(false);
        let key = drop_key(DropSite::StagedAllow {
            direction: Direction::Ingress,
            endpoint: &web,
            tier: "default",
        });
        let r = attribute(&DropIndex::of(&s), &book(&s), "n1", "t".into(), &key, &h).unwrap();
        assert!(r.staged_allow && !r.staged);
        assert_eq!(
            r.policy,
            PolicyNames::Many(vec!["shop/web-deny-all".into()])
        );
        assert_eq!(serde_json::to_value(&r).unwrap()["staged_allow"], true);
    }

    #[test]
    fn unknown_keys_are_not_attributed_and_moved_pods_are_forgotten() {
        let s = state();
        let index = DropIndex::of(&s);
        let mut b = book(&s);
        let h = headers("10.0.1.1", "10.0.0.1", 1, None);
        assert!(attribute(&index, &b, "n1", "t".into(), "0000000000000000", &h).is_none());
        b.upsert(&ep("bob", "client", "n2", "10.0.1.9"));
        assert_eq!(b.name(&"10.0.1.1".parse().unwrap()), "10.0.1.1");
        assert_eq!(b.name(&"10.0.1.9".parse().unwrap()), "bob/client");
        b.remove(&EndpointId::new("bob", "client"));
        assert_eq!(b.get(&"10.0.1.9".parse().unwrap()), None);
    }
}
