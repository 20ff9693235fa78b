//! Behaviour of the incremental calculator, one scenario per test. Every step also goes
//! through the [`common::Harness`] checks (incremental == compute_full, deltas replay legally).

mod common;

use common::*;
use palisade_calc::{
    compute_full, named_port_set_id, peer_set_id, CalcConfig, Delta, IpSetMember, RulePeer,
    RulePort, TierPolicies, Update,
};
use palisade_model::{
    Action, EndpointPeer, NamespaceMatch, Peer, Policy, PolicyId, Protocol, Rule, Selector, Tier,
    TierAction,
};

fn set_of(ns: &str, pods: &str) -> palisade_calc::IpSetId {
    peer_set_id(&EndpointPeer {
        namespaces: NamespaceMatch::Name(ns.into()),
        pods: sel(pods),
    })
}

fn net(ip: &str) -> IpSetMember {
    IpSetMember::Net(ip.parse().unwrap())
}

fn fe_policy(name: &str) -> Policy {
    policy(
        "a",
        name,
        "app == \"web\"",
        Some(vec![allow_from(
            vec![pods_in("a", "role == \"fe\"")],
            vec![],
        )]),
    )
}

/// a/web on this node, a/fe elsewhere, and a policy letting fe into web.
fn basic() -> Harness {
    let mut h = Harness::new();
    h.apply_all(vec![
        Update::NamespaceUpsert(namespace("a", &[])),
        Update::EndpointUpsert(endpoint("a/web", NODE, &[("app", "web")], "10.0.0.1")),
        Update::EndpointUpsert(endpoint("a/fe", "n2", &[("role", "fe")], "10.0.1.1")),
        Update::PolicyUpsert(fe_policy("allow-fe")),
    ]);
    h
}

#[test]
fn label_change_moves_a_pod_in_and_out_of_a_set() {
    let mut h = basic();
    let s = set_of("a", "role == \"fe\"");
    assert_eq!(
        h.calc.state().ip_sets[&s].members,
        [net("10.0.1.1/32")].into_iter().collect()
    );
    let d = h.apply(Update::EndpointUpsert(endpoint(
        "a/fe",
        "n2",
        &[("role", "be")],
        "10.0.1.1",
    )));
    assert_eq!(
        d,
        vec![Delta::SetMemberRemoved {
            id: s.clone(),
            member: net("10.0.1.1/32")
        }]
    );
    assert!(h.calc.state().ip_sets[&s].members.is_empty());
    let d = h.apply(Update::EndpointUpsert(endpoint(
        "a/fe",
        "n2",
        &[("role", "fe")],
        "10.0.1.1",
    )));
    assert_eq!(
        d,
        vec![Delta::SetMemberAdded {
            id: s.clone(),
            member: net("10.0.1.1/32")
        }]
    );
    // A pod no set cares about changes nothing.
    let d = h.apply(Update::EndpointUpsert(endpoint(
        "a/other",
        "n3",
        &[("x", "y")],
        "10.0.9.9",
    )));
    assert_eq!(d, vec![]);
    // Its address changing moves the member.
    let d = h.apply(Update::EndpointUpsert(endpoint(
        "a/fe",
        "n2",
        &[("role", "fe")],
        "fd00::7",
    )));
    assert_eq!(
        d,
        vec![
            Delta::SetMemberRemoved {
                id: s.clone(),
                member: net("10.0.1.1/32")
            },
            Delta::SetMemberAdded {
                id: s,
                member: net("fd00::7/128")
            },
        ]
    );
}

