//! Unit tests of the plan: dispatch edits replayed on `-A` lines, shared ipBlock sets.

use std::collections::BTreeMap;

use palisade_calc::{ActivePolicy, Delta, DesiredState, EndpointTiers, LocalEndpoint, RulePeer};
use palisade_model::EndpointId;

use super::*;
use crate::build::build;

/// Pods named by one letter each; a pod's addresses follow from its name (`10.0.0.97` and
/// `fd00::61` for `a`), so a pod keeps them from one state to the next.
fn state(pods: &[&str]) -> DesiredState {
    let mut s = DesiredState::default();
    for pod in pods {
        let i = usize::from(pod.as_bytes()[0]) - 1;
        let id = EndpointId::new("ns", *pod);
        let ep = LocalEndpoint {
            id: id.clone(),
            iface: format!("cali{pod}"),
            iface_aliases: vec![],
            ips: vec![
                format!("10.0.0.{}", i + 1).parse().unwrap(),
                format!("fd00::{:x}", i + 1).parse().unwrap(),
            ],
            tiers: EndpointTiers::default(),
        };
        s.endpoints.insert(id, ep);
    }
    s
}

/// What `iptables-restore --noflush` does with our text, on chains held as `-A` lines.
fn restore(chains: &mut BTreeMap<String, Vec<String>>, text: &str) {
    for line in text.lines() {
        if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split(' ').next().unwrap().to_string();
            chains.insert(name, Vec::new());
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let chain = rest.split(' ').next().unwrap();
            chains.get_mut(chain).unwrap().push(line.to_string());
        } else if let Some(rest) = line.strip_prefix("-D ") {
            let chain = rest.split(' ').next().unwrap();
            let rules = chains.get_mut(chain).unwrap();
            let want = format!("-A {rest}");
            let at = rules
                .iter()
                .position(|r| *r == want)
                .expect("-D names a rule");
            rules.remove(at);
        } else if let Some(rest) = line.strip_prefix("-I ") {
            let mut parts = rest.splitn(3, ' ');
            let (chain, pos, spec) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            let pos: usize = pos.parse().unwrap();
            let rules = chains.get_mut(chain).unwrap();
            assert!(pos >= 1 && pos <= rules.len() + 1, "{line}");
            rules.insert(pos - 1, format!("-A {chain} {spec}"));
        } else if let Some(chain) = line.strip_prefix("-X ") {
            assert!(chains.remove(chain).is_some(), "{line}");
        }
    }
}

fn iface_cfg() -> RenderConfig {
    RenderConfig {
        endpoint_match: EndpointMatch::Interface,
        ..RenderConfig::default()
    }
}

fn full(s: &DesiredState, f: Family) -> BTreeMap<String, Vec<String>> {
    full_with(s, f, &iface_cfg())
}

fn full_with(s: &DesiredState, f: Family, cfg: &RenderConfig) -> BTreeMap<String, Vec<String>> {
    let rs = build(s, cfg).unwrap();
    let mut chains = BTreeMap::new();
    restore(&mut chains, &iptables::filter_table(&rs, f, false));
    chains
}

/// Each line of `pal-FORWARD` as its kind (`-i` dispatch, `-o` dispatch, other): the
/// order of kinds is what the layout needs, the order inside a block is free.
fn kinds(rules: &[String]) -> Vec<&'static str> {
    let mut k: Vec<&str> = rules
        .iter()
        .map(|r| match () {
            _ if r.contains(" -i ") || r.contains(" -s ") => "fw",
            _ if r.contains(" -o ") || r.contains(" -d ") => "tw",
            _ => "other",
        })
        .collect();
    k.dedup();
    k
}

fn with_block_policies(names: &[&str]) -> DesiredState {
    let mut s = DesiredState::default();
    for name in names {
        let id = PolicyId {
            tier: "default".into(),
            namespace: Some("ns".into()),
            name: name.to_string(),
        };
        let rule = palisade_calc::CompiledRule {
            action: palisade_model::Action::Allow,
            peers: vec![RulePeer::Cidr {
                cidr: "10.0.0.0/8".parse().unwrap(),
                // Unsorted and spelled differently per policy: still one set.
                except: if name.ends_with('1') {
                    vec![
                        "10.1.0.0/16".parse().unwrap(),
                        "10.2.0.0/16".parse().unwrap(),
                    ]
                } else {
                    vec![
                        "10.2.0.7/16".parse().unwrap(),
                        "10.1.0.0/16".parse().unwrap(),
                    ]
                },
            }],
            ports: vec![],
        };
        let p = ActivePolicy {
            id: id.clone(),
            order: 1,
            staged: false,
            ingress: Some(vec![rule]),
            egress: None,
        };
        s.policies.insert(id, p);
    }
    s
}

