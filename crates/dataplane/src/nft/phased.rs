//! An update written in phases instead of one `nft -f` transaction, so that no script has an
//! `add element` line: for those the `nft` code first fetches every element of the table
//! (~2 µs each, 60–100 ms on a node with ~50,000), and element changes travel over netlink.
//! Elements declared inline with a new set (`add set … { …; elements = { … }; }`) do not
//! trigger the fetch.
//!
//! 1. `elements` (netlink, one transaction): the element changes of sets that exist and
//!    stay, deletions first (an interval set must lose an old prefix before it can take an
//!    overlapping new one). Set membership changes atomically.
//! 2. `structure` (script, one transaction): new sets with their elements, new maps (empty),
//!    new chains with their rules, changed chains flushed and refilled — and, when no map
//!    element is deleted or retargeted, the chains and sets no longer wanted. A policy add or
//!    a change of a local pod's policies lands in this one atomic step.
//! 3. `maps` (netlink, one transaction): verdict-map changes — new interfaces (their chains
//!    now exist and are complete), retargeted ones, and the interfaces that are gone.
//! 4. `remove` (script): only when step 3 removed or retargeted map elements, the chains and
//!    sets no longer wanted, now unreferenced.
//!
//! Between steps 1 and 2 set membership may already be new while a rewritten chain is still
//! old, for about a millisecond — the window felix has between ipset and iptables updates.
//! A failed step makes the reconciler read the kernel back and write the rest.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::nft::backend::{chain_decl, removals, rules, same_rules, set_decl, T};
use crate::nft::json::NftView;
use crate::nft::netlink::{parse_element, ElementOp};
use crate::nft::program::{NftProgram, NftSet};
use crate::report::ApplyReport;

/// The phases of one update; empty ones are skipped.
#[derive(Debug, Default, PartialEq)]
pub struct Phases {
    pub elements: Vec<ElementOp>,
    pub structure: String,
    pub maps: Vec<ElementOp>,
    pub remove: String,
    /// What the write changes, as the single script would report it (the set, chain and
    /// member fields of an [`ApplyReport`]; the rest stays default).
    pub changes: ApplyReport,
}

fn op(set: &str, add: bool, key_type: &[String], interval: bool, e: &str) -> Option<ElementOp> {
    Some(ElementOp {
        set: set.to_string(),
        add,
        key: parse_element(key_type, interval, e)?,
    })
}

/// `add set` with its elements inline (a set, not a map).
fn filled_set_decl(out: &mut String, name: &str, s: &NftSet) {
    let mut decl = String::new();
    set_decl(&mut decl, name, s);
    if s.elements.is_empty() {
        out.push_str(&decl);
        return;
    }
    let head = decl.trim_end().trim_end_matches('}').trim_end();
    let list: Vec<&str> = s.elements.iter().map(String::as_str).collect();
    let _ = writeln!(out, "{head} elements = {{ {} }}; }}", list.join(", "));
}

