//! The layout, checked packet by packet with the IR interpreter on the small scenario:
//! conntrack, dispatch, the egress-then-ingress order on one node, and traffic we leave alone.

mod common;

use palisade_model::Protocol;
use palisade_render::interp::{evaluate, net_member, Packet, Verdict};
use palisade_render::ir::{CtState, SetEntry};
use palisade_render::{build, RenderConfig, Ruleset};

struct Small {
    rs: Ruleset,
    web: String,
    db: String,
}

fn small() -> Small {
    let c = common::cluster_from_yaml(common::SMALL);
    let state = common::state(&c, "node-1");
    let iface = |name: &str| {
        state
            .endpoints
            .values()
            .find(|e| e.id.name == name)
            .unwrap()
            .iface
            .clone()
    };
    let cfg = RenderConfig {
        drop_log_group: Some(9),
        ..RenderConfig::default()
    };
    Small {
        web: iface("web"),
        db: iface("db"),
        rs: build(&state, &cfg).unwrap(),
    }
}

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

#[test]
fn remote_client_reaches_web_only_on_its_ports() {
    let s = small();
    let to_web = |proto, port| {
        let p = Packet::new(ip("10.0.2.1"), ip("10.0.1.1"), proto, port, "eth0", &s.web);
        evaluate(&s.rs, &p).unwrap()
    };
    assert_eq!(to_web(Protocol::Tcp, 8080).verdict, Verdict::Accept);
    assert_eq!(to_web(Protocol::Udp, 9005).verdict, Verdict::Accept);
    let denied = to_web(Protocol::Tcp, 80);
    assert_eq!(denied.verdict, Verdict::Drop);
    assert_eq!(denied.logs.len(), 1, "the end-of-tier drop is logged");
    assert!(
        denied.logs[0].contains("ingress prod/web"),
        "{:?}",
        denied.logs
    );
    // The path names every rule on the way by its comment.
    assert!(denied.path.iter().all(|st| st.comment.starts_with("pal:")));
    assert_eq!(denied.path.first().unwrap().chain, "pal-FORWARD");
}

#[test]
fn ip_block_except_is_honoured() {
    let s = small();
    let from = |src: &str| {
        let p = Packet::new(ip(src), ip("10.0.1.1"), Protocol::Tcp, 8080, "eth0", &s.web);
        evaluate(&s.rs, &p).unwrap().verdict
    };
    assert_eq!(from("192.168.7.7"), Verdict::Accept);
    assert_eq!(from("192.168.1.7"), Verdict::Drop);
    assert_eq!(from("172.16.0.1"), Verdict::Drop);
}

#[test]
fn local_to_local_checks_egress_then_ingress() {
    let s = small();
    // db's egress allows web:8080 and web's ingress does not admit db: dropped at ingress.
    let p = Packet::new(
        ip("10.0.1.2"),
        ip("10.0.1.1"),
        Protocol::Tcp,
        8080,
        &s.db,
        &s.web,
    );
    let out = evaluate(&s.rs, &p).unwrap();
    assert_eq!(out.verdict, Verdict::Drop);
    let chains: Vec<&str> = out.path.iter().map(|st| st.chain.as_str()).collect();
    let fw = chains
        .iter()
        .position(|c| c.starts_with("pal-fw-"))
        .unwrap();
    let tw = chains
        .iter()
        .position(|c| c.starts_with("pal-tw-"))
        .unwrap();
    assert!(fw < tw, "egress first, then ingress: {chains:?}");
    // web → db: web's egress is open, db's ingress is open.
    let p = Packet::new(
        ip("10.0.1.1"),
        ip("10.0.1.2"),
        Protocol::Tcp,
        5432,
        &s.web,
        &s.db,
    );
    assert_eq!(evaluate(&s.rs, &p).unwrap().verdict, Verdict::Accept);
    // db → remote on 8080: db's egress only admits web.
    let p = Packet::new(
        ip("10.0.1.2"),
        ip("10.0.2.1"),
        Protocol::Tcp,
        8080,
        &s.db,
        "eth0",
    );
    assert_eq!(evaluate(&s.rs, &p).unwrap().verdict, Verdict::Drop);
}

