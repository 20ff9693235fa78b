//! What-if against a full recompute: on random synthetic clusters and random policy changes
//! (a policy removed, a policy's selector widened to every pod of its namespace, a copy of a
//! policy added under a new name with another selector), `what_if` lists exactly the pairs
//! whose verdict differs between the two naive (pair by pair) matrices.

use std::collections::BTreeSet;

use palisade_engine::synth::{generate, SynthConfig, SynthRng};
use palisade_engine::{naive_matrix, what_if, Probe};
use palisade_model::{Cluster, Protocol, Selector};
use proptest::prelude::*;

fn changed(now: &Cluster, rng: &mut SynthRng) -> Cluster {
    let mut then = now.clone();
    let edits = 1 + rng.below(3);
    for _ in 0..edits {
        if then.policies.is_empty() {
            break;
        }
        let k = rng.below(then.policies.len());
        match rng.below(3) {
            0 => {
                then.policies.remove(k);
            }
            1 => then.policies[k].selector = Selector::All,
            _ => {
                let mut copy = then.policies[k].clone();
                copy.id.name = format!("{}-copy{}", copy.id.name, rng.below(1000));
                let j = rng.below(then.endpoints.len().max(1));
                if let Some(ep) = then.endpoints.get(j) {
                    if let Some((key, value)) = ep.labels.iter().next() {
                        copy.selector = Selector::Eq(key.clone(), value.clone());
                    }
                }
                then.policies.push(copy);
            }
        }
    }
    then
}

type Pair = (String, String, Probe, bool, bool);

fn oracle(now: &Cluster, then: &Cluster, probes: &[Probe]) -> BTreeSet<Pair> {
    let a = naive_matrix(now, probes);
    let b = naive_matrix(then, probes);
    assert_eq!(a.pods, b.pods, "the changes keep the pods");
    let mut out = BTreeSet::new();
    for (pa, pb) in a.probes.iter().zip(&b.probes) {
        for i in 0..a.pods.len() {
            for j in 0..a.pods.len() {
                let (x, y) = (pa.allowed(i, j), pb.allowed(i, j));
                if x != y {
                    out.insert((a.pods[i].to_string(), a.pods[j].to_string(), pa.probe, x, y));
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn what_if_equals_a_full_recompute(seed in any::<u64>(), pods in 4usize..40, policies in 1usize..16) {
        let now = generate(&SynthConfig { namespaces: 3, pods, policies, nodes: 2, seed });
        let then = changed(&now, &mut SynthRng::new(seed ^ 0x5eed));
        let probes = [Probe::new(Protocol::Tcp, 80), Probe::new(Protocol::Udp, 53), Probe::new(Protocol::Icmp, 0)];
        let w = what_if(&now, &then, &probes);
        let got: BTreeSet<Pair> = w
            .changes
            .iter()
            .map(|c| (c.from.to_string(), c.to.to_string(), c.probe, c.now, c.then))
            .collect();
        prop_assert_eq!(got.len(), w.changes.len(), "no pair listed twice");
        prop_assert_eq!(got, oracle(&now, &then, &probes));
        prop_assert!(w.changes.iter().all(|c| !c.because.is_empty()));
    }
}
