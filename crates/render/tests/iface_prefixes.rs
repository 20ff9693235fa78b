//! Several interface prefixes (`--iface-prefix pal,cali`): every local endpoint is dispatched
//! to its one pair of chains from its interface name under each prefix, on both backends and
//! in the interpreter; with one prefix nothing changes.

mod common;

use palisade_calc::{compute_full, CalcConfig, DesiredState};
use palisade_model::endpoint::interface_name;
use palisade_model::{Direction, EndpointId, Protocol};
use palisade_render::config::EndpointMatch;
use palisade_render::interp::{evaluate, Packet, Verdict};
use palisade_render::ir::DispatchKey;
use palisade_render::{build, iptables, names, nft, RenderConfig, Ruleset};

const NODE: &str = "node-1";

fn state(prefixes: &[&str]) -> DesiredState {
    let c = common::cluster_from_yaml(common::SMALL);
    compute_full(&CalcConfig::with_prefixes(NODE, prefixes), &c)
}

fn ruleset(prefixes: &[&str]) -> Ruleset {
    let cfg = RenderConfig {
        endpoint_match: EndpointMatch::Interface,
        ..RenderConfig::default()
    };
    build(&state(prefixes), &cfg).unwrap()
}

fn web() -> EndpointId {
    EndpointId::new("prod", "web")
}

fn db() -> EndpointId {
    EndpointId::new("prod", "db")
}

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

#[test]
fn calc_names_the_interface_under_every_prefix() {
    let s = state(&["pal", "cali"]);
    let ep = &s.endpoints[&web()];
    assert_eq!(ep.iface, interface_name("pal", &web()));
    assert_eq!(ep.iface_aliases, vec![interface_name("cali", &web())]);
}

#[test]
fn both_backends_dispatch_every_name_to_the_primary_chains() {
    let rs = ruleset(&["pal", "cali"]);
    let script = nft::render(&rs);
    let ipt = iptables::render(&rs, false).v4.unwrap();
    for id in [web(), db()] {
        let primary = interface_name("pal", &id);
        let fw = names::endpoint_chain(Direction::Egress, &primary);
        let tw = names::endpoint_chain(Direction::Ingress, &primary);
        for name in [primary.clone(), interface_name("cali", &id)] {
            // nftables: one element per name in each verdict map.
            assert!(
                script.contains(&nft::map_element(DispatchKey::Iface, &name, &fw)),
                "{name} -> {fw} missing:\n{script}"
            );
            assert!(
                script.contains(&nft::map_element(DispatchKey::Iface, &name, &tw)),
                "{name}"
            );
            // iptables: one dispatch line per name and direction.
            assert!(
                ipt.contains(&format!(" -i {name} -j {fw}\n")),
                "{name}:\n{ipt}"
            );
            assert!(
                ipt.contains(&format!(" -o {name} -j {tw}\n")),
                "{name}:\n{ipt}"
            );
        }
    }
    // Still one pair of endpoint chains per endpoint, named from the primary prefix.
    let endpoint_chains = |rs: &Ruleset| -> Vec<String> {
        rs.chains
            .iter()
            .map(|c| c.name.clone())
            .filter(|n| n.starts_with("pal-fw-") || n.starts_with("pal-tw-"))
            .collect()
    };
    assert_eq!(endpoint_chains(&rs), endpoint_chains(&ruleset(&["pal"])));
}

#[test]
fn one_prefix_renders_exactly_as_before() {
    // Only pal-FORWARD's dispatch targets differ between one and two prefixes.
    let (one, two) = (ruleset(&["pal"]), ruleset(&["pal", "cali"]));
    assert_eq!(one.sets, two.sets);
    assert_eq!(one.hooks, two.hooks);
    for (a, b) in one.chains.iter().zip(&two.chains) {
        if a.name == names::FORWARD_CHAIN {
            let comments = |c: &palisade_render::ir::Chain| -> Vec<String> {
                c.rules.iter().map(|r| r.comment.clone()).collect()
            };
            assert_eq!(comments(a), comments(b));
        } else {
            assert_eq!(a, b);
        }
    }
    // With one prefix the state carries no aliases and serializes as before.
    let s = state(&["pal"]);
    let json = serde_json::to_string(&s.endpoints[&web()]).unwrap();
    assert!(!json.contains("iface_aliases"), "{json}");
    let s = state(&["pal", "cali"]);
    let json = serde_json::to_string(&s.endpoints[&web()]).unwrap();
    assert!(json.contains("iface_aliases"), "{json}");
}

#[test]
fn the_interpreter_gives_the_same_verdict_on_either_name() {
    let rs = ruleset(&["pal", "cali"]);
    let names_of = |id: &EndpointId| [interface_name("pal", id), interface_name("cali", id)];
    for web_if in names_of(&web()) {
        // Remote client to web: admitted on its ports only.
        let to_web = |proto, port| {
            let p = Packet::new(ip("10.0.2.1"), ip("10.0.1.1"), proto, port, "eth0", &web_if);
            evaluate(&rs, &p).unwrap().verdict
        };
        assert_eq!(to_web(Protocol::Tcp, 8080), Verdict::Accept, "{web_if}");
        assert_eq!(to_web(Protocol::Tcp, 80), Verdict::Drop, "{web_if}");
        for db_if in names_of(&db()) {
            // db's egress admits web:8080, web's ingress does not admit db.
            let p = Packet::new(
                ip("10.0.1.2"),
                ip("10.0.1.1"),
                Protocol::Tcp,
                8080,
                &db_if,
                &web_if,
            );
            assert_eq!(evaluate(&rs, &p).unwrap().verdict, Verdict::Drop);
            // web's egress and db's ingress are open.
            let p = Packet::new(
                ip("10.0.1.1"),
                ip("10.0.1.2"),
                Protocol::Tcp,
                5432,
                &web_if,
                &db_if,
            );
            assert_eq!(evaluate(&rs, &p).unwrap().verdict, Verdict::Accept);
        }
        // db's egress to anything but web:8080 is dropped, whichever name it leaves by.
        for db_if in names_of(&db()) {
            let p = Packet::new(
                ip("10.0.1.2"),
                ip("10.0.2.1"),
                Protocol::Tcp,
                8080,
                &db_if,
                "eth0",
            );
            assert_eq!(evaluate(&rs, &p).unwrap().verdict, Verdict::Drop, "{db_if}");
        }
    }
    // A name under a prefix that is not configured is not ours: left alone.
    let stranger = interface_name("tap", &web());
    let p = Packet::new(
        ip("10.0.2.1"),
        ip("10.0.1.1"),
        Protocol::Tcp,
        80,
        "eth0",
        &stranger,
    );
    assert_eq!(evaluate(&rs, &p).unwrap().verdict, Verdict::NoVerdict);
    // The single-prefix ruleset leaves the alias alone too.
    let one = ruleset(&["pal"]);
    let p = Packet::new(
        ip("10.0.2.1"),
        ip("10.0.1.1"),
        Protocol::Tcp,
        80,
        "eth0",
        &interface_name("cali", &web()),
    );
    assert_eq!(evaluate(&one, &p).unwrap().verdict, Verdict::NoVerdict);
}