#[test]
fn named_ports_collect_every_declaring_endpoint() {
    let mut h = Harness::new();
    let web = with_port(
        endpoint("a/web", NODE, &[("app", "web")], "10.0.0.1"),
        "http",
        Protocol::Tcp,
        80,
    );
    let x = with_port(
        endpoint("b/x", "n2", &[], "10.0.2.1"),
        "http",
        Protocol::Tcp,
        8080,
    );
    let y = with_port(
        endpoint("b/y", "n2", &[], "10.0.2.2"),
        "http",
        Protocol::Udp,
        53,
    );
    h.apply_all(vec![
        Update::EndpointUpsert(web),
        Update::EndpointUpsert(x.clone()),
        Update::EndpointUpsert(y),
    ]);
    let p = policy(
        "a",
        "http",
        "app == \"web\"",
        Some(vec![allow_from(vec![], vec![named("http", Protocol::Tcp)])]),
    );
    h.apply(Update::PolicyUpsert(p));
    let np = named_port_set_id("http", Protocol::Tcp);
    let state = h.calc.state();
    let member = |ip: &str, port| IpSetMember::NetPort {
        ip: ip.parse().unwrap(),
        protocol: Protocol::Tcp,
        port,
    };
    assert_eq!(
        state.ip_sets[&np].members,
        [member("10.0.0.1", 80), member("10.0.2.1", 8080)]
            .into_iter()
            .collect()
    );
    let rule = &state.policies[&pid("a", "http")].ingress.as_ref().unwrap()[0];
    assert_eq!(
        rule.ports,
        vec![RulePort::Named {
            protocol: Protocol::Tcp,
            name: "http".into(),
            set: np.clone()
        }]
    );
    let mut x2 = x;
    x2.ports[0].port = 9090;
    let d = h.apply(Update::EndpointUpsert(x2));
    assert_eq!(
        d,
        vec![
            Delta::SetMemberRemoved {
                id: np.clone(),
                member: member("10.0.2.1", 8080)
            },
            Delta::SetMemberAdded {
                id: np.clone(),
                member: member("10.0.2.1", 9090)
            },
        ]
    );
    let d = h.apply(Update::EndpointRemove(eid("b/x")));
    assert_eq!(
        d,
        vec![Delta::SetMemberRemoved {
            id: np,
            member: member("10.0.2.1", 9090)
        }]
    );
}

#[test]
fn namespace_label_change_reevaluates_dependent_sets_and_policies() {
    let mut h = Harness::new();
    h.apply_all(vec![
        Update::NamespaceUpsert(namespace("a", &[])),
        Update::NamespaceUpsert(namespace("b", &[])),
        Update::EndpointUpsert(endpoint("a/web", NODE, &[("app", "web")], "10.0.0.1")),
        Update::EndpointUpsert(endpoint("b/one", "n2", &[], "10.0.2.1")),
        Update::EndpointUpsert(endpoint("c/two", "n2", &[], "10.0.3.1")),
        Update::PolicyUpsert(policy(
            "a",
            "team-x",
            "app == \"web\"",
            Some(vec![allow_from(
                vec![pods_where("team == \"x\"", "all()")],
                vec![],
            )]),
        )),
    ]);
    let s = peer_set_id(&EndpointPeer {
        namespaces: NamespaceMatch::Selector(sel("team == \"x\"")),
        pods: Selector::All,
    });
    assert!(h.calc.state().ip_sets[&s].members.is_empty());
    let d = h.apply(Update::NamespaceUpsert(namespace("b", &[("team", "x")])));
    assert_eq!(
        d,
        vec![Delta::SetMemberAdded {
            id: s.clone(),
            member: net("10.0.2.1/32")
        }]
    );
    // Removing the namespace object leaves only its implicit name label.
    let d = h.apply(Update::NamespaceRemove("b".into()));
    assert_eq!(
        d,
        vec![Delta::SetMemberRemoved {
            id: s.clone(),
            member: net("10.0.2.1/32")
        }]
    );

    // A cluster-wide policy picks endpoints by their namespace's labels.
    let global = Policy {
        id: PolicyId {
            tier: "admin".into(),
            namespace: None,
            name: "prod-only".into(),
        },
        order: 10,
        selector: Selector::All,
        namespace_selector: sel("env == \"prod\""),
        staged: false,
        ingress: Some(vec![]),
        egress: None,
    };
    let d = h.apply(Update::PolicyUpsert(global.clone()));
    assert_eq!(d, vec![], "no local endpoint is in a prod namespace yet");
    let d = h.apply(Update::NamespaceUpsert(namespace("a", &[("env", "prod")])));
    assert_eq!(
        d,
        vec![
            Delta::PolicyChanged {
                id: global.id.clone()
            },
            Delta::EndpointChanged { id: eid("a/web") },
        ]
    );
    let tiers = &h.calc.state().endpoints[&eid("a/web")].tiers;
    assert_eq!(
        tiers.ingress,
        vec![
            TierPolicies {
                tier: "admin".into(),
                policies: vec![global.id.clone()],
                default_action: TierAction::Pass,
            },
            TierPolicies {
                tier: "default".into(),
                policies: vec![pid("a", "team-x")],
                default_action: TierAction::Deny,
            },
        ]
    );
    let d = h.apply(Update::NamespaceUpsert(namespace("a", &[])));
    assert_eq!(
        d,
        vec![
            Delta::EndpointChanged { id: eid("a/web") },
            Delta::PolicyRemoved { id: global.id },
        ]
    );
}