#[test]
fn a_shared_ipblock_set_lives_while_any_policy_uses_it() {
    let cfg = RenderConfig::default();
    let step = |from: &[&str], to: &[&str]| {
        let (prev, next) = (with_block_policies(from), with_block_policies(to));
        let deltas: Vec<Delta> = from
            .iter()
            .chain(to)
            .map(|n| {
                let id = PolicyId {
                    tier: "default".into(),
                    namespace: Some("ns".into()),
                    name: n.to_string(),
                };
                if to.contains(n) {
                    Delta::PolicyChanged { id }
                } else {
                    Delta::PolicyRemoved { id }
                }
            })
            .collect();
        let p = plan(&prev, &next, &deltas, &cfg).unwrap();
        (p.set_creates.len(), p.set_destroys.len())
    };
    assert_eq!(step(&[], &["p1"]), (1, 0));
    assert_eq!(step(&["p1"], &["p1", "p2"]), (0, 0));
    assert_eq!(step(&["p1", "p2"], &["p2"]), (0, 0));
    assert_eq!(step(&["p2"], &[]), (0, 1));
    assert_eq!(step(&[], &["p1", "p2"]), (1, 0));
    assert_eq!(step(&["p1", "p2"], &[]), (0, 1));
}

#[test]
fn endpoint_adds_and_removes_edit_single_dispatch_lines() {
    for cfg in [RenderConfig::default(), iface_cfg()] {
        adds_and_removes_edit_single_dispatch_lines(&cfg);
    }
}

fn adds_and_removes_edit_single_dispatch_lines(cfg: &RenderConfig) {
    let steps: [(&[&str], &[&str]); 4] = [
        (&["b", "d"], &["a", "b", "c", "d", "e"]),
        (&["a", "b", "c", "d", "e"], &["b", "e", "f"]),
        (&["b", "e", "f"], &[]),
        (&[], &["x"]),
    ];
    for (from, to) in steps {
        let (prev, next) = (state(from), state(to));
        let mut deltas = Vec::new();
        for id in next.endpoints.keys() {
            if !prev.endpoints.contains_key(id) {
                deltas.push(Delta::EndpointChanged { id: id.clone() });
            }
        }
        for id in prev.endpoints.keys() {
            if !next.endpoints.contains_key(id) {
                deltas.push(Delta::EndpointRemoved { id: id.clone() });
            }
        }
        let d = iptables(&prev, &next, &deltas, cfg).unwrap();
        for (f, text) in [(Family::V4, &d.v4), (Family::V6, &d.v6)] {
            let text = text.as_deref().unwrap();
            assert!(!text.contains(":pal-FORWARD"), "{text}");
            let mut got = full_with(&prev, f, cfg);
            restore(&mut got, text);
            let want = full_with(&next, f, cfg);
            assert_eq!(
                got.keys().collect::<Vec<_>>(),
                want.keys().collect::<Vec<_>>()
            );
            for (name, rules) in &want {
                let mine = &got[name];
                if name == names::FORWARD_CHAIN {
                    let (mut a, mut b) = (mine.clone(), rules.clone());
                    a.sort();
                    b.sort();
                    assert_eq!(a, b, "{from:?} -> {to:?}\n{text}");
                    assert_eq!(kinds(mine), kinds(rules), "{mine:#?}");
                } else {
                    assert_eq!(mine, rules, "{name}");
                }
            }
        }
    }
}

/// [`state`] with each pod's interface also named under the alias prefixes `aliases`.
fn aliased(pods: &[&str], aliases: &[&str]) -> DesiredState {
    let mut s = state(pods);
    for ep in s.endpoints.values_mut() {
        ep.iface_aliases = aliases
            .iter()
            .map(|a| format!("{a}{}", ep.id.name))
            .collect();
    }
    s
}

