//! Rule counts do not grow with remote pods: they only grow set memberships. And more ports
//! than one multiport match holds are split.

mod common;

use palisade_model::{Endpoint, EndpointId};
use palisade_render::ir::Match;
use palisade_render::{build, nft, RenderConfig};

fn rule_lines(c: &palisade_model::Cluster) -> (usize, usize) {
    let rs = build(&common::state(c, "node-1"), &RenderConfig::default()).unwrap();
    let script = nft::render(&rs);
    let members: usize = rs.sets.iter().map(|s| s.members.len()).sum();
    (
        script
            .lines()
            .filter(|l| l.starts_with("add rule "))
            .count(),
        members,
    )
}

#[test]
fn remote_pods_add_set_members_not_rules() {
    let mut c = common::cluster_from_yaml(common::SMALL);
    let (rules, members) = rule_lines(&c);
    let client = c
        .endpoint(&EndpointId::new("prod", "client"))
        .unwrap()
        .clone();
    for i in 0..200 {
        c.upsert_endpoint(Endpoint {
            id: EndpointId::new("prod", format!("client-{i}")),
            ips: vec![format!("10.0.{}.{}", 3 + i / 250, i % 250 + 1)
                .parse()
                .unwrap()],
            ..client.clone()
        });
    }
    let (rules_after, members_after) = rule_lines(&c);
    assert_eq!(rules, rules_after);
    assert_eq!(members_after, members + 200);
}

#[test]
fn multiport_is_split_at_fifteen_slots() {
    let c = common::cluster_from_yaml(common::MANY_PORTS);
    let rs = build(&common::state(&c, "node-1"), &RenderConfig::default()).unwrap();
    let port_matches: Vec<usize> = rs
        .chains
        .iter()
        .flat_map(|c| &c.rules)
        .flat_map(|r| &r.matches)
        .filter_map(|m| match m {
            Match::DstPorts(p) => Some(p.iter().map(|r| r.slots()).sum()),
            _ => None,
        })
        .collect();
    // 9 singles + 5 ranges = 19 TCP slots → 15 + 4; UDP and SCTP one each; IPv4 and IPv6
    // share the rules (no family-specific match).
    let mut sorted = port_matches.clone();
    sorted.sort();
    assert_eq!(sorted, vec![1, 1, 4, 15], "{port_matches:?}");
}