#[test]
fn policy_add_and_remove_emit_dependency_ordered_deltas() {
    let mut h = Harness::new();
    h.apply_all(vec![
        Update::EndpointUpsert(endpoint("a/web", NODE, &[("app", "web")], "10.0.0.1")),
        Update::EndpointUpsert(endpoint("a/fe", "n2", &[("role", "fe")], "10.0.1.1")),
    ]);
    let s = set_of("a", "role == \"fe\"");
    let p = pid("a", "allow-fe");
    let d = h.apply(Update::PolicyUpsert(fe_policy("allow-fe")));
    assert_eq!(
        d,
        vec![
            Delta::SetCreated {
                id: s.clone(),
                kind: palisade_calc::IpSetKind::Net
            },
            Delta::SetMemberAdded {
                id: s.clone(),
                member: net("10.0.1.1/32")
            },
            Delta::PolicyChanged { id: p.clone() },
            Delta::EndpointChanged { id: eid("a/web") },
        ]
    );
    let rule = &h.calc.state().policies[&p].ingress.as_ref().unwrap()[0];
    assert_eq!(rule.peers, vec![RulePeer::Set(s.clone())]);
    // Same policy again: nothing to do.
    assert_eq!(h.apply(Update::PolicyUpsert(fe_policy("allow-fe"))), vec![]);
    let d = h.apply(Update::PolicyRemove(p.clone()));
    assert_eq!(
        d,
        vec![
            Delta::EndpointChanged { id: eid("a/web") },
            Delta::PolicyRemoved { id: p },
            Delta::SetRemoved { id: s },
        ]
    );
    let web = &h.calc.state().endpoints[&eid("a/web")];
    assert!(web.tiers.ingress.is_empty() && web.tiers.egress.is_empty());
    assert!(h.calc.state().ip_sets.is_empty());
}

#[test]
fn policy_that_selects_no_local_endpoint_is_not_active() {
    let mut h = basic();
    let before = h.calc.state().clone();
    let d = h.apply(Update::PolicyUpsert(policy(
        "b",
        "elsewhere",
        "all()",
        Some(vec![allow_from(vec![pods_in("b", "x == \"1\"")], vec![])]),
    )));
    assert_eq!(d, vec![]);
    assert_eq!(*h.calc.state(), before);
}

#[test]
fn endpoint_moving_to_another_node() {
    let mut h = basic();
    // A second local pod whose policy's set contains a/web.
    h.apply_all(vec![
        Update::EndpointUpsert(endpoint("a/db", NODE, &[("app", "db")], "10.0.0.2")),
        Update::PolicyUpsert(policy(
            "a",
            "web-to-db",
            "app == \"db\"",
            Some(vec![allow_from(
                vec![pods_in("a", "app == \"web\"")],
                vec![],
            )]),
        )),
    ]);
    let web_set = set_of("a", "app == \"web\"");
    let fe_set = set_of("a", "role == \"fe\"");
    let d = h.apply(Update::EndpointUpsert(endpoint(
        "a/web",
        "n2",
        &[("app", "web")],
        "10.0.0.1",
    )));
    assert_eq!(
        d,
        vec![
            Delta::EndpointRemoved { id: eid("a/web") },
            Delta::PolicyRemoved {
                id: pid("a", "allow-fe")
            },
            Delta::SetRemoved { id: fe_set.clone() },
        ]
    );
    // Still a member of the set of pods it is a peer of.
    assert!(h.calc.state().ip_sets[&web_set]
        .members
        .contains(&net("10.0.0.1/32")));
    let d = h.apply(Update::EndpointUpsert(endpoint(
        "a/web",
        NODE,
        &[("app", "web")],
        "10.0.0.1",
    )));
    assert_eq!(
        d,
        vec![
            Delta::SetCreated {
                id: fe_set.clone(),
                kind: palisade_calc::IpSetKind::Net
            },
            Delta::SetMemberAdded {
                id: fe_set,
                member: net("10.0.1.1/32")
            },
            Delta::PolicyChanged {
                id: pid("a", "allow-fe")
            },
            Delta::EndpointChanged { id: eid("a/web") },
        ]
    );
    let d = h.apply(Update::EndpointRemove(eid("a/web")));
    assert_eq!(
        d[0],
        Delta::SetMemberRemoved {
            id: web_set,
            member: net("10.0.0.1/32")
        }
    );
}

