//! A small hand-built [`DesiredState`]: two local endpoints, one policy admitting TCP 80 from
//! the `web` set to endpoint `a`, and a second policy denying 10.9.0.0/16 except 10.9.1.0/24.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use palisade_calc::{
    ActivePolicy, CompiledRule, DesiredState, EndpointTiers, IpSet, IpSetId, IpSetKind,
    IpSetMember, LocalEndpoint, RulePeer, RulePort, TierPolicies,
};
use palisade_model::{Action, EndpointId, PolicyId, Protocol};

pub fn pid(ns: &str, name: &str) -> PolicyId {
    PolicyId {
        tier: "default".into(),
        namespace: Some(ns.into()),
        name: name.into(),
    }
}

pub fn net(s: &str) -> IpSetMember {
    IpSetMember::Net(s.parse().unwrap())
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn endpoint(
    ns: &str,
    name: &str,
    iface: &str,
    addr: &str,
    ingress: &[PolicyId],
) -> LocalEndpoint {
    LocalEndpoint {
        id: EndpointId::new(ns, name),
        iface: iface.into(),
        iface_aliases: vec![],
        ips: vec![ip(addr)],
        tiers: EndpointTiers {
            ingress: if ingress.is_empty() {
                vec![]
            } else {
                vec![TierPolicies {
                    tier: "default".into(),
                    policies: ingress.to_vec(),
                    default_action: Default::default(),
                }]
            },
            egress: vec![],
            ..Default::default()
        },
    }
}

pub fn allow_web() -> ActivePolicy {
    ActivePolicy {
        id: pid("ns1", "allow-web"),
        order: 1000,
        staged: false,
        ingress: Some(vec![CompiledRule {
            action: Action::Allow,
            peers: vec![RulePeer::Set(IpSetId("web".into()))],
            ports: vec![RulePort::Range {
                protocol: Protocol::Tcp,
                start: 80,
                end: 80,
            }],
        }]),
        egress: None,
    }
}

pub fn deny_block() -> ActivePolicy {
    ActivePolicy {
        id: pid("ns1", "deny-block"),
        order: 1000,
        staged: false,
        ingress: Some(vec![
            CompiledRule {
                action: Action::Deny,
                peers: vec![RulePeer::Cidr {
                    cidr: "10.9.0.0/16".parse().unwrap(),
                    except: vec!["10.9.1.0/24".parse().unwrap()],
                }],
                ports: vec![],
            },
            CompiledRule {
                action: Action::Allow,
                peers: vec![],
                ports: vec![RulePort::Protocol(Protocol::Udp)],
            },
        ]),
        egress: None,
    }
}

/// The base state: endpoints a (isolated by both policies) and b (open).
pub fn state() -> DesiredState {
    let web = IpSet {
        id: IpSetId("web".into()),
        kind: IpSetKind::Net,
        description: "app == 'web'".into(),
        members: [net("10.0.1.1/32"), net("10.0.1.2/32"), net("fd00::1:1/128")]
            .into_iter()
            .collect::<BTreeSet<_>>(),
    };
    let mut s = DesiredState {
        ip_sets: BTreeMap::from([(web.id.clone(), web)]),
        ..DesiredState::default()
    };
    for p in [allow_web(), deny_block()] {
        s.policies.insert(p.id.clone(), p);
    }
    let a = endpoint(
        "ns1",
        "a",
        "pala0000000001",
        "10.0.0.1",
        &[pid("ns1", "allow-web"), pid("ns1", "deny-block")],
    );
    let b = endpoint("ns1", "b", "pala0000000002", "10.0.0.2", &[]);
    s.endpoints.insert(a.id.clone(), a);
    s.endpoints.insert(b.id.clone(), b);
    s
}
