//! From the renderer's [`Ruleset`] to the programs the backends reconcile: rule text comes
//! from `palisade_render::{iptables, nft}` (the dataplane spells nothing itself), each rule
//! keyed by its `pal:` comment, with the [`Origins`] attached for counters.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::Arc;

use palisade_render::ir::{
    Action, Chain, DispatchKey, Family as IrFamily, Ruleset, SetDef, SetEntry, SetKind,
};
use palisade_render::{iptables, nft};

use crate::error::DataplaneError;
use crate::ipt::program::{Family, IpsetSpec, IptRule, IptablesProgram};
use crate::ipt::save::pal_comment;
use crate::nft::program::{BaseChain, NftChain, NftProgram, NftRule, NftSet};
use crate::origins::Origins;

/// Sets converted by the last render, reused while their definition is unchanged (a large
/// set costs a lot to convert and little to hash).
///
/// A definition is remembered by its [`Fingerprint`], not a copy: a copy of every set's
/// members was, after the kernel's and the incremental state's, a third copy held for as
/// long as the agent runs (~110 bytes per pod of the cluster).
#[derive(Debug)]
pub struct SetCache<T> {
    entries: HashMap<String, (Fingerprint, Arc<T>)>,
    keys: (RandomState, RandomState),
}

/// Two independently keyed 64-bit hashes of a set's definition and its member count: sets
/// that differ get the same fingerprint with a probability of about 2⁻¹²⁸ per comparison,
/// and the keys are random per process, so no input can be chosen to collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint(usize, u64, u64);

impl<T> Default for SetCache<T> {
    fn default() -> Self {
        SetCache {
            entries: HashMap::new(),
            keys: (RandomState::new(), RandomState::new()),
        }
    }
}

fn hash_def(state: &RandomState, def: &SetDef) -> u64 {
    let mut h = state.build_hasher();
    def.set.hash(&mut h);
    def.description.hash(&mut h);
    def.members.hash(&mut h);
    h.finish()
}

impl<T> SetCache<T> {
    fn fingerprint(&self, def: &SetDef) -> Fingerprint {
        Fingerprint(
            def.members.len(),
            hash_def(&self.keys.0, def),
            hash_def(&self.keys.1, def),
        )
    }

    fn get(
        &mut self,
        def: &SetDef,
        convert: impl FnOnce(&SetDef) -> Result<T, DataplaneError>,
    ) -> Result<Arc<T>, DataplaneError> {
        let print = self.fingerprint(def);
        if let Some((old, out)) = self.entries.get(&def.set.name) {
            if *old == print {
                return Ok(Arc::clone(out));
            }
        }
        let out = Arc::new(convert(def)?);
        self.entries
            .insert(def.set.name.clone(), (print, Arc::clone(&out)));
        Ok(out)
    }

    fn keep_only(&mut self, rs: &Ruleset) {
        if self.entries.len() > rs.sets.len() {
            let names: std::collections::HashSet<&str> =
                rs.sets.iter().map(|s| s.set.name.as_str()).collect();
            self.entries.retain(|n, _| names.contains(n.as_str()));
        }
    }
}

/// The iptables family of an IR family.
pub(crate) fn family(f: IrFamily) -> Family {
    match f {
        IrFamily::V4 => Family::V4,
        IrFamily::V6 => Family::V6,
    }
}

/// The iptables + ipset program of a ruleset.
pub fn iptables_program(
    rs: &Ruleset,
    origins: &Origins,
    cache: &mut SetCache<IpsetSpec>,
) -> Result<IptablesProgram, DataplaneError> {
    let mut p = IptablesProgram::default();
    for s in &rs.sets {
        let spec = cache.get(s, ipset_spec)?;
        p.sets.insert(s.set.name.clone(), spec);
    }
    cache.keep_only(rs);
    for &f in &rs.families {
        let chains = p.chains_mut(family(f));
        for c in &rs.chains {
            chains
                .chains
                .insert(c.name.clone(), ipt_chain(c, f, origins)?);
        }
        for h in &rs.hooks {
            chains
                .hooks
                .insert(h.kernel_chain.clone(), h.target.clone());
        }
    }
    Ok(p)
}

/// The rules of one rendered chain for one family (`origins`: at least this chain's).
pub fn ipt_chain(
    c: &Chain,
    f: IrFamily,
    origins: &Origins,
) -> Result<Vec<IptRule>, DataplaneError> {
    let mut rules = Vec::new();
    let prefix = format!("-A {} ", c.name);
    for r in c.rules.iter().filter(|r| r.applies_to(f)) {
        let origin = origins
            .get(&(
                c.name.clone(),
                r.comment.trim_start_matches("pal:").to_string(),
            ))
            .cloned();
        for line in iptables::rule_lines(&c.name, r) {
            let spec = line.strip_prefix(&prefix).ok_or_else(|| {
                DataplaneError::invalid(
                    format!("chain {}", c.name),
                    format!("rendered line {line:?} is not -A {}", c.name),
                )
            })?;
            let hash = pal_comment(spec).ok_or_else(|| {
                DataplaneError::invalid(
                    format!("chain {}", c.name),
                    format!("rendered line {line:?} has no pal: comment"),
                )
            })?;
            rules.push(IptRule {
                hash: hash.to_string(),
                spec: spec.to_string(),
                origin: origin.clone(),
            });
        }
    }
    Ok(rules)
}

/// The ipset of one rendered set.
pub fn ipset_spec(s: &SetDef) -> Result<IpsetSpec, DataplaneError> {
    let kind = match s.set.kind {
        SetKind::Net => "hash:net",
        SetKind::NetPort => "hash:ip,port",
        SetKind::NetIface => "hash:net,iface",
        SetKind::Flat => "hash:net,port",
    };
    let members = s.members.iter().map(|m| ipset_member(&s.set.name, m));
    IpsetSpec::new(kind, family(s.set.family), members)
}