#[test]
fn identical_selectors_share_a_set_until_the_last_user_goes() {
    let mut h = basic();
    h.apply(Update::PolicyUpsert(fe_policy("second")));
    let s = set_of("a", "role == \"fe\"");
    assert_eq!(h.calc.state().ip_sets.len(), 1);
    assert_eq!(h.calc.stats().ip_sets, 1);
    let d = h.apply(Update::PolicyRemove(pid("a", "allow-fe")));
    assert_eq!(
        d,
        vec![
            Delta::EndpointChanged { id: eid("a/web") },
            Delta::PolicyRemoved {
                id: pid("a", "allow-fe")
            },
        ]
    );
    assert!(h.calc.state().ip_sets.contains_key(&s));
    let d = h.apply(Update::PolicyRemove(pid("a", "second")));
    assert_eq!(
        d,
        vec![
            Delta::EndpointChanged { id: eid("a/web") },
            Delta::PolicyRemoved {
                id: pid("a", "second")
            },
            Delta::SetRemoved { id: s },
        ]
    );
}

#[test]
fn changing_a_policy_swaps_its_sets_safely() {
    let mut h = basic();
    let old = set_of("a", "role == \"fe\"");
    let new = set_of("a", "role == \"be\"");
    let mut p = fe_policy("allow-fe");
    p.ingress = Some(vec![allow_from(
        vec![pods_in("a", "role == \"be\"")],
        vec![],
    )]);
    let d = h.apply(Update::PolicyUpsert(p));
    assert_eq!(
        d,
        vec![
            Delta::SetCreated {
                id: new,
                kind: palisade_calc::IpSetKind::Net
            },
            Delta::PolicyChanged {
                id: pid("a", "allow-fe")
            },
            Delta::SetRemoved { id: old },
        ]
    );
}

#[test]
fn tiers_order_policies_per_direction() {
    let mut h = Harness::new();
    h.apply(Update::EndpointUpsert(endpoint(
        "a/web",
        NODE,
        &[("app", "web")],
        "10.0.0.1",
    )));
    let mk = |tier: &str, name: &str, order: u32, ingress: bool, egress: bool| Policy {
        id: PolicyId {
            tier: tier.into(),
            namespace: Some("a".into()),
            name: name.into(),
        },
        order,
        selector: Selector::All,
        namespace_selector: Selector::All,
        staged: false,
        ingress: ingress.then(Vec::new),
        egress: egress.then(Vec::new),
    };
    let policies = [
        mk("default", "b-pol", 1000, true, false),
        mk("default", "a-pol", 1000, true, true),
        mk("default", "z-first", 5, true, false),
        mk("admin", "adm", 10, true, true),
        mk("baseline", "base", 1, false, true),
        mk("mystery", "unknown-tier", 1, true, false),
    ];
    h.apply_all(policies.iter().cloned().map(Update::PolicyUpsert).collect());
    let id = |p: &Policy| p.id.clone();
    let tp = |tier: &str, ps: &[&Policy]| TierPolicies {
        tier: tier.into(),
        policies: ps.iter().map(|p| id(p)).collect(),
        default_action: match tier {
            "admin" | "baseline" => TierAction::Pass,
            _ => TierAction::Deny,
        },
    };
    let [b, a, z, adm, base, unknown] = &policies;
    let tiers = h.calc.state().endpoints[&eid("a/web")].tiers.clone();
    assert_eq!(
        tiers.ingress,
        vec![
            tp("admin", &[adm]),
            tp("default", &[z, a, b]),
            tp("mystery", &[unknown])
        ]
    );
    assert_eq!(
        tiers.egress,
        vec![
            tp("admin", &[adm]),
            tp("default", &[a]),
            tp("baseline", &[base])
        ]
    );
    let d = h.apply(Update::TierUpsert(Tier {
        name: "admin".into(),
        order: 20000,
        default_action: TierAction::Pass,
    }));
    assert_eq!(d, vec![Delta::EndpointChanged { id: eid("a/web") }]);
    let tiers = &h.calc.state().endpoints[&eid("a/web")].tiers;
    assert_eq!(tiers.egress.last(), Some(&tp("admin", &[adm])));
    // A policy's order change reorders; no new tier, no new set.
    let mut b2 = b.clone();
    b2.order = 1;
    let d = h.apply(Update::PolicyUpsert(b2.clone()));
    assert_eq!(
        d,
        vec![
            Delta::PolicyChanged { id: id(&b2) },
            Delta::EndpointChanged { id: eid("a/web") }
        ]
    );
    assert_eq!(
        h.calc.state().endpoints[&eid("a/web")].tiers.ingress[0],
        tp("default", &[&b2, z, a])
    );
}