/// The phased write that turns `view` into `program`; `None` when it cannot be phased (no
/// table yet, a set or chain that changes type or hook, a new base chain, an element the
/// netlink writer cannot express): then the whole difference goes as one script.
pub fn phases(program: &NftProgram, view: &NftView) -> Option<Phases> {
    if !view.exists {
        return None;
    }
    let mut p = Phases::default();
    let (mut dels, mut adds) = (Vec::new(), Vec::new());
    let (mut map_dels, mut map_adds) = (Vec::new(), Vec::new());
    for (name, s) in &program.sets {
        let interval = s.flags.iter().any(|f| f == "interval");
        let is_map = s.map_to.is_some();
        let have = match view.sets.get(name) {
            Some(v) if !v.same_shape(s) => return None,
            Some(v) if Arc::ptr_eq(v, s) || v.elements == s.elements => continue,
            Some(v) => &v.elements,
            None if is_map => {
                set_decl(&mut p.structure, name, s);
                p.changes.sets_created.push(name.clone());
                &BTreeSet::new()
            }
            None => {
                filled_set_decl(&mut p.structure, name, s);
                p.changes.sets_created.push(name.clone());
                p.changes.members_added += s.elements.len();
                continue;
            }
        };
        let (d, a) = if is_map {
            (&mut map_dels, &mut map_adds)
        } else {
            (&mut dels, &mut adds)
        };
        let (before_d, before_a) = (d.len(), a.len());
        for e in have.difference(&s.elements) {
            d.push(op(name, false, &s.key_type, interval, e)?);
        }
        for e in s.elements.difference(have) {
            a.push(op(name, true, &s.key_type, interval, e)?);
        }
        let (removed, added) = (d.len() - before_d, a.len() - before_a);
        p.changes.members_removed += removed;
        p.changes.members_added += added;
        if view.sets.contains_key(name) && removed + added > 0 {
            p.changes.sets_updated.push(name.clone());
        }
    }
    p.elements = dels;
    p.elements.extend(adds);
    for (name, c) in &program.chains {
        match view.chains.get(name) {
            None if c.base.is_some() => return None,
            None => chain_decl(&mut p.structure, name, c),
            Some(v) if v.base != c.base => return None,
            Some(_) => {}
        }
    }
    for (name, c) in &program.chains {
        match view.chains.get(name) {
            None => {
                rules(&mut p.structure, name, c);
                p.changes.chains_rewritten.push(name.clone());
            }
            Some(v) => {
                if !same_rules(v, c) {
                    let _ = writeln!(p.structure, "flush chain {T} {name}");
                    rules(&mut p.structure, name, c);
                    p.changes.chains_rewritten.push(name.clone());
                }
            }
        }
    }
    // Gone chains and sets go with the structure unless a map element still jumps to one
    // of them until step 3.
    let removal = if map_dels.is_empty() {
        &mut p.structure
    } else {
        &mut p.remove
    };
    let (sets, chains) = removals(removal, program, view);
    p.changes.sets_deleted = sets;
    p.changes.chains_deleted = chains;
    p.maps = map_dels;
    p.maps.extend(map_adds);
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::netlink::ElementKey;
    use crate::nft::program::{BaseChain, NftChain, NftRule, NftSet};
    use crate::nft::NftBackend;
    use crate::table::Backend;

    fn set(elements: &[&str]) -> Arc<NftSet> {
        Arc::new(NftSet::new(
            vec!["ipv4_addr".into()],
            None,
            vec!["interval".into()],
            elements.iter().map(|e| e.to_string()),
        ))
    }

    fn map(elements: &[(&str, &str)]) -> Arc<NftSet> {
        Arc::new(NftSet::new(
            vec!["ifname".into()],
            Some("verdict".into()),
            vec![],
            elements.iter().map(|(i, c)| format!("\"{i}\" : jump {c}")),
        ))
    }

    fn chain(hashes: &[&str]) -> NftChain {
        NftChain {
            base: None,
            rules: hashes
                .iter()
                .map(|h| NftRule {
                    hash: h.to_string(),
                    body: "counter accept".into(),
                    origin: None,
                })
                .collect(),
        }
    }

    fn base() -> NftChain {
        NftChain {
            base: Some(BaseChain {
                kind: "filter".into(),
                hook: "forward".into(),
                priority: 0,
                policy: "accept".into(),
            }),
            ..chain(&["f1"])
        }
    }

    fn program(sets: Vec<(&str, Arc<NftSet>)>, chains: Vec<(&str, NftChain)>) -> NftProgram {
        NftProgram {
            sets: sets.into_iter().map(|(n, s)| (n.to_string(), s)).collect(),
            chains: chains
                .into_iter()
                .map(|(n, c)| (n.to_string(), c))
                .collect(),
        }
    }

    fn old() -> NftProgram {
        program(
            vec![
                ("pal4-s1", set(&["10.0.0.1"])),
                ("pal-tw-map", map(&[("a", "pal-tw-a"), ("b", "pal-tw-b")])),
            ],
            vec![
                ("pal-FORWARD", base()),
                ("pal-tw-a", chain(&["a1"])),
                ("pal-tw-b", chain(&["b1"])),
                ("pal-pi-old", chain(&["o1"])),
            ],
        )
    }

    fn new() -> NftProgram {
        program(
            vec![
                ("pal4-s1", set(&["10.0.0.2"])),
                ("pal4-s2", set(&["10.0.0.3"])),
                ("pal-tw-map", map(&[("a", "pal-tw-a2"), ("c", "pal-tw-c")])),
            ],
            vec![
                ("pal-FORWARD", base()),
                ("pal-tw-a", chain(&["a2"])),
                ("pal-tw-a2", chain(&["x1"])),
                ("pal-tw-c", chain(&["c1"])),
            ],
        )
    }

    fn describe(ops: &[ElementOp]) -> Vec<String> {
        ops.iter()
            .map(|o| {
                let verb = if o.add { "add" } else { "del" };
                let what = match &o.key {
                    ElementKey::Range { start, .. } => start.to_string(),
                    ElementKey::IfnameJump { ifname, chain } => format!("{ifname}->{chain}"),
                    ElementKey::AddrJump { addr, chain } => format!("{addr}->{chain}"),
                    ElementKey::AddrProtoPort { addr, .. } => addr.to_string(),
                    ElementKey::ConcatRange { start, .. } => start.to_string(),
                };
                format!("{verb} {} {what}", o.set)
            })
            .collect()
    }

    #[test]
    fn each_change_goes_to_the_phase_that_keeps_every_step_complete() {
        let view = NftBackend::new().project(&old());
        let p = phases(&new(), &view).unwrap();
        // Membership of the sets that stay, in one transaction, deletions first.
        assert_eq!(
            describe(&p.elements),
            ["del pal4-s1 10.0.0.1", "add pal4-s1 10.0.0.2"]
        );
        // New sets filled inline, new chains whole, changed chains refilled: one transaction
        // with no element line; chains still mapped stay until the maps are changed.
        let structure: Vec<&str> = p.structure.lines().collect();
        assert_eq!(
            structure,
            [
                "add set inet palisade pal4-s2 { type ipv4_addr; flags interval; elements = { 10.0.0.3 }; }",
                "add chain inet palisade pal-tw-a2",
                "add chain inet palisade pal-tw-c",
                "flush chain inet palisade pal-tw-a",
                "add rule inet palisade pal-tw-a counter accept comment \"pal:a2\"",
                "add rule inet palisade pal-tw-a2 counter accept comment \"pal:x1\"",
                "add rule inet palisade pal-tw-c counter accept comment \"pal:c1\"",
            ]
        );
        // Maps once their chains exist: a retargeted key in the same transaction; the
        // interface that goes away is unmapped before its chain is deleted.
        assert_eq!(
            describe(&p.maps),
            [
                "del pal-tw-map a->pal-tw-a",
                "del pal-tw-map b->pal-tw-b",
                "add pal-tw-map a->pal-tw-a2",
                "add pal-tw-map c->pal-tw-c",
            ]
        );
        let remove: Vec<&str> = p.remove.lines().collect();
        assert_eq!(
            remove,
            [
                "flush chain inet palisade pal-pi-old",
                "flush chain inet palisade pal-tw-b",
                "delete chain inet palisade pal-pi-old",
                "delete chain inet palisade pal-tw-b",
            ]
        );
    }

    /// The changes a phased write reports are the ones the single script reports.
    #[test]
    fn phases_report_what_the_single_script_reports() {
        let after_new = {
            let mut next = new();
            next.sets.remove("pal4-s2");
            next.chains.insert("pal-tw-a".into(), chain(&["a3"]));
            next
        };
        for (from, to) in [
            (old(), new()),
            (new(), old()),
            (new(), after_new),
            (old(), old()),
        ] {
            let view = NftBackend::new().project(&from);
            let mut scripted = ApplyReport::default();
            let _ = crate::nft::backend::script(&to, &view, false, &mut scripted);
            let phased = phases(&to, &view).expect("phased");
            assert_eq!(phased.changes, scripted);
        }
        assert!(!phases(&new(), &NftBackend::new().project(&old()))
            .unwrap()
            .changes
            .wrote_nothing());
    }

    #[test]
    fn without_map_changes_removals_go_with_the_structure() {
        let view = NftBackend::new().project(&new());
        let mut next = new();
        next.sets.remove("pal4-s2");
        next.chains.insert("pal-tw-a".into(), chain(&["a3"]));
        let p = phases(&next, &view).unwrap();
        assert!(p.elements.is_empty() && p.maps.is_empty() && p.remove.is_empty());
        assert_eq!(
            p.structure,
            "flush chain inet palisade pal-tw-a\n\
             add rule inet palisade pal-tw-a counter accept comment \"pal:a3\"\n\
             delete set inet palisade pal4-s2\n"
        );
        assert_eq!(
            phases(&next, &NftBackend::new().project(&next)),
            Some(Phases::default())
        );
    }

    #[test]
    fn what_cannot_be_phased_is_left_to_one_transaction() {
        let view = NftBackend::new().project(&old());
        // No table yet.
        assert_eq!(phases(&new(), &NftView::default()), None);
        // A set that changes type.
        let mut retyped = new();
        retyped.sets.insert(
            "pal4-s1".into(),
            Arc::new(NftSet::new(vec!["ipv4_addr".into()], None, vec![], [])),
        );
        assert_eq!(phases(&retyped, &view), None);
        // A new hooked chain.
        let mut hooked = new();
        hooked.chains.insert("pal-OUTPUT".into(), base());
        assert_eq!(phases(&hooked, &view), None);
        // An element the netlink writer cannot express.
        let mut odd = new();
        odd.sets
            .insert("pal-tw-map".into(), map(&[("bad name!", "pal-tw-a")]));
        assert_eq!(phases(&odd, &view), None);
    }
}
