//! Staged policies in the rendered rules: only endpoints that a staged policy selects get a
//! staged-evaluation chain; the enforced verdict stays; the interpreter sees the staged drop
//! (would-drop) and staged allow logs with their keys; snapshots of both backends.

mod common;

use palisade_model::{Cluster, Direction, EndpointId};
use palisade_render::interp::{evaluate, Packet, Verdict};
use palisade_render::ir::{Action, Ruleset};
use palisade_render::names::{self, drop_log_prefix, DropSite};
use palisade_render::{build, iptables, nft, RenderConfig};

const BASE: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec: {nodeName: node-1, containers: [{name: c, ports: [{containerPort: 80}]}]}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default, labels: {app: client}}
spec: {nodeName: node-1}
status: {podIP: 10.0.0.3}
"#;

fn deny_all(staged: &str) -> String {
    format!(
        r#"
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: web-deny-all, namespace: default, annotations: {{palisade.dev/staged: "{staged}"}}}}
spec: {{podSelector: {{matchLabels: {{app: web}}}}, policyTypes: [Ingress]}}
"#
    )
}

const ALLOW_CLIENT_STAGED: &str = r#"
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-allow-client, namespace: default, annotations: {palisade.dev/staged: "true"}}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}]}]
"#;

const ADMIN_DENY_STAGED: &str = r#"
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: no-web, annotations: {palisade.dev/staged: "true"}}
spec:
  tier: Admin
  priority: 10
  subject: {pods: {podSelector: {matchLabels: {app: web}}}}
  ingress: [{action: Deny, from: [{pods: {podSelector: {matchLabels: {app: client}}}}]}]
"#;

fn cluster(extra: &str) -> Cluster {
    common::cluster_from_yaml(&format!("{BASE}{extra}"))
}

fn cfg() -> RenderConfig {
    RenderConfig {
        drop_log_group: Some(2),
        ..RenderConfig::default()
    }
}

fn ruleset(c: &Cluster, cfg: &RenderConfig) -> (Ruleset, palisade_calc::DesiredState) {
    let state = common::state(c, "node-1");
    (build(&state, cfg).unwrap(), state)
}

fn web() -> EndpointId {
    EndpointId::new("default", "web")
}

/// client → web:80 (both on node-1: the client's egress chain, then web's ingress chain).
fn client_to_web(rs: &Ruleset, state: &palisade_calc::DesiredState) -> (Verdict, Vec<String>) {
    let iface = |n: &str| {
        state.endpoints[&EndpointId::new("default", n)]
            .iface
            .clone()
    };
    let pkt = Packet::new(
        "10.0.0.3".parse().unwrap(),
        "10.0.0.2".parse().unwrap(),
        palisade_model::Protocol::Tcp,
        80,
        &iface("client"),
        &iface("web"),
    );
    let out = evaluate(rs, &pkt).unwrap();
    (out.verdict, out.logs)
}

fn staged_drop(endpoint: &EndpointId) -> String {
    drop_log_prefix(DropSite::StagedDrop {
        direction: Direction::Ingress,
        endpoint,
    })
}

#[test]
fn a_staged_deny_all_passes_the_packet_and_logs_a_would_drop() {
    let (rs, state) = ruleset(&cluster(&deny_all("true")), &cfg());
    let (verdict, logs) = client_to_web(&rs, &state);
    assert_eq!(verdict, Verdict::Accept);
    assert_eq!(logs, vec![staged_drop(&web())]);
    // The staged policy has no enforced chain; only web's ingress has a staged chain.
    let pid = &state.policies.keys().next().unwrap().clone();
    assert!(rs
        .chain(&names::policy_chain(Direction::Ingress, pid))
        .is_none());
    assert!(rs
        .chain(&names::staged_policy_chain(Direction::Ingress, pid))
        .is_some());
    let staged_chains: Vec<&str> = rs
        .chains
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| n.starts_with("pal-st-") || n.starts_with("pal-sf-"))
        .collect();
    let web_iface = &state.endpoints[&web()].iface;
    assert_eq!(
        staged_chains,
        vec![names::staged_endpoint_chain(Direction::Ingress, web_iface)]
    );
    // The client's chains pay nothing: no jump to a staged chain, no staged log.
    let client_iface = &state.endpoints[&EndpointId::new("default", "client")].iface;
    for dir in [Direction::Ingress, Direction::Egress] {
        let chain = rs.chain(&names::endpoint_chain(dir, client_iface)).unwrap();
        let plain = ruleset(&cluster(""), &cfg()).0;
        assert_eq!(
            chain.rules,
            plain
                .chain(&names::endpoint_chain(dir, client_iface))
                .unwrap()
                .rules
        );
    }
}

#[test]
fn the_annotation_removed_enforces_the_policy() {
    let (rs, state) = ruleset(&cluster(&deny_all("false")), &cfg());
    let (verdict, logs) = client_to_web(&rs, &state);
    assert_eq!(verdict, Verdict::Drop);
    assert_eq!(
        logs,
        vec![drop_log_prefix(DropSite::EndOfTier {
            direction: Direction::Ingress,
            endpoint: &web(),
            tier: "default",
        })]
    );
    assert!(!rs.chains.iter().any(|c| c.name.starts_with("pal-st-")));
}

#[test]
fn an_enforced_deny_the_staged_set_would_allow_logs_a_staged_allow_instead() {
    let c = cluster(&format!("{}{ALLOW_CLIENT_STAGED}", deny_all("false")));
    let (rs, state) = ruleset(&c, &cfg());
    let (verdict, logs) = client_to_web(&rs, &state);
    assert_eq!(verdict, Verdict::Drop);
    assert_eq!(
        logs,
        vec![drop_log_prefix(DropSite::StagedAllow {
            direction: Direction::Ingress,
            endpoint: &web(),
            tier: "default",
        })]
    );
}

#[test]
fn a_staged_deny_rule_marks_instead_of_dropping() {
    let (rs, state) = ruleset(&cluster(ADMIN_DENY_STAGED), &cfg());
    let (verdict, logs) = client_to_web(&rs, &state);
    assert_eq!(verdict, Verdict::Accept);
    assert_eq!(logs, vec![staged_drop(&web())]);
    let staged = rs
        .chains
        .iter()
        .find(|c| c.name.starts_with("pal-si-"))
        .unwrap();
    assert!(staged
        .rules
        .iter()
        .all(|r| !matches!(r.action, Action::Drop | Action::Log { .. })));
}

#[test]
fn without_drop_logging_nothing_staged_is_rendered() {
    let cfg = RenderConfig {
        drop_log_group: None,
        ..RenderConfig::default()
    };
    let (rs, state) = ruleset(&cluster(&deny_all("true")), &cfg);
    assert_eq!(client_to_web(&rs, &state), (Verdict::Accept, vec![]));
    assert!(!rs.chains.iter().any(|c| c.name.starts_with("pal-st-")));
}

#[test]
fn snapshot_of_a_staged_deny_all() {
    let (rs, _) = ruleset(&cluster(&deny_all("true")), &cfg());
    let t = iptables::render(&rs, true);
    insta::assert_snapshot!("staged-deny-all-iptables", t.v4.unwrap_or_default());
    insta::assert_snapshot!("staged-deny-all-nftables", nft::render(&rs));
}