/// The verdict maps as the full ruleset fills them: (map, iface) → chain.
fn maps_of(s: &DesiredState) -> BTreeMap<(String, String), String> {
    maps_with(s, &iface_cfg())
}

fn maps_with(s: &DesiredState, cfg: &RenderConfig) -> BTreeMap<(String, String), String> {
    let fwd = forward_chain(s, cfg);
    let mut out = BTreeMap::new();
    for r in &fwd.rules {
        if let Action::Dispatch { map, targets, .. } = &r.action {
            for (i, c) in targets {
                out.insert((map.clone(), i.clone()), c.clone());
            }
        }
    }
    out
}

#[test]
fn aliases_are_dispatched_and_edited_like_primary_names() {
    let cfg = iface_cfg();
    // (pods, alias prefixes) before → after: endpoints come and go with their aliases, and an
    // endpoint gains or loses an alias while its primary name (and so its chains) stays.
    type Step<'a> = (
        (&'a [&'a str], &'a [&'a str]),
        (&'a [&'a str], &'a [&'a str]),
    );
    let steps: [Step; 5] = [
        ((&[], &[]), (&["a", "b"], &["pal"])),
        ((&["a", "b"], &["pal"]), (&["a", "b", "c"], &["pal", "tap"])),
        ((&["a", "b", "c"], &["pal", "tap"]), (&["b", "c"], &["tap"])),
        ((&["b", "c"], &["tap"]), (&["b", "c"], &[])),
        ((&["b", "c"], &[]), (&[], &[])),
    ];
    for ((from, fa), (to, ta)) in steps {
        let (prev, next) = (aliased(from, fa), aliased(to, ta));
        let deltas: Vec<Delta> = prev
            .endpoints
            .keys()
            .chain(next.endpoints.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|id| match next.endpoints.contains_key(id) {
                true => Delta::EndpointChanged { id: id.clone() },
                false => Delta::EndpointRemoved { id: id.clone() },
            })
            .collect();
        // nftables: the map edits turn the old maps into the new ones.
        let p = plan(&prev, &next, &deltas, &cfg).unwrap();
        let mut maps = maps_of(&prev);
        for (map, iface, _) in &p.dispatch_dels {
            assert!(
                maps.remove(&(map.clone(), iface.clone())).is_some(),
                "{iface}"
            );
        }
        for (map, iface, chain) in &p.dispatch_adds {
            let old = maps.insert((map.clone(), iface.clone()), chain.clone());
            assert!(old.is_none(), "{iface} added twice");
        }
        assert_eq!(maps, maps_of(&next), "{from:?}/{fa:?} -> {to:?}/{ta:?}");
        // Every name of an endpoint leads to the chains of its primary name.
        for ep in next.endpoints.values() {
            for a in &ep.iface_aliases {
                assert_eq!(
                    maps[&(names::FROM_WORKLOAD_MAP.to_string(), a.clone())],
                    names::endpoint_chain(palisade_model::Direction::Egress, &ep.iface)
                );
            }
        }
        // iptables: the single-line edits give the full render's pal-FORWARD.
        let d = iptables(&prev, &next, &deltas, &cfg).unwrap();
        let text = d.v4.as_deref().unwrap();
        let mut got = full(&prev, Family::V4);
        restore(&mut got, text);
        let mut want = full(&next, Family::V4);
        let (mut a, mut b) = (
            got.remove(names::FORWARD_CHAIN).unwrap(),
            want.remove(names::FORWARD_CHAIN).unwrap(),
        );
        assert_eq!(kinds(&a), kinds(&b), "{a:#?}");
        a.sort();
        b.sort();
        assert_eq!(a, b, "{text}");
        assert_eq!(got, want, "the endpoint chains");
    }
}

#[test]
fn an_alias_shared_with_another_endpoint_is_refused() {
    let mut next = aliased(&["a", "b"], &[]);
    let b = EndpointId::new("ns", "b");
    next.endpoints.get_mut(&b).unwrap().iface_aliases = vec!["calia".into()];
    let deltas = vec![Delta::EndpointChanged { id: b }];
    let prev = aliased(&["a", "b"], &[]);
    let err = plan(&prev, &next, &deltas, &RenderConfig::default()).unwrap_err();
    assert!(
        matches!(&err, RenderError::DuplicateInterface { iface, .. } if iface == "calia"),
        "{err}"
    );
    assert!(matches!(
        build(&next, &RenderConfig::default()),
        Err(RenderError::DuplicateInterface { .. })
    ));
}

