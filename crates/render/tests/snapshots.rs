//! Snapshot tests (insta) of complete rendered rulesets, both backends, for the repository's
//! example scenarios (placed on two nodes with addresses; rendered for `node-1`) and the small
//! in-code scenario. Review changes with `cargo insta review` (or `INSTA_UPDATE=always`).

mod common;

use palisade_model::Cluster;
use palisade_render::config::EndpointMatch;
use palisade_render::{build, iptables, nft, RenderConfig};

fn full_text(cluster: &Cluster) -> (String, String) {
    full_text_with(cluster, EndpointMatch::Address)
}

fn full_text_with(cluster: &Cluster, endpoint_match: EndpointMatch) -> (String, String) {
    let state = common::state(cluster, "node-1");
    let cfg = RenderConfig {
        drop_log_group: Some(5),
        endpoint_match,
        ..RenderConfig::default()
    };
    let rs = build(&state, &cfg).unwrap();
    let t = iptables::render(&rs, true);
    let ipt = format!(
        "# ipset restore\n{}# iptables-restore --noflush\n{}# ip6tables-restore --noflush\n{}",
        t.ipset,
        t.v4.unwrap_or_default(),
        t.v6.unwrap_or_default()
    );
    (ipt, nft::render(&rs))
}

/// Address matching (the default) under `name`, interface matching under `name-iface`.
fn check(name: &str, cluster: &Cluster) {
    let (ipt, nft) = full_text(cluster);
    insta::assert_snapshot!(format!("{name}-iptables"), ipt);
    insta::assert_snapshot!(format!("{name}-nftables"), nft);
    let (ipt, nft) = full_text_with(cluster, EndpointMatch::Interface);
    insta::assert_snapshot!(format!("{name}-iface-iptables"), ipt);
    insta::assert_snapshot!(format!("{name}-iface-nftables"), nft);
}

#[test]
fn small() {
    check("small", &common::cluster_from_yaml(common::SMALL));
}

#[test]
fn seed() {
    check(
        "seed",
        &common::place(common::example("seed"), &["node-1", "node-2"], true),
    );
}

#[test]
fn three_tier() {
    check(
        "three-tier",
        &common::place(common::example("three-tier"), &["node-1", "node-2"], false),
    );
}

#[test]
fn named_ports() {
    check(
        "named-ports",
        &common::place(common::example("named-ports"), &["node-1", "node-2"], false),
    );
}

#[test]
fn rendering_is_deterministic() {
    let c = common::place(common::example("three-tier"), &["node-1"], true);
    assert_eq!(full_text(&c), full_text(&c.clone()));
}
