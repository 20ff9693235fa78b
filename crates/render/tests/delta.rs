//! Incremental rendering: for random cluster changes driven through the real `Calculator`,
//! the [`Plan`] applied to the previous ruleset gives exactly the next ruleset, never naming
//! a missing chain or set on the way; and small changes render to small text.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::gen::{cluster, NODE};
use palisade_calc::{
    CalcConfig, Calculator, Delta, DesiredState, IpSet, IpSetId, IpSetKind, IpSetMember, Update,
};
use palisade_model::{Cluster, EndpointId};
use palisade_render::delta::{self, Plan};
use palisade_render::ir::{Action, Chain, Match, Ruleset, SetEntry};
use palisade_render::{build, NftLayout, RenderConfig};
use proptest::prelude::*;

/// The kernel as the IR sees it: sets with members, chains with rules, and the nftables
/// verdict maps ((map, interface) → chain).
#[derive(Debug, PartialEq)]
struct Model {
    sets: BTreeMap<String, BTreeSet<SetEntry>>,
    chains: BTreeMap<String, Chain>,
    maps: BTreeMap<(String, String), String>,
}

impl Model {
    fn of(rs: &Ruleset) -> Model {
        Model {
            sets: rs
                .sets
                .iter()
                .map(|s| (s.set.name.clone(), s.members.iter().cloned().collect()))
                .collect(),
            chains: rs
                .chains
                .iter()
                .map(|c| (c.name.clone(), c.clone()))
                .collect(),
            maps: rs
                .chains
                .iter()
                .flat_map(|c| &c.rules)
                .filter_map(|r| match &r.action {
                    Action::Dispatch { map, targets, .. } => Some((map, targets)),
                    _ => None,
                })
                .flat_map(|(map, targets)| {
                    targets
                        .iter()
                        .map(move |(i, c)| ((map.clone(), i.clone()), c.clone()))
                })
                .collect(),
        }
    }

