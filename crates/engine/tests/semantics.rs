//! One test (or more) per numbered point of shared/SEMANTICS.md, plus the tier model. Every
//! check goes through `verdict`, the bitset `matrix` and `naive_matrix`, which must agree.

use std::net::IpAddr;

use ipnet::IpNet;
use palisade_engine::{
    matrix, naive_matrix, verdict, DecisionTrace, EngineError, Flow, FlowEnd, Probe,
};
use palisade_model::{
    Action, Cluster, Endpoint, EndpointId, EndpointPeer, NamedPort, Namespace, NamespaceMatch,
    Peer, Policy, PolicyId, PortMatch, PortSpec, Protocol, Rule, Selector,
};

fn sel(text: &str) -> Selector {
    Selector::parse(text).expect("test selector parses")
}

fn pod(id: &str, labels: &[(&str, &str)], ips: &[&str]) -> Endpoint {
    let (ns, name) = id.split_once('/').expect("ns/name");
    Endpoint {
        id: EndpointId::new(ns, name),
        node: None,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ips: ips.iter().map(|s| s.parse().expect("ip")).collect(),
        ports: Vec::new(),
    }
}

fn ns(name: &str, labels: &[(&str, &str)]) -> Namespace {
    let mut n = Namespace::implicit(name);
    n.labels
        .extend(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    n
}

fn k8s(ns: &str, name: &str, selector: &str) -> Policy {
    Policy {
        id: PolicyId {
            tier: "default".into(),
            namespace: Some(ns.into()),
            name: name.into(),
        },
        order: 1000,
        selector: sel(selector),
        namespace_selector: Selector::All,
        staged: false,
        ingress: None,
        egress: None,
    }
}

fn rule(action: Action, peers: Vec<Peer>, ports: Vec<PortSpec>) -> Rule {
    Rule {
        action,
        peers,
        ports,
    }
}

fn allow(peers: Vec<Peer>, ports: Vec<PortSpec>) -> Rule {
    rule(Action::Allow, peers, ports)
}

fn pods(ns: &str, selector: &str) -> Peer {
    Peer::Endpoints(EndpointPeer {
        namespaces: NamespaceMatch::Name(ns.into()),
        pods: sel(selector),
    })
}

fn in_namespaces(ns_selector: &str, selector: &str) -> Peer {
    Peer::Endpoints(EndpointPeer {
        namespaces: NamespaceMatch::Selector(sel(ns_selector)),
        pods: sel(selector),
    })
}

fn cidr(c: &str, except: &[&str]) -> Peer {
    Peer::Cidr {
        cidr: c.parse().expect("cidr"),
        except: except
            .iter()
            .map(|e| e.parse::<IpNet>().expect("except"))
            .collect(),
    }
}

fn port(protocol: Protocol, start: u16, end: u16) -> PortSpec {
    PortSpec {
        protocol,
        port: PortMatch::Range { start, end },
    }
}

fn named(protocol: Protocol, name: &str) -> PortSpec {
    PortSpec {
        protocol,
        port: PortMatch::Named(name.into()),
    }
}

fn tcp(p: u16) -> PortSpec {
    port(Protocol::Tcp, p, p)
}

fn end(s: &str) -> FlowEnd {
    match s.parse::<IpAddr>() {
        Ok(ip) => FlowEnd::Ip(ip),
        Err(_) => {
            let (ns, name) = s.split_once('/').expect("ns/name");
            FlowEnd::Pod(EndpointId::new(ns, name))
        }
    }
}

/// The verdict for `from -> to`; for pod pairs also asserts that both matrices agree.
fn can(c: &Cluster, from: &str, to: &str, protocol: Protocol, p: u16) -> bool {
    let flow = Flow::new(end(from), end(to), protocol, p);
    let v = verdict(c, &flow).expect("verdict");
    if let (FlowEnd::Pod(a), FlowEnd::Pod(b)) = (&flow.src, &flow.dst) {
        let probes = [Probe::new(protocol, p)];
        let m = matrix(c, &probes);
        assert_eq!(
            m,
            naive_matrix(c, &probes),
            "bitset and naive matrices differ"
        );
        let i = m.pods.iter().position(|x| x == a).expect("src in matrix");
        let j = m.pods.iter().position(|x| x == b).expect("dst in matrix");
        assert_eq!(
            m.probes[0].allowed(i, j),
            v.allowed,
            "matrix and verdict differ for {flow}"
        );
    }
    v.allowed
}

fn tcp_ok(c: &Cluster, from: &str, to: &str, p: u16) -> bool {
    can(c, from, to, Protocol::Tcp, p)
}

/// Two namespaces `a` (team=x) and `b` (team=y), pods a/web (app=web), a/db (app=db),
/// b/client (app=client).
fn base() -> Cluster {
    let mut c = Cluster::new();
    c.upsert_namespace(ns("a", &[("team", "x")]));
    c.upsert_namespace(ns("b", &[("team", "y")]));
    c.upsert_endpoint(pod("a/web", &[("app", "web")], &["10.0.0.1"]));
    c.upsert_endpoint(pod("a/db", &[("app", "db")], &["10.0.0.2"]));
    c.upsert_endpoint(pod("b/client", &[("app", "client")], &["10.0.1.1"]));
    c
}

#[test]
fn p1_both_sides_must_allow() {
    let mut c = base();
    let mut deny_egress = k8s("b", "no-egress", "all()");
    deny_egress.egress = Some(vec![]);
    c.upsert_policy(deny_egress);
    assert!(!tcp_ok(&c, "b/client", "a/web", 80));
    c.policies.clear();
    let mut deny_ingress = k8s("a", "no-ingress", "app == 'web'");
    deny_ingress.ingress = Some(vec![]);
    c.upsert_policy(deny_ingress);
    assert!(!tcp_ok(&c, "b/client", "a/web", 80));
    assert!(tcp_ok(&c, "b/client", "a/db", 80));
}

#[test]
fn p2_isolation_only_by_policies_of_own_namespace() {
    let mut c = base();
    // A policy in b selecting app=web does not isolate a/web.
    let mut p = k8s("b", "elsewhere", "app == 'web'");
    p.ingress = Some(vec![]);
    c.upsert_policy(p);
    assert!(tcp_ok(&c, "b/client", "a/web", 80));
    let v = verdict(
        &c,
        &Flow::new(end("b/client"), end("a/web"), Protocol::Tcp, 80),
    )
    .unwrap();
    let ing = v.ingress.expect("ingress side");
    assert!(!ing.isolated);
    assert_eq!(ing.decision, DecisionTrace::Open);
    assert_eq!(ing.summary(), "no policy selects the pod: open");
}

#[test]
fn p3_policies_are_additive() {
    let mut c = base();
    let mut p1 = k8s("a", "from-client", "app == 'web'");
    p1.ingress = Some(vec![allow(
        vec![in_namespaces("team == 'y'", "all()")],
        vec![],
    )]);
    let mut p2 = k8s("a", "from-db", "app == 'web'");
    p2.ingress = Some(vec![allow(vec![pods("a", "app == 'db'")], vec![])]);
    c.upsert_policy(p1);
    c.upsert_policy(p2);
    assert!(tcp_ok(&c, "b/client", "a/web", 80));
    assert!(tcp_ok(&c, "a/db", "a/web", 80));
}

#[test]
fn p4_p5_empty_rule_lists_deny_absent_direction_is_open() {
    let mut c = base();
    let mut p = k8s("a", "ingress-only", "all()");
    p.ingress = Some(vec![]);
    p.egress = None; // not in policyTypes: egress not isolated
    c.upsert_policy(p);
    assert!(!tcp_ok(&c, "b/client", "a/db", 5432));
    assert!(tcp_ok(&c, "a/db", "b/client", 5432));
    // An empty peer list and empty port list inside a rule match everything.
    let mut q = k8s("a", "allow-all", "all()");
    q.ingress = Some(vec![allow(vec![], vec![])]);
    c.upsert_policy(q);
    assert!(tcp_ok(&c, "b/client", "a/db", 5432));
    assert!(can(&c, "192.0.2.9", "a/db", Protocol::Udp, 53));
}

#[test]
fn p7_rule_needs_peer_and_port() {
    let mut c = base();
    let mut p = k8s("a", "web", "app == 'web'");
    p.ingress = Some(vec![allow(vec![pods("a", "app == 'db'")], vec![tcp(80)])]);
    c.upsert_policy(p);
    assert!(tcp_ok(&c, "a/db", "a/web", 80));
    assert!(!tcp_ok(&c, "a/db", "a/web", 81));
    assert!(!tcp_ok(&c, "b/client", "a/web", 80));
}

#[test]
fn p8_peer_kinds() {
    let mut c = base();
    c.upsert_endpoint(pod("b/web", &[("app", "web")], &["10.0.1.2"]));
    c.upsert_namespace(ns("c", &[("team", "y")]));
    c.upsert_endpoint(pod("c/db", &[("app", "db")], &["10.0.2.1"]));
    let target = |name: &str, peer: Peer| {
        let mut p = k8s("a", name, "app == 'web'");
        p.ingress = Some(vec![allow(vec![peer], vec![])]);
        p
    };
    // podSelector alone: the policy's namespace only.
    c.upsert_policy(target("p", pods("a", "app == 'db'")));
    assert!(tcp_ok(&c, "a/db", "a/web", 80));
    assert!(!tcp_ok(&c, "c/db", "a/web", 80));
    // namespaceSelector alone: every pod of matching namespaces.
    c.policies.clear();
    c.upsert_policy(target("p", in_namespaces("team == 'y'", "all()")));
    assert!(tcp_ok(&c, "b/client", "a/web", 80));
    assert!(tcp_ok(&c, "c/db", "a/web", 80));
    assert!(!tcp_ok(&c, "a/db", "a/web", 80));
    // both: AND.
    c.policies.clear();
    c.upsert_policy(target("p", in_namespaces("team == 'y'", "app == 'db'")));
    assert!(tcp_ok(&c, "c/db", "a/web", 80));
    assert!(!tcp_ok(&c, "b/client", "a/web", 80));
    assert!(!tcp_ok(&c, "a/db", "a/web", 80));
    // namespaceSelector {} + podSelector: those pods in every namespace.
    c.policies.clear();
    c.upsert_policy(target("p", in_namespaces("all()", "app == 'db'")));
    assert!(tcp_ok(&c, "c/db", "a/web", 80));
    assert!(tcp_ok(&c, "a/db", "a/web", 80));
    assert!(!tcp_ok(&c, "b/client", "a/web", 80));
    // An endpoint peer never matches an address outside the cluster.
    assert!(!tcp_ok(&c, "10.0.2.1", "a/web", 80));
}

#[test]
fn p9_ip_blocks_apply_to_pod_ips_both_directions() {
    let mut c = base();
    let mut p = k8s("a", "ipb", "app == 'web'");
    p.ingress = Some(vec![allow(
        vec![cidr("10.0.0.0/16", &["10.0.0.0/24"])],
        vec![],
    )]);
    p.egress = Some(vec![allow(vec![cidr("10.0.1.0/24", &[])], vec![])]);
    c.upsert_policy(p);
    assert!(tcp_ok(&c, "b/client", "a/web", 80)); // 10.0.1.1 inside, not excepted
    assert!(!tcp_ok(&c, "a/db", "a/web", 80)); // 10.0.0.2 excepted
    assert!(tcp_ok(&c, "10.0.200.1", "a/web", 80));
    assert!(!tcp_ok(&c, "10.1.0.1", "a/web", 80));
    assert!(tcp_ok(&c, "a/web", "b/client", 80));
    assert!(!tcp_ok(&c, "a/web", "a/db", 80));
    // A pod without an address matches no ipBlock.
    c.upsert_endpoint(pod("b/pending", &[], &[]));
    assert!(!tcp_ok(&c, "b/pending", "a/web", 80));
}

#[test]
fn p10_selectors_not_in_true_when_key_absent_and_labels_are_current() {
    let mut c = base();
    let mut p = k8s("a", "p", "app == 'web'");
    p.ingress = Some(vec![allow(
        vec![in_namespaces("all()", "app not in {'db'}")],
        vec![],
    )]);
    c.upsert_policy(p);
    c.upsert_endpoint(pod("b/nolabel", &[], &["10.0.1.9"]));
    assert!(tcp_ok(&c, "b/nolabel", "a/web", 80));
    assert!(!tcp_ok(&c, "a/db", "a/web", 80));
    c.upsert_endpoint(pod("a/db", &[("app", "dbx")], &["10.0.0.2"]));
    assert!(tcp_ok(&c, "a/db", "a/web", 80));
}

#[test]
fn p11_protocols_and_ranges() {
    let mut c = base();
    let mut p = k8s("a", "udp-only", "app == 'web'");
    p.ingress = Some(vec![allow(vec![], vec![port(Protocol::Udp, 53, 53)])]);
    c.upsert_policy(p);
    assert!(!tcp_ok(&c, "b/client", "a/web", 53));
    assert!(can(&c, "b/client", "a/web", Protocol::Udp, 53));
    let mut r = k8s("a", "range", "app == 'web'");
    r.ingress = Some(vec![allow(vec![], vec![port(Protocol::Tcp, 8000, 8010)])]);
    c.upsert_policy(r);
    assert!(tcp_ok(&c, "b/client", "a/web", 8000));
    assert!(tcp_ok(&c, "b/client", "a/web", 8010));
    assert!(!tcp_ok(&c, "b/client", "a/web", 8011));
    let mut a = k8s("a", "any-sctp", "app == 'web'");
    a.ingress = Some(vec![allow(
        vec![],
        vec![PortSpec {
            protocol: Protocol::Sctp,
            port: PortMatch::Any,
        }],
    )]);
    c.upsert_policy(a);
    assert!(can(&c, "b/client", "a/web", Protocol::Sctp, 9));
    assert!(!can(&c, "b/client", "a/web", Protocol::Udp, 9));
    // ICMP: only rules without ports or with an ICMP port spec.
    assert!(!can(&c, "b/client", "a/web", Protocol::Icmp, 0));
    let mut i = k8s("a", "icmp", "app == 'web'");
    i.ingress = Some(vec![allow(
        vec![],
        vec![PortSpec {
            protocol: Protocol::Icmp,
            port: PortMatch::Any,
        }],
    )]);
    c.upsert_policy(i);
    assert!(can(&c, "b/client", "a/web", Protocol::Icmp, 0));
}

#[test]
fn p12_named_ports_resolve_on_destination() {
    let mut c = base();
    let mut web = pod("a/web", &[("app", "web")], &["10.0.0.1"]);
    web.ports = vec![NamedPort {
        name: "http".into(),
        protocol: Protocol::Tcp,
        port: 8080,
    }];
    c.upsert_endpoint(web);
    let mut db = pod("a/db", &[("app", "db")], &["10.0.0.2"]);
    db.ports = vec![NamedPort {
        name: "http".into(),
        protocol: Protocol::Tcp,
        port: 9000,
    }];
    c.upsert_endpoint(db);
    // Ingress: resolved on the selected pod.
    let mut p = k8s("a", "named-in", "all()");
    p.ingress = Some(vec![allow(vec![], vec![named(Protocol::Tcp, "http")])]);
    c.upsert_policy(p);
    assert!(tcp_ok(&c, "b/client", "a/web", 8080));
    assert!(!tcp_ok(&c, "b/client", "a/web", 9000));
    assert!(tcp_ok(&c, "b/client", "a/db", 9000));
    assert!(!can(&c, "b/client", "a/web", Protocol::Udp, 8080)); // protocol must agree
                                                                 // Egress: resolved on each peer pod.
    let mut e = k8s("b", "named-out", "all()");
    e.egress = Some(vec![allow(vec![], vec![named(Protocol::Tcp, "http")])]);
    c.upsert_policy(e);
    assert!(tcp_ok(&c, "b/client", "a/web", 8080));
    assert!(tcp_ok(&c, "b/client", "a/db", 9000));
    assert!(!tcp_ok(&c, "b/client", "a/db", 8080));
    assert!(!tcp_ok(&c, "b/client", "10.0.0.1", 8080)); // an address has no named ports
                                                        // Unknown name: matches nothing, the pod stays isolated.
    let mut u = k8s("a", "named-in", "all()");
    u.ingress = Some(vec![allow(vec![], vec![named(Protocol::Tcp, "nope")])]);
    c.upsert_policy(u);
    assert!(!tcp_ok(&c, "a/db", "a/web", 8080));
}

#[test]
fn p13_replace_and_delete() {
    let mut c = base();
    let mut p = k8s("a", "p", "app == 'web'");
    p.ingress = Some(vec![]);
    c.upsert_policy(p.clone());
    assert!(!tcp_ok(&c, "a/db", "a/web", 80));
    p.ingress = Some(vec![allow(vec![], vec![])]);
    c.upsert_policy(p);
    assert_eq!(c.policies.len(), 1);
    assert!(tcp_ok(&c, "a/db", "a/web", 80));
    let mut q = k8s("a", "p", "app == 'web'");
    q.ingress = Some(vec![]);
    c.upsert_policy(q);
    assert!(!tcp_ok(&c, "a/db", "a/web", 80));
    c.policies.clear();
    assert!(tcp_ok(&c, "a/db", "a/web", 80));
}

#[test]
fn p14_pod_to_itself_is_allowed() {
    let mut c = base();
    let mut p = k8s("a", "deny-all", "all()");
    p.ingress = Some(vec![]);
    p.egress = Some(vec![]);
    c.upsert_policy(p);
    let v = verdict(
        &c,
        &Flow::new(end("a/web"), end("a/web"), Protocol::Tcp, 80),
    )
    .unwrap();
    assert!(v.allowed && v.same_pod);
    assert!(!v.ingress.unwrap().allowed);
    assert!(tcp_ok(&c, "a/web", "a/web", 80));
    assert!(!tcp_ok(&c, "a/web", "a/db", 80));
}

fn tiered(tier: &str, name: &str, order: u32, ns_selector: &str, rules: Vec<Rule>) -> Policy {
    Policy {
        id: PolicyId {
            tier: tier.into(),
            namespace: None,
            name: name.into(),
        },
        order,
        selector: Selector::All,
        namespace_selector: sel(ns_selector),
        staged: false,
        ingress: Some(rules),
        egress: None,
    }
}

#[test]
fn tiers_deny_pass_log_and_order() {
    let mut c = base();
    // Kubernetes policy allows everything into a/web.
    let mut k = k8s("a", "allow", "app == 'web'");
    k.ingress = Some(vec![allow(vec![], vec![])]);
    c.upsert_policy(k);
    // Admin tier: deny from team=y, pass the rest.
    c.upsert_policy(tiered(
        "admin",
        "guard",
        10,
        "team == 'x'",
        vec![
            rule(Action::Log, vec![], vec![]),
            rule(
                Action::Deny,
                vec![in_namespaces("team == 'y'", "all()")],
                vec![],
            ),
            rule(Action::Pass, vec![], vec![]),
        ],
    ));
    assert!(!tcp_ok(&c, "b/client", "a/web", 80));
    assert!(tcp_ok(&c, "a/db", "a/web", 80));
    let v = verdict(
        &c,
        &Flow::new(end("b/client"), end("a/web"), Protocol::Tcp, 80),
    )
    .unwrap();
    let ing = v.ingress.unwrap();
    assert_eq!(
        ing.tiers
            .iter()
            .map(|t| t.tier.as_str())
            .collect::<Vec<_>>(),
        ["admin", "default"]
    );
    assert_eq!(ing.noted.len(), 1, "the log rule is noted");
    match &ing.decision {
        DecisionTrace::Rule(r) => assert_eq!((r.rule, r.action), (1, Action::Deny)),
        d => panic!("unexpected decision {d:?}"),
    }
    // a/db: admin passes it, default tier has no policy for a/db: passed through every tier.
    let v = verdict(
        &c,
        &Flow::new(end("b/client"), end("a/db"), Protocol::Tcp, 80),
    )
    .unwrap();
    assert!(!v.allowed, "team y is denied at admin for a/db too");
    let v = verdict(&c, &Flow::new(end("a/web"), end("a/db"), Protocol::Tcp, 80)).unwrap();
    assert_eq!(v.ingress.unwrap().decision, DecisionTrace::PassedAllTiers);
    assert!(v.allowed);
    // A lower order in the same tier goes first: an allow at order 5 beats the deny.
    c.upsert_policy(tiered(
        "admin",
        "early",
        5,
        "team == 'x'",
        vec![rule(Action::Allow, vec![pods("b", "all()")], vec![])],
    ));
    assert!(tcp_ok(&c, "b/client", "a/web", 80));
    // The baseline tier ends with Pass: a selecting baseline policy where nothing decides
    // leaves the flow to the default allow.
    c.upsert_policy(tiered(
        "baseline",
        "nothing",
        1,
        "team == 'y'",
        vec![rule(Action::Log, vec![], vec![])],
    ));
    assert!(tcp_ok(&c, "a/web", "b/client", 80));
    let v = verdict(
        &c,
        &Flow::new(end("a/web"), end("b/client"), Protocol::Tcp, 80),
    )
    .unwrap();
    let ing = v.ingress.unwrap();
    assert_eq!(ing.decision, DecisionTrace::PassedAllTiers);
    assert_eq!(ing.fell_through[0].tier, "baseline");
    assert_eq!(ing.fell_through[0].next, "the default allow");
    // End of a Deny tier: a selecting tier where nothing decides denies.
    c.tiers.push(palisade_model::Tier {
        name: "strict".into(),
        order: 20000,
        default_action: palisade_model::TierAction::Deny,
    });
    c.upsert_policy(tiered(
        "strict",
        "nothing",
        1,
        "team == 'y'",
        vec![rule(Action::Log, vec![], vec![])],
    ));
    assert!(!tcp_ok(&c, "a/web", "b/client", 80));
    let v = verdict(
        &c,
        &Flow::new(end("a/web"), end("b/client"), Protocol::Tcp, 80),
    )
    .unwrap();
    assert_eq!(
        v.ingress.unwrap().decision,
        DecisionTrace::EndOfTier {
            tier: "strict".into(),
            policies: 1
        }
    );
}

#[test]
fn addresses_dual_stack_and_families() {
    let mut c = Cluster::new();
    c.upsert_endpoint(pod("a/dual", &[], &["10.0.0.1", "fd00::1"]));
    c.upsert_endpoint(pod("a/v6", &[], &["fd00::2"]));
    c.upsert_endpoint(pod("a/v4", &[], &["10.0.0.3"]));
    let mut p = k8s("a", "v6-only", "all()");
    p.ingress = Some(vec![allow(vec![cidr("fd00::/64", &[])], vec![])]);
    c.upsert_policy(p);
    // dual -> v6 uses IPv6 (the common family), so the v6 block matches.
    assert!(tcp_ok(&c, "a/dual", "a/v6", 80));
    // v4 -> dual uses IPv4: a v6 block never matches a v4 peer.
    assert!(!tcp_ok(&c, "a/v4", "a/dual", 80));
    assert!(tcp_ok(&c, "fd00::9", "a/v4", 80));
    assert!(!tcp_ok(&c, "10.0.0.9", "a/v4", 80));
    let err = verdict(
        &c,
        &Flow::new(end("10.0.0.1"), end("fd00::1"), Protocol::Tcp, 80),
    );
    assert!(matches!(err, Err(EngineError::FamilyMismatch { .. })));
    let err = verdict(
        &c,
        &Flow::new(end("a/nope"), end("a/v4"), Protocol::Tcp, 80),
    );
    assert_eq!(
        err,
        Err(EngineError::UnknownPod(EndpointId::new("a", "nope")))
    );
}

#[test]
fn matrix_order_and_shape() {
    let mut c = Cluster::new();
    c.upsert_endpoint(pod("a/x", &[], &["10.0.0.1"]));
    c.upsert_endpoint(pod("a-b/y", &[], &["10.0.0.2"]));
    let m = matrix(
        &c,
        &[Probe::new(Protocol::Tcp, 80), Probe::new(Protocol::Icmp, 0)],
    );
    let names: Vec<String> = m.pods.iter().map(|p| p.to_string()).collect();
    assert_eq!(names, ["a-b/y", "a/x"], "sorted by the text ns/name");
    assert_eq!(m.probes.len(), 2);
    assert_eq!(m.probes[0].count(), 4);
}

#[test]
fn explain_text_in_words() {
    let mut c = base();
    let mut k = k8s("a", "web-from-db", "app == 'web'");
    k.ingress = Some(vec![allow(vec![pods("a", "app == 'db'")], vec![tcp(80)])]);
    c.upsert_policy(k);
    c.upsert_policy(tiered(
        "admin",
        "guard",
        1,
        "team == 'x'",
        vec![
            rule(
                Action::Deny,
                vec![cidr("10.0.1.0/24", &["10.0.1.128/25"])],
                vec![],
            ),
            rule(Action::Pass, vec![], vec![]),
        ],
    ));
    let text = |from: &str, to: &str| {
        let v = verdict(&c, &Flow::new(end(from), end(to), Protocol::Tcp, 80)).unwrap();
        palisade_engine::explain_text(&c, &v)
    };
    let t = text("b/client", "a/web");
    assert!(
        t.starts_with("DENIED: b/client -> a/web on 80/TCP\n"),
        "{t}"
    );
    assert!(t.contains("  addresses: 10.0.1.1 -> 10.0.0.1\n"), "{t}");
    assert!(t.contains("    tier admin (ClusterNetworkPolicy Admin tier): selected by admin:guard (priority 1)\n    tier default: selected by a/web-from-db\n"), "{t}");
    assert!(
        t.contains("denied TCP/80 from b/client by admin:guard rule 0: denies only from addresses in 10.0.1.0/24 except 10.0.1.128/25 on any port"),
        "{t}"
    );
    let t = text("a/db", "a/web");
    assert!(t.starts_with("ALLOWED"), "{t}");
    assert!(
        t.contains("passed by admin:guard rule 1: evaluation goes on with tier default"),
        "{t}"
    );
    assert!(t.contains("allowed TCP/80 from a/db by a/web-from-db rule 0: allows only from pods app == \"db\" in namespace a on 80/TCP"), "{t}");
    let t = text("a/web", "a/web");
    assert!(t.contains("same pod: always allowed"), "{t}");
}

/// Kubernetes: "traffic to and from the node where a Pod is running is always allowed" by
/// NetworkPolicies. The NetworkPolicy tier passes it on; the ClusterNetworkPolicy tiers before
/// and after it still judge it. A host-networked pod on another node is judged as usual.
#[test]
fn node_local_traffic_is_not_judged_by_network_policies() {
    let mut c = base();
    let on = |mut ep: Endpoint, node: &str| {
        ep.node = Some(node.into());
        ep
    };
    let web = c.endpoint(&EndpointId::new("a", "web")).unwrap().clone();
    c.upsert_endpoint(on(web, "n1"));
    c.upsert_node(palisade_model::Node {
        name: "n1".into(),
        labels: Default::default(),
        addresses: vec!["192.168.0.1".parse().unwrap()],
    });
    c.upsert_host_network(on(pod("kube-system/agent1", &[], &["192.168.0.1"]), "n1"));
    c.upsert_host_network(on(pod("kube-system/agent2", &[], &["192.168.0.2"]), "n2"));
    // Default deny, both directions, for a/web.
    let mut deny = k8s("a", "deny", "all()");
    deny.ingress = Some(vec![]);
    deny.egress = Some(vec![]);
    c.upsert_policy(deny);
    for (from, to) in [
        ("kube-system/agent1", "a/web"),
        ("a/web", "kube-system/agent1"),
    ] {
        assert!(tcp_ok(&c, from, to, 80), "{from} -> {to}: own node");
    }
    for (from, to) in [
        ("kube-system/agent2", "a/web"),
        ("a/web", "kube-system/agent2"),
    ] {
        assert!(!tcp_ok(&c, from, to, 80), "{from} -> {to}: another node");
    }
    // The node's address as an address end.
    assert!(tcp_ok(&c, "192.168.0.1", "a/web", 80));
    assert!(tcp_ok(&c, "a/web", "192.168.0.1", 80));
    assert!(!tcp_ok(&c, "192.168.0.2", "a/web", 80));
    // explain says it in words.
    let flow = Flow::new(end("kube-system/agent1"), end("a/web"), Protocol::Tcp, 80);
    let v = verdict(&c, &flow).unwrap();
    let ing = v.ingress.as_ref().unwrap();
    assert_eq!(ing.decision, DecisionTrace::PassedAllTiers);
    assert!(ing.node_local.is_some());
    let text = palisade_engine::explain_text(&c, &v);
    assert!(
        text.contains("traffic between a pod and its own node is not judged by NetworkPolicies"),
        "{text}"
    );
    // An Admin Deny still denies, a Baseline Deny too.
    let node_peer = || Peer::Nodes(sel("all()"));
    let admin_deny = tiered(
        "admin",
        "no-nodes",
        10,
        "all()",
        vec![rule(
            Action::Deny,
            vec![cidr("192.168.0.1/32", &[])],
            vec![],
        )],
    );
    c.upsert_policy(admin_deny.clone());
    assert!(!tcp_ok(&c, "kube-system/agent1", "a/web", 80));
    c.policies.retain(|p| p.id != admin_deny.id);
    assert!(tcp_ok(&c, "kube-system/agent1", "a/web", 80));
    let mut baseline_deny = tiered("baseline", "no-nodes", 10, "all()", vec![]);
    baseline_deny.ingress = None;
    baseline_deny.egress = Some(vec![rule(Action::Deny, vec![node_peer()], vec![])]);
    c.upsert_policy(baseline_deny);
    assert!(!tcp_ok(&c, "a/web", "kube-system/agent1", 80));
    assert!(!tcp_ok(&c, "a/web", "192.168.0.1", 80));
    // The Baseline tier decided, not the NetworkPolicy tier.
    let v = verdict(
        &c,
        &Flow::new(end("a/web"), end("kube-system/agent1"), Protocol::Tcp, 80),
    )
    .unwrap();
    assert!(matches!(
        v.egress.unwrap().decision,
        DecisionTrace::Rule(ref r) if r.action == Action::Deny && r.policy.tier == "baseline"
    ));
}