#[test]
fn an_address_shared_by_two_endpoints_is_refused_in_address_mode() {
    let prev = state(&["a", "b"]);
    let mut next = prev.clone();
    let b = EndpointId::new("ns", "b");
    next.endpoints.get_mut(&b).unwrap().ips = vec!["10.0.0.97".parse().unwrap()];
    let deltas = vec![Delta::EndpointChanged { id: b }];
    let err = plan(&prev, &next, &deltas, &RenderConfig::default()).unwrap_err();
    assert!(
        matches!(&err, RenderError::DuplicateAddress { addr, .. } if addr == "10.0.0.97"),
        "{err}"
    );
    assert!(matches!(
        build(&next, &RenderConfig::default()),
        Err(RenderError::DuplicateAddress { .. })
    ));
    // Interface matching does not care.
    plan(&prev, &next, &[], &iface_cfg()).unwrap();
    build(&next, &iface_cfg()).unwrap();
}

#[test]
fn address_changes_edit_only_their_map_entries() {
    let cfg = RenderConfig::default();
    let prev = state(&["a", "b"]);
    let mut next = prev.clone();
    let a = EndpointId::new("ns", "a");
    // a loses its v6 address and gains another v4 one: chains stay, two entries per side.
    next.endpoints.get_mut(&a).unwrap().ips =
        vec!["10.0.0.97".parse().unwrap(), "10.0.9.9".parse().unwrap()];
    let deltas = vec![Delta::EndpointChanged { id: a }];
    let p = plan(&prev, &next, &deltas, &cfg).unwrap();
    assert!(
        p.chains_new.is_empty() && p.chains_delete.is_empty(),
        "{p:?}"
    );
    assert_eq!(p.chains_rewrite.len(), 2);
    let keys = |l: &[(String, String, String)]| -> Vec<(String, String)> {
        l.iter().map(|(m, k, _)| (m.clone(), k.clone())).collect()
    };
    assert_eq!(
        keys(&p.dispatch_dels),
        vec![
            (
                names::FROM_WORKLOAD_MAP6.to_string(),
                "fd00::61".to_string()
            ),
            (names::TO_WORKLOAD_MAP6.to_string(), "fd00::61".to_string()),
        ]
    );
    assert_eq!(
        keys(&p.dispatch_adds),
        vec![
            (
                names::FROM_WORKLOAD_MAP4.to_string(),
                "10.0.9.9".to_string()
            ),
            (names::TO_WORKLOAD_MAP4.to_string(), "10.0.9.9".to_string()),
        ]
    );
    let mut maps = maps_with(&prev, &cfg);
    for (m, k, _) in &p.dispatch_dels {
        assert!(maps.remove(&(m.clone(), k.clone())).is_some());
    }
    for (m, k, c) in &p.dispatch_adds {
        assert!(maps.insert((m.clone(), k.clone()), c.clone()).is_none());
    }
    assert_eq!(maps, maps_with(&next, &cfg));
    // The nft script edits the address maps with bare addresses.
    let text = nft_text(&p);
    assert!(
        text.contains("delete element inet palisade pal-fw-map6 { fd00::61 }"),
        "{text}"
    );
    assert!(
        text.contains("add element inet palisade pal-tw-map4 { 10.0.9.9 : jump pal-tw-calia }"),
        "{text}"
    );
    // iptables: per-address lines in the family's own table.
    let d = iptables(&prev, &next, &deltas, &cfg).unwrap();
    for (f, text) in [(Family::V4, d.v4.unwrap()), (Family::V6, d.v6.unwrap())] {
        let mut got = full_with(&prev, f, &cfg);
        restore(&mut got, &text);
        let want = full_with(&next, f, &cfg);
        let (mut x, mut y) = (
            got[names::FORWARD_CHAIN].clone(),
            want[names::FORWARD_CHAIN].clone(),
        );
        assert_eq!(kinds(&x), kinds(&y));
        x.sort();
        y.sort();
        assert_eq!(x, y, "{text}");
    }
}
