//! An update written in phases instead of one `nft -f` transaction, so that no phase makes
//! the `nft` code fetch the ruleset's set elements (an `add element` line costs ~2 µs per
//! element of the whole table, 60–100 ms on a node with ~50,000) and element changes travel
//! over netlink:
//!
//! 1. `declare` (script): new sets and maps, empty, and new chains with their rules. Nothing
//!    that packets reach changes: a new chain is reached only from a rewritten chain or a map
//!    element, written later.
//! 2. `elements` (netlink, one transaction): every element change of the sets and maps that
//!    stay — deletions first, so an interval set can take a new overlapping prefix — plus the
//!    elements of the new sets and the new map elements (jumping to chains that are now
//!    complete). Set membership changes atomically, as in a single transaction.
//! 3. `rewrite` (script): changed chains flushed and refilled; they may now refer to the new,
//!    already filled sets.
//! 4. `unmap` (netlink): map elements removed (interfaces of endpoints that are gone).
//! 5. `remove` (script): chains, sets and maps no longer wanted, now unreferenced.
//!
//! Between phases the kernel holds a mix of the old and the new program, each phase complete
//! in itself; a failed phase makes the reconciler read the kernel back and write the rest.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::nft::backend::{chain_decl, rules, set_decl, T};
use crate::nft::json::NftView;
use crate::nft::netlink::{parse_element, ElementOp};
use crate::nft::program::NftProgram;

/// The five phases of one update; empty ones are skipped.
#[derive(Debug, Default, PartialEq)]
pub struct Phases {
    pub declare: String,
    pub elements: Vec<ElementOp>,
    pub rewrite: String,
    pub unmap: Vec<ElementOp>,
    pub remove: String,
}

fn op(set: &str, add: bool, key_type: &[String], interval: bool, e: &str) -> Option<ElementOp> {
    Some(ElementOp {
        set: set.to_string(),
        add,
        key: parse_element(key_type, interval, e)?,
    })
}

/// The phased write that turns `view` into `program`; `None` when it cannot be phased (no
/// table yet, a set or chain that changes type or hook, a new base chain, an element the
/// netlink writer cannot express): then the whole difference goes as one script.
pub fn phases(program: &NftProgram, view: &NftView) -> Option<Phases> {
    if !view.exists {
        return None;
    }
    let mut p = Phases::default();
    let mut element_dels = Vec::new();
    let mut element_adds = Vec::new();
    for (name, s) in &program.sets {
        let interval = s.flags.iter().any(|f| f == "interval");
        let have = match view.sets.get(name) {
            Some(v) if !v.same_shape(s) => return None,
            Some(v) if Arc::ptr_eq(v, s) || v.elements == s.elements => continue,
            Some(v) => &v.elements,
            None => {
                set_decl(&mut p.declare, name, s);
                &BTreeSet::new()
            }
        };
        let removed = have.difference(&s.elements);
        let added = s.elements.difference(have);
        if s.map_to.is_some() {
            // A key whose verdict changes is deleted and added in the same transaction;
            // a key that goes away waits until no chain is left half-reached.
            let added_keys: BTreeSet<&str> = added.clone().map(|e| map_key(e)).collect();
            for e in removed {
                let o = op(name, false, &s.key_type, interval, e)?;
                if added_keys.contains(map_key(e)) {
                    element_dels.push(o);
                } else {
                    p.unmap.push(o);
                }
            }
        } else {
            for e in removed {
                element_dels.push(op(name, false, &s.key_type, interval, e)?);
            }
        }
        for e in added {
            element_adds.push(op(name, true, &s.key_type, interval, e)?);
        }
    }
    p.elements = element_dels;
    p.elements.extend(element_adds);
    for (name, c) in &program.chains {
        match view.chains.get(name) {
            None if c.base.is_some() => return None,
            None => {
                chain_decl(&mut p.declare, name, c);
                rules(&mut p.declare, name, c);
            }
            Some(v) if v.base != c.base => return None,
            Some(v) => {
                let same = v.rules.len() == c.rules.len()
                    && v.rules
                        .iter()
                        .zip(&c.rules)
                        .all(|(h, r)| h.hash.as_deref() == Some(r.hash.as_str()));
                if !same {
                    let _ = writeln!(p.rewrite, "flush chain {T} {name}");
                    rules(&mut p.rewrite, name, c);
                }
            }
        }
    }
    let gone_chains: Vec<&String> = view
        .chains
        .keys()
        .filter(|n| !program.chains.contains_key(*n))
        .collect();
    for name in &gone_chains {
        let _ = writeln!(p.remove, "flush chain {T} {name}");
    }
    for (name, s) in view
        .sets
        .iter()
        .filter(|(n, _)| !program.sets.contains_key(*n))
    {
        let kind = if s.map_to.is_some() { "map" } else { "set" };
        let _ = writeln!(p.remove, "delete {kind} {T} {name}");
    }
    for name in gone_chains {
        let _ = writeln!(p.remove, "delete chain {T} {name}");
    }
    Some(p)
}

/// The key of a map element (`"ifname" : jump chain` → `"ifname"`).
fn map_key(e: &str) -> &str {
    e.split_once(" : ").map_or(e, |(k, _)| k)
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
                    ElementKey::AddrProtoPort { addr, .. } => addr.to_string(),
                };
                format!("{verb} {} {what}", o.set)
            })
            .collect()
    }

    #[test]
    fn each_change_goes_to_the_phase_that_keeps_every_step_complete() {
        let view = NftBackend::new().project(&old());
        let p = phases(&new(), &view).unwrap();
        // New sets empty, new chains whole; nothing reachable changes, no element line.
        assert!(
            p.declare.contains("add set inet palisade pal4-s2"),
            "{}",
            p.declare
        );
        assert!(p.declare.contains("add chain inet palisade pal-tw-a2"));
        assert!(p
            .declare
            .contains("add rule inet palisade pal-tw-c counter accept"));
        assert!(!p.declare.contains("element") && !p.declare.contains("pal-tw-a "));
        // One transaction: deletions first, a map key whose target changes in the same one.
        assert_eq!(
            describe(&p.elements),
            [
                "del pal-tw-map a->pal-tw-a",
                "del pal4-s1 10.0.0.1",
                "add pal-tw-map a->pal-tw-a2",
                "add pal-tw-map c->pal-tw-c",
                "add pal4-s1 10.0.0.2",
                "add pal4-s2 10.0.0.3",
            ]
        );
        assert_eq!(
            p.rewrite,
            "flush chain inet palisade pal-tw-a\n\
             add rule inet palisade pal-tw-a counter accept comment \"pal:a2\"\n"
        );
        // The interface that goes away is unmapped before its chain is deleted.
        assert_eq!(describe(&p.unmap), ["del pal-tw-map b->pal-tw-b"]);
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

    #[test]
    fn removed_sets_go_in_the_last_phase_and_nothing_is_written_twice() {
        let view = NftBackend::new().project(&new());
        let mut next = new();
        next.sets.remove("pal4-s2");
        let p = phases(&next, &view).unwrap();
        assert_eq!(p.remove, "delete set inet palisade pal4-s2\n");
        assert!(p.declare.is_empty() && p.elements.is_empty() && p.rewrite.is_empty());
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
