//! The dedicated ipBlock sets (an ipBlock with exceptions) a batch creates or frees: only
//! the changed policies' sets are named (hashed); the other policies are compared by value,
//! and only when a set may be shared with them.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use palisade_calc::{ActivePolicy, DesiredState, RulePeer};
use palisade_model::PolicyId;

use crate::ir::{Family, SetKind, SetRef};
use crate::names;

/// A dedicated ipBlock set and what it was made from.
pub(super) struct CidrSet {
    pub(super) set: SetRef,
    key: CidrKey,
}

/// (family, CIDR, exceptions sorted): equal exactly when the set names are (the name hashes
/// the CIDR and the sorted exceptions), without hashing.
type CidrKey = (Family, IpNet, Vec<IpNet>);

fn cidr_key(f: Family, cidr: IpNet, mut ex: Vec<IpNet>) -> CidrKey {
    ex.sort_unstable();
    (f, cidr, ex)
}

/// The ipBlock-with-exceptions peers of a policy's rules, for `fams`: (family, the CIDR
/// truncated, the exceptions of that family truncated), as `build::cidr_set` names them.
fn cidr_peers<'a>(
    policy: &'a ActivePolicy,
    fams: &'a [Family],
) -> impl Iterator<Item = (Family, IpNet, Vec<IpNet>)> + 'a {
    policy
        .ingress
        .iter()
        .chain(policy.egress.iter())
        .flatten()
        .flat_map(|rule| rule.peers.iter())
        .filter_map(|peer| match peer {
            RulePeer::Cidr { cidr, except } if !except.is_empty() => Some((cidr, except)),
            _ => None,
        })
        .flat_map(move |(cidr, except)| {
            fams.iter().filter_map(move |&f| {
                if Family::of_net(cidr) != f {
                    return None;
                }
                let ex: Vec<IpNet> = except
                    .iter()
                    .filter(|e| Family::of_net(e) == f)
                    .map(IpNet::trunc)
                    .collect();
                (!ex.is_empty()).then(|| (f, cidr.trunc(), ex))
            })
        })
}

/// Adds the dedicated ipBlock sets of one policy, by name.
pub(super) fn cidr_sets_of(
    policy: &ActivePolicy,
    fams: &[Family],
    out: &mut BTreeMap<String, CidrSet>,
) {
    for (f, cidr, ex) in cidr_peers(policy, fams) {
        let name = names::cidr_set_name(f, &cidr, &ex);
        let set = SetRef {
            name: name.clone(),
            family: f,
            kind: SetKind::Net,
        };
        let key = cidr_key(f, cidr, ex);
        out.insert(name, CidrSet { set, key });
    }
}

/// Which of `sets` (dedicated ipBlock sets, by name) a policy of `state` other than the
/// `changed` ones uses. Reads every policy's ipBlock peers, comparing them by value (no
/// hashing).
pub(super) fn held_by_others(
    state: &DesiredState,
    changed: &BTreeSet<&PolicyId>,
    fams: &[Family],
    sets: &BTreeMap<&str, &CidrSet>,
) -> BTreeSet<String> {
    let mut held = BTreeSet::new();
    if sets.is_empty() {
        return held;
    }
    let by_key: BTreeMap<&CidrKey, &str> = sets.iter().map(|(name, c)| (&c.key, *name)).collect();
    for (id, policy) in &state.policies {
        if changed.contains(id) {
            continue;
        }
        for (f, cidr, ex) in cidr_peers(policy, fams) {
            if let Some(name) = by_key.get(&cidr_key(f, cidr, ex)) {
                held.insert(name.to_string());
            }
        }
    }
    held
}
