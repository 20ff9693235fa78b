//! Drop logging in both backends: a rate-limited NFLOG rule right before every drop policy
//! causes (the end of each tier of an endpoint chain, each alternative of a Deny rule), with
//! the drop's key in its prefix; none when drop logging is off.

mod common;

use palisade_model::{Action, Direction, PolicyId, PortMatch, PortSpec, Protocol, Rule, Selector};
use palisade_render::ir::{Action as IrAction, Match};
use palisade_render::names::{self, DropSite};
use palisade_render::{build, iptables, nft, RenderConfig};

/// The small scenario plus an admin-tier policy on every pod whose egress rule 1 denies UDP
/// 53 and 5353.
fn cluster() -> palisade_model::Cluster {
    let mut c = common::place(
        common::cluster_from_yaml(common::SMALL),
        &["node-1", "node-2"],
        false,
    );
    let port = |p| PortSpec {
        protocol: Protocol::Udp,
        port: PortMatch::Range { start: p, end: p },
    };
    c.upsert_policy(palisade_model::Policy {
        id: deny_id(),
        order: 10,
        selector: Selector::All,
        namespace_selector: Selector::All,
        staged: false,
        ingress: None,
        egress: Some(vec![
            Rule {
                action: Action::Pass,
                peers: vec![],
                ports: vec![],
            },
            Rule {
                action: Action::Deny,
                peers: vec![],
                ports: vec![port(53), port(5353)],
            },
        ]),
    });
    c
}

fn deny_id() -> PolicyId {
    PolicyId {
        tier: "admin".into(),
        namespace: None,
        name: "no-dns".into(),
    }
}

#[test]
fn every_policy_drop_is_logged_first_with_a_limit() {
    let state = common::state(&cluster(), "node-1");
    let cfg = RenderConfig {
        drop_log_group: Some(2),
        drop_log_rate: 50,
        ..RenderConfig::default()
    };
    let rs = build(&state, &cfg).unwrap();
    let mut drops = 0;
    for chain in &rs.chains {
        let endpoint_chain = chain.name.starts_with("pal-tw-") || chain.name.starts_with("pal-fw-");
        let policy_chain = chain.name == names::policy_chain(Direction::Egress, &deny_id());
        if !endpoint_chain && !policy_chain {
            continue;
        }
        for (i, r) in chain.rules.iter().enumerate() {
            if r.action != IrAction::Drop {
                continue;
            }
            drops += 1;
            let log = &chain.rules[i - 1];
            let IrAction::Log { group, prefix } = &log.action else {
                panic!("{}: drop {i} without a log rule before it", chain.name);
            };
            assert_eq!(*group, 2);
            assert!(names::drop_key_of_prefix(prefix).is_some(), "{prefix}");
            assert!(prefix.len() <= names::MAX_LOG_PREFIX);
            // Same matches, plus the limit.
            let mut want = r.matches.clone();
            want.push(Match::Limit {
                per_second: 50,
                burst: 50,
            });
            assert_eq!(log.matches, want, "{}", chain.name);
        }
    }
    assert!(drops > 0);
    // The Deny rule: one log and one drop per port alternative, keyed by rule 1.
    let deny_prefix = names::drop_log_prefix(DropSite::DenyRule {
        direction: Direction::Egress,
        policy: &deny_id(),
        rule: 1,
    });
    let t = iptables::render(&rs, true);
    let v4 = t.v4.unwrap();
    let line = v4
        .lines()
        .find(|l| l.contains(&deny_prefix))
        .unwrap_or_else(|| panic!("no Deny log rule in\n{v4}"));
    assert!(
        line.contains("-p udp -m udp --dport 53")
            || line.contains("-p udp -m multiport --dports 53,5353"),
        "{line}"
    );
    assert!(line.contains("-m limit --limit 50/sec --limit-burst 50 -j NFLOG --nflog-group 2"));
    let script = nft::render(&rs);
    let line = script
        .lines()
        .find(|l| l.contains(&deny_prefix))
        .unwrap_or_else(|| panic!("no Deny log rule in\n{script}"));
    assert!(
        line.contains("limit rate 50/second burst 50 packets") && line.contains("group 2"),
        "{line}"
    );
}

#[test]
fn nothing_is_logged_when_drop_logging_is_off() {
    let state = common::state(&cluster(), "node-1");
    let rs = build(&state, &RenderConfig::default()).unwrap();
    for chain in &rs.chains {
        for r in &chain.rules {
            if let IrAction::Log { prefix, .. } = &r.action {
                panic!("{}: log rule {prefix}", chain.name);
            }
        }
    }
}

#[test]
fn a_zero_rate_means_no_limit() {
    let state = common::state(&cluster(), "node-1");
    let cfg = RenderConfig {
        drop_log_group: Some(2),
        drop_log_rate: 0,
        ..RenderConfig::default()
    };
    let rs = build(&state, &cfg).unwrap();
    let logs: Vec<_> = rs
        .chains
        .iter()
        .flat_map(|c| &c.rules)
        .filter(|r| matches!(r.action, IrAction::Log { .. }))
        .collect();
    assert!(!logs.is_empty());
    assert!(logs
        .iter()
        .all(|r| !r.matches.iter().any(|m| matches!(m, Match::Limit { .. }))));
}