#[test]
fn batches_net_out_transient_objects() {
    let mut h = basic();
    let p = fe_policy("transient");
    let d = h.apply_all(vec![
        Update::PolicyUpsert(p.clone()),
        Update::PolicyRemove(p.id.clone()),
    ]);
    assert_eq!(d, vec![]);
    let d = h.apply_all(vec![
        Update::EndpointUpsert(endpoint("a/fe2", "n3", &[("role", "fe")], "10.0.1.2")),
        Update::EndpointRemove(eid("a/fe2")),
    ]);
    assert_eq!(d, vec![]);
}

#[test]
fn shared_addresses_stay_until_the_last_endpoint_goes() {
    let mut h = basic();
    let s = set_of("a", "role == \"fe\"");
    let d = h.apply(Update::EndpointUpsert(endpoint(
        "a/fe-twin",
        "n3",
        &[("role", "fe")],
        "10.0.1.1",
    )));
    assert_eq!(d, vec![]);
    assert_eq!(h.apply(Update::EndpointRemove(eid("a/fe"))), vec![]);
    let d = h.apply(Update::EndpointRemove(eid("a/fe-twin")));
    assert_eq!(
        d,
        vec![Delta::SetMemberRemoved {
            id: s,
            member: net("10.0.1.1/32")
        }]
    );
}

#[test]
fn ip_blocks_stay_inline_with_host_bits_masked() {
    let mut h = basic();
    let mut p = fe_policy("cidr");
    p.ingress = None;
    p.egress = Some(vec![Rule {
        action: Action::Deny,
        peers: vec![Peer::Cidr {
            cidr: "10.1.2.3/16".parse().unwrap(),
            except: vec!["10.1.9.9/24".parse().unwrap()],
        }],
        ports: vec![],
    }]);
    h.apply(Update::PolicyUpsert(p));
    let rule = &h.calc.state().policies[&pid("a", "cidr")]
        .egress
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        rule.peers,
        vec![RulePeer::Cidr {
            cidr: "10.1.0.0/16".parse().unwrap(),
            except: vec!["10.1.9.0/24".parse().unwrap()],
        }]
    );
    let web = &h.calc.state().endpoints[&eid("a/web")];
    assert_eq!(web.tiers.egress.len(), 1);
    assert!(web.iface.starts_with("pal") && web.iface.len() == 15);
}

#[test]
fn every_interface_prefix_names_the_endpoint_in_full_and_incremental() {
    use palisade_model::endpoint::interface_name;
    let config = CalcConfig::with_prefixes(NODE, &["cali", "pal"]);
    let mut h = Harness::with_config(config.clone());
    h.apply(Update::NamespaceUpsert(namespace("a", &[])));
    h.apply(Update::EndpointUpsert(endpoint(
        "a/web",
        NODE,
        &[("app", "web")],
        "10.0.0.1",
    )));
    let id = eid("a/web");
    let web = &h.calc.state().endpoints[&id];
    assert_eq!(web.iface, interface_name("cali", &id));
    assert_eq!(web.iface_aliases, vec![interface_name("pal", &id)]);
    // A relabel keeps the names; Harness::apply compared with compute_full at each step.
    h.apply(Update::EndpointUpsert(endpoint(
        "a/web",
        NODE,
        &[("app", "api")],
        "10.0.0.1",
    )));
    assert_eq!(
        h.calc.state().endpoints[&id].iface_aliases,
        vec![interface_name("pal", &id)]
    );
    assert_eq!(*h.calc.state(), compute_full(&config, &h.cluster));
    // One prefix: no aliases.
    let mut single = Harness::new();
    single.apply(Update::EndpointUpsert(endpoint(
        "a/web",
        NODE,
        &[],
        "10.0.0.1",
    )));
    assert!(single.calc.state().endpoints[&id].iface_aliases.is_empty());
}