    /// Every jump target and every set a rule names exists.
    fn check_refs(&self, when: &str) -> Result<(), String> {
        for c in self.chains.values() {
            for r in &c.rules {
                let mut targets = Vec::new();
                match &r.action {
                    Action::Jump(t) | Action::Goto(t) => targets.push(t.clone()),
                    Action::Dispatch { targets: ts, .. } => {
                        targets.extend(ts.iter().map(|(_, t)| t.clone()))
                    }
                    _ => {}
                }
                for t in targets {
                    if !self.chains.contains_key(&t) {
                        return Err(format!("{when}: {} jumps to missing {t}", c.name));
                    }
                }
                for m in &r.matches {
                    if let Match::Set { set, .. } = m {
                        if !self.sets.contains_key(&set.name) {
                            return Err(format!(
                                "{when}: {} names missing set {}",
                                c.name, set.name
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies a plan in the order the backends write it (iptables flavour: `pal-FORWARD`
    /// is rewritten when the dispatch changes; nftables flavour: the map entries are edited).
    fn apply(&mut self, p: &Plan) -> Result<(), String> {
        for (map, iface, _) in &p.dispatch_dels {
            self.maps
                .remove(&(map.clone(), iface.clone()))
                .ok_or(format!("delete of missing {map} element {iface}"))?;
        }
        for (map, iface, chain) in &p.dispatch_adds {
            if let Some(old) = self
                .maps
                .insert((map.clone(), iface.clone()), chain.clone())
            {
                return Err(format!("{map} element {iface} added over {old}"));
            }
        }
        for s in &p.set_creates {
            self.sets
                .insert(s.set.name.clone(), s.members.iter().cloned().collect());
        }
        for s in &p.set_fills {
            let set = self
                .sets
                .get_mut(&s.set.name)
                .ok_or(format!("fill of missing set {}", s.set.name))?;
            *set = s.members.iter().cloned().collect();
        }
        for (s, e) in &p.member_adds {
            self.sets
                .get_mut(&s.name)
                .ok_or(format!("add to missing set {}", s.name))?
                .insert(e.clone());
        }
        for (s, e) in &p.member_dels {
            self.sets
                .get_mut(&s.name)
                .ok_or(format!("del from missing set {}", s.name))?
                .remove(e);
        }
        for c in p
            .chains_new
            .iter()
            .chain(&p.chains_rewrite)
            .chain(&p.forward)
        {
            self.chains.insert(c.name.clone(), c.clone());
        }
        for c in &p.chains_delete {
            // Flushed first: a deleted chain refers to nothing any more.
            if let Some(ch) = self.chains.get_mut(c) {
                ch.rules.clear();
            }
        }
        self.check_refs("after chains")?;
        for c in &p.chains_delete {
            self.chains.remove(c);
        }
        self.check_refs("after chain deletes")?;
        for s in &p.set_destroys {
            self.sets.remove(&s.name);
        }
        self.check_refs("after set destroys")
    }
}

/// Interface prefix lists, the first primary.
const PREFIXES: [&[&str]; 3] = [&["pal"], &["cali", "pal"], &["pal", "cali", "tap"]];

fn updates_between(old: &Cluster, new: &Cluster) -> Vec<Update> {
    let mut u = Vec::new();
    for t in &new.tiers {
        u.push(Update::TierUpsert(t.clone()));
    }
    for ns in new.namespaces.values() {
        u.push(Update::NamespaceUpsert(ns.clone()));
    }
    for e in &new.endpoints {
        u.push(Update::EndpointUpsert(e.clone()));
    }
    for p in &new.policies {
        u.push(Update::PolicyUpsert(p.clone()));
    }
    for e in &old.endpoints {
        if new.endpoint(&e.id).is_none() {
            u.push(Update::EndpointRemove(e.id.clone()));
        }
    }
    for p in &old.policies {
        if !new.policies.iter().any(|q| q.id == p.id) {
            u.push(Update::PolicyRemove(p.id.clone()));
        }
    }
    u
}

fn step(
    calc: &mut Calculator,
    model: &mut Model,
    updates: Vec<Update>,
    cfg: &RenderConfig,
) -> Result<(), TestCaseError> {
    let prev = calc.state().clone();
    let deltas = calc.apply_all(updates);
    let next = calc.state().clone();
    let plan =
        delta::plan(&prev, &next, &deltas, cfg).map_err(|e| TestCaseError::fail(e.to_string()))?;
    model.apply(&plan).map_err(TestCaseError::fail)?;
    let want = Model::of(&build(&next, cfg).map_err(|e| TestCaseError::fail(e.to_string()))?);
    prop_assert_eq!(&model.sets, &want.sets, "sets differ after {:?}", deltas);
    prop_assert_eq!(&model.maps, &want.maps, "maps differ after {:?}", deltas);
    prop_assert_eq!(
        &model.chains,
        &want.chains,
        "chains differ after {:?}",
        deltas
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 120, ..ProptestConfig::default() })]

    #[test]
    fn plans_turn_one_ruleset_into_the_next(
        a in any::<u64>(),
        b in any::<u64>(),
        c in any::<u64>(),
        prefixes in proptest::sample::select(&PREFIXES[..]),
    ) {
        // Drops logged, as the agent does by default.
        let cfg = RenderConfig { drop_log_group: Some(2), ..RenderConfig::default() };
        // One interface prefix, or several: aliases are dispatched and edited too.
        let mut calc = Calculator::new(CalcConfig::with_prefixes(NODE, prefixes));
        let mut model = Model::of(&build(&DesiredState::default(), &cfg).unwrap());
        let (ca, cb, cc) = (cluster(a), cluster(b), cluster(c));
        step(&mut calc, &mut model, updates_between(&Cluster::new(), &ca), &cfg)?;
        step(&mut calc, &mut model, updates_between(&ca, &cb), &cfg)?;
        step(&mut calc, &mut model, updates_between(&cb, &cc), &cfg)?;
        step(&mut calc, &mut model, updates_between(&cc, &Cluster::new()), &cfg)?;
    }

    #[test]
    fn flat_plans_turn_one_ruleset_into_the_next(
        a in any::<u64>(),
        b in any::<u64>(),
        c in any::<u64>(),
        prefixes in proptest::sample::select(&PREFIXES[..]),
    ) {
        let cfg = RenderConfig {
            drop_log_group: Some(2),
            nft_layout: NftLayout::Flat,
            ..RenderConfig::default()
        };
        let mut calc = Calculator::new(CalcConfig::with_prefixes(NODE, prefixes));
        let mut model = Model::of(&build(&DesiredState::default(), &cfg).unwrap());
        let (ca, cb, cc) = (cluster(a), cluster(b), cluster(c));
        step(&mut calc, &mut model, updates_between(&Cluster::new(), &ca), &cfg)?;
        step(&mut calc, &mut model, updates_between(&ca, &cb), &cfg)?;
        step(&mut calc, &mut model, updates_between(&cb, &cc), &cfg)?;
        step(&mut calc, &mut model, updates_between(&cc, &Cluster::new()), &cfg)?;
    }
}

fn one_set_state(members: &[&str]) -> DesiredState {
    let id = IpSetId("s1".into());
    let mut s = DesiredState::default();
    s.ip_sets.insert(
        id.clone(),
        IpSet {
            id,
            kind: IpSetKind::Net,
            description: "test".into(),
            members: members
                .iter()
                .map(|m| IpSetMember::Net(m.parse().unwrap()))
                .collect(),
        },
    );
    s
}

#[test]
fn one_member_change_is_one_line() {
    let prev = one_set_state(&["10.0.0.1/32"]);
    let next = one_set_state(&["10.0.0.1/32", "10.0.0.2/32"]);
    let deltas = vec![Delta::SetMemberAdded {
        id: IpSetId("s1".into()),
        member: IpSetMember::Net("10.0.0.2/32".parse().unwrap()),
    }];
    let cfg = RenderConfig::default();
    let ipt = delta::iptables(&prev, &next, &deltas, &cfg).unwrap();
    assert_eq!(ipt.ipset_pre.lines().count(), 1, "{}", ipt.ipset_pre);
    assert!(ipt.ipset_pre.starts_with("add pal4-") && ipt.ipset_pre.contains(" 10.0.0.2 "));
    assert_eq!((ipt.v4, ipt.v6), (None, None));
    assert!(ipt.ipset_post.is_empty());
    let nft = delta::nft(&prev, &next, &deltas, &cfg).unwrap();
    assert_eq!(nft.lines().count(), 1, "{nft}");
    assert!(nft.starts_with("add element inet palisade pal4-") && nft.contains("{ 10.0.0.2 }"));

    let back = vec![Delta::SetMemberRemoved {
        id: IpSetId("s1".into()),
        member: IpSetMember::Net("10.0.0.2/32".parse().unwrap()),
    }];
    let ipt = delta::iptables(&next, &prev, &back, &cfg).unwrap();
    assert_eq!(ipt.ipset_pre.lines().collect::<Vec<_>>().len(), 1);
    assert!(ipt.ipset_pre.starts_with("del pal4-"));
    let nft = delta::nft(&next, &prev, &back, &cfg).unwrap();
    assert!(nft.starts_with("delete element inet palisade pal4-") && nft.lines().count() == 1);
}

#[test]
fn an_endpoint_change_rewrites_only_its_chains() {
    let mut c = common::cluster_from_yaml(common::SMALL);
    let mut calc = Calculator::new(CalcConfig::new(NODE));
    calc.apply_all(updates_between(&Cluster::new(), &c));
    let prev = calc.state().clone();
    // Relabel db so that the web policy's egress no longer selects it.
    let id = EndpointId::new("prod", "db");
    let mut db = c.endpoint(&id).unwrap().clone();
    db.labels.insert("app".into(), "other".into());
    c.upsert_endpoint(db.clone());
    let deltas = calc.apply(Update::EndpointUpsert(db));
    let next = calc.state().clone();
    let plan = delta::plan(&prev, &next, &deltas, &RenderConfig::default()).unwrap();
    let names: Vec<&str> = plan
        .chains_rewrite
        .iter()
        .chain(&plan.chains_new)
        .map(|c| c.name.as_str())
        .collect();
    assert!(
        names.iter().all(|n| n.starts_with("pal-fw-")
            || n.starts_with("pal-tw-")
            || n.starts_with("pal-p")),
        "{names:?}"
    );
    assert!(
        plan.forward.is_none(),
        "dispatch unchanged: pal-FORWARD is not rewritten"
    );
    let ipt = delta::iptables(&prev, &next, &deltas, &RenderConfig::default()).unwrap();
    let v4 = ipt.v4.unwrap();
    assert!(!v4.contains(":pal-FORWARD"), "{v4}");
}