#[test]
fn conntrack_and_foreign_traffic() {
    let s = small();
    let mut p = Packet::new(
        ip("10.0.2.1"),
        ip("10.0.1.1"),
        Protocol::Tcp,
        80,
        "eth0",
        &s.web,
    );
    p.ct = CtState::Established;
    assert_eq!(evaluate(&s.rs, &p).unwrap().verdict, Verdict::Accept);
    p.ct = CtState::Invalid;
    assert_eq!(evaluate(&s.rs, &p).unwrap().verdict, Verdict::Drop);
    // Neither end is a workload interface: left alone.
    let p = Packet::new(
        ip("1.1.1.1"),
        ip("2.2.2.2"),
        Protocol::Tcp,
        80,
        "eth0",
        "eth1",
    );
    assert_eq!(evaluate(&s.rs, &p).unwrap().verdict, Verdict::NoVerdict);
    // A stale accept mark from elsewhere does not let a packet through.
    let mut p = Packet::new(
        ip("10.0.2.1"),
        ip("10.0.1.1"),
        Protocol::Tcp,
        80,
        "eth0",
        &s.web,
    );
    p.mark = 0x1_0000;
    assert_eq!(evaluate(&s.rs, &p).unwrap().verdict, Verdict::Drop);
}

#[test]
fn most_specific_set_entry_decides() {
    let n = |s: &str| s.parse().unwrap();
    let orders = [
        vec![
            SetEntry::Net(n("10.0.0.0/8")),
            SetEntry::NoMatch(n("10.1.0.0/16")),
        ],
        vec![
            SetEntry::NoMatch(n("10.1.0.0/16")),
            SetEntry::Net(n("10.0.0.0/8")),
        ],
    ];
    for members in orders {
        assert!(net_member(&members, ip("10.2.0.1")));
        assert!(!net_member(&members, ip("10.1.0.1")));
        assert!(!net_member(&members, ip("11.0.0.1")));
    }
    let nested = [
        SetEntry::Net(n("10.0.0.0/8")),
        SetEntry::NoMatch(n("10.1.0.0/16")),
        SetEntry::Net(n("10.1.1.0/24")),
    ];
    assert!(net_member(&nested, ip("10.1.1.1")));
}

/// The small scenario with anti-spoofing bindings: web routed over its veth, db on a bridge
/// `br0` through port `vdb`.
fn small_with_bindings() -> Small {
    use palisade_render::config::SourceBinding;
    let mut s = small();
    let c = common::cluster_from_yaml(common::SMALL);
    let state = common::state(&c, "node-1");
    let mut cfg = RenderConfig::default();
    cfg.source_bindings.insert(
        ip("10.0.1.1"),
        Some(SourceBinding {
            iface: s.web.clone(),
            bridge_port: None,
        }),
    );
    cfg.source_bindings.insert(
        ip("10.0.1.2"),
        Some(SourceBinding {
            iface: "br0".into(),
            bridge_port: Some("vdb".into()),
        }),
    );
    s.rs = build(&state, &cfg).unwrap();
    s
}

#[test]
fn a_local_source_address_counts_only_from_its_own_interface() {
    let s = small_with_bindings();
    // web → db:5432 is allowed (web's egress and db's ingress are open)...
    let from = |iface: &str, port: Option<&str>, ct: CtState| {
        let mut p = Packet::new(
            ip("10.0.1.1"),
            ip("10.0.1.2"),
            Protocol::Tcp,
            5432,
            iface,
            "br0",
        );
        p.in_port = port.map(str::to_string);
        p.ct = ct;
        evaluate(&s.rs, &p).unwrap()
    };
    assert_eq!(from(&s.web, None, CtState::New).verdict, Verdict::Accept);
    // ...but not when web's address comes from anywhere else, even on an established flow.
    for (iface, port) in [("eth0", None), ("br0", Some("vdb")), (s.db.as_str(), None)] {
        for ct in [CtState::New, CtState::Established] {
            let out = from(iface, port, ct);
            assert_eq!(
                out.verdict,
                Verdict::Drop,
                "{iface} {port:?} {ct:?} {:?}",
                out.path
            );
            assert_eq!(out.path.last().unwrap().chain, "pal-spoof");
        }
    }
    // A bridged pod: its address counts only through its own bridge port.
    let to_web = |port: &str| {
        let mut p = Packet::new(
            ip("10.0.1.2"),
            ip("10.0.2.1"),
            Protocol::Tcp,
            5432,
            "br0",
            "eth0",
        );
        p.in_port = Some(port.to_string());
        evaluate(&s.rs, &p).unwrap()
    };
    assert_ne!(to_web("vdb").path.last().unwrap().chain, "pal-spoof");
    assert_eq!(to_web("vbad").verdict, Verdict::Drop);
    // Addresses without a binding are not checked (remote pods).
    let p = Packet::new(
        ip("10.0.2.1"),
        ip("10.0.1.1"),
        Protocol::Tcp,
        8080,
        "eth0",
        &s.web,
    );
    assert_eq!(evaluate(&s.rs, &p).unwrap().verdict, Verdict::Accept);
}