/// One member as `ipset save` prints it after the set name (`10.1.2.0/24 nomatch`).
pub fn ipset_member(set: &str, m: &SetEntry) -> String {
    let line = iptables::member_line("add", set, m);
    let t = line.trim_end();
    let t = t.strip_prefix(&format!("add {set} ")).unwrap_or(t);
    t.strip_suffix(" -exist").unwrap_or(t).to_string()
}

/// The nftables set of one rendered set.
pub fn nft_set(s: &SetDef) -> Result<NftSet, DataplaneError> {
    let addr = match s.set.family {
        IrFamily::V4 => "ipv4_addr",
        IrFamily::V6 => "ipv6_addr",
    };
    let (key_type, flags) = match s.set.kind {
        SetKind::Net => (vec![addr.to_string()], vec!["interval".to_string()]),
        SetKind::NetPort => (
            vec![addr.to_string(), "inet_proto".into(), "inet_service".into()],
            vec![],
        ),
        SetKind::NetIface => (vec![addr.to_string(), "ifname".into()], vec![]),
        SetKind::Flat => (
            vec![addr.to_string(), "inet_proto".into(), "inet_service".into()],
            vec!["interval".to_string()],
        ),
    };
    Ok(NftSet::new(key_type, None, flags, nft::set_elements(s)))
}

/// The nftables program of a ruleset (`table inet palisade`).
pub fn nft_program(
    rs: &Ruleset,
    origins: &Origins,
    cache: &mut SetCache<NftSet>,
) -> Result<NftProgram, DataplaneError> {
    let mut p = NftProgram::default();
    for s in &rs.sets {
        let set = cache.get(s, nft_set)?;
        p.sets.insert(s.set.name.clone(), set);
    }
    cache.keep_only(rs);
    let mut maps = BTreeMap::new();
    for c in &rs.chains {
        dispatch_elements(c, &mut maps);
        for c in palisade_render::nft::with_local_copies(c) {
            p.chains.insert(c.name.clone(), nft_chain(&c, origins));
        }
    }
    for (name, (key, elements)) in maps {
        p.sets.insert(name, Arc::new(verdict_map(key, elements)));
    }
    Ok(p)
}

/// The elements of the verdict maps a chain's dispatch rules fill, by map name, with the
/// maps' key kind.
pub fn dispatch_elements(c: &Chain, maps: &mut BTreeMap<String, (DispatchKey, Vec<String>)>) {
    for r in &c.rules {
        if let Action::Dispatch {
            map, key, targets, ..
        } = &r.action
        {
            maps.entry(map.clone())
                .or_insert_with(|| (*key, Vec::new()))
                .1
                .extend(targets.iter().map(|(i, t)| nft::map_element(*key, i, t)));
        }
    }
}

/// An interface (or address) → verdict map with `elements`.
pub fn verdict_map(key: DispatchKey, elements: Vec<String>) -> NftSet {
    NftSet::new(
        vec![nft::map_key_type(key).into()],
        Some("verdict".into()),
        vec![],
        elements,
    )
}

/// The nftables form of one rendered chain (`origins`: at least this chain's).
pub fn nft_chain(c: &Chain, origins: &Origins) -> NftChain {
    let mut rules = Vec::with_capacity(c.rules.len());
    for r in &c.rules {
        let text = nft::rule_text(r);
        let body = text
            .rsplit_once(" comment \"")
            .map(|(b, _)| b.to_string())
            .unwrap_or(text);
        let hash = r.comment.trim_start_matches("pal:").to_string();
        rules.push(NftRule {
            origin: origins.get(&(c.name.clone(), hash.clone())).cloned(),
            hash,
            body,
        });
    }
    let base = palisade_render::nft::base_hook(&c.name).map(|hook| BaseChain {
        kind: "filter".into(),
        hook: hook.into(),
        priority: 0,
        policy: "accept".into(),
    });
    NftChain { base, rules }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_render::ir::SetRef;

    fn def(members: &[&str]) -> SetDef {
        SetDef {
            set: SetRef {
                name: "pal4-s:abc".into(),
                family: IrFamily::V4,
                kind: SetKind::Net,
            },
            description: "app == web".into(),
            members: members
                .iter()
                .map(|m| SetEntry::Net(m.parse().unwrap()))
                .collect(),
        }
    }

    #[test]
    fn the_cache_reuses_a_set_until_its_definition_changes() {
        let mut cache: SetCache<usize> = SetCache::default();
        let mut conversions = 0;
        let mut get = |cache: &mut SetCache<usize>, d: &SetDef| {
            cache
                .get(d, |d| {
                    conversions += 1;
                    Ok(d.members.len())
                })
                .unwrap()
        };
        let a = get(&mut cache, &def(&["10.0.0.1/32", "10.0.0.2/32"]));
        let b = get(&mut cache, &def(&["10.0.0.1/32", "10.0.0.2/32"]));
        assert!(Arc::ptr_eq(&a, &b));
        let c = get(&mut cache, &def(&["10.0.0.1/32", "10.0.0.3/32"]));
        assert!(!Arc::ptr_eq(&a, &c));
        let mut described = def(&["10.0.0.1/32", "10.0.0.3/32"]);
        described.description = "app == db".into();
        let d = get(&mut cache, &described);
        assert!(!Arc::ptr_eq(&c, &d));
        assert_eq!(*get(&mut cache, &def(&["10.0.0.1/32"])), 1);
        assert_eq!(conversions, 4);
    }
}