#[test]
fn ndp_passes_under_any_policy() {
    let s = small_with_bindings();
    for t in [133u16, 134, 135, 136] {
        let p = Packet::new(
            ip("fd00::99"),
            ip("fd00::1"),
            Protocol::Icmp,
            t,
            "eth0",
            &s.web,
        );
        let out = evaluate(&s.rs, &p).unwrap();
        assert_eq!(out.verdict, Verdict::Accept, "{t}");
        // Accepted by pal-FORWARD itself, before any dispatch to a pod's chains.
        assert!(out
            .path
            .iter()
            .all(|st| st.chain != "pal-tw-".to_string() + &s.web));
        assert_eq!(out.path.last().unwrap().chain, "pal-FORWARD");
    }
    // Other ICMPv6 (an echo request) is not accepted there.
    let p = Packet::new(
        ip("fd00::99"),
        ip("fd00::1"),
        Protocol::Icmp,
        128,
        "eth0",
        &s.web,
    );
    assert_ne!(evaluate(&s.rs, &p).unwrap().verdict, Verdict::Accept);
}

/// The NetworkPolicy tier does not judge traffic between a pod and its own node: a packet from
/// a node address (its OUTPUT, no input interface) into web on a port web's policies do not
/// admit is accepted, and so is db's egress to a node address (its INPUT); the same packets
/// from or to an address that is not the node's are judged (and dropped). Both layouts.
#[test]
fn node_local_traffic_passes_the_network_policy_tier() {
    use palisade_render::config::NftLayout;
    for layout in [NftLayout::Chains, NftLayout::Flat] {
        let c = common::cluster_from_yaml(common::SMALL);
        let state = common::state(&c, "node-1");
        let iface = |name: &str| {
            state
                .endpoints
                .values()
                .find(|e| e.id.name == name)
                .unwrap()
                .iface
                .clone()
        };
        let cfg = RenderConfig {
            nft_layout: layout,
            ..RenderConfig::default()
        };
        let rs = build(&state, &cfg).unwrap();
        let node = ip("10.9.9.9");
        let judge = |src: &str, dst: &str, in_iface: &str, out_iface: &str, local: bool| {
            let mut p = Packet::new(ip(src), ip(dst), Protocol::Tcp, 80, in_iface, out_iface);
            if local {
                p.local = vec![node, ip("fd00:9::9")];
            }
            evaluate(&rs, &p).unwrap().verdict
        };
        let (web, db) = (iface("web"), iface("db"));
        // The node into web (OUTPUT), and db to the node (INPUT).
        assert_eq!(
            judge("10.9.9.9", "10.0.1.1", "", &web, true),
            Verdict::Accept
        );
        assert_eq!(
            judge("10.0.1.2", "10.9.9.9", &db, "", true),
            Verdict::Accept
        );
        // The same addresses when they are not the node's: judged.
        assert_eq!(
            judge("10.9.9.9", "10.0.1.1", "eth0", &web, false),
            Verdict::Drop
        );
        assert_eq!(
            judge("10.0.1.2", "10.9.9.9", &db, "eth0", false),
            Verdict::Drop
        );
    }
}
