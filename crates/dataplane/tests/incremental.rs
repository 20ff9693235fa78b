//! Incremental applies: after random sequences of cluster changes driven through the real
//! `Calculator`, the nftables and the iptables programs patched from the deltas equal a full
//! render of the same state, step by step (and the dataplane's own check,
//! `IncrementalMode::Verify`, agrees).

use std::sync::Arc;

use palisade_calc::{cluster_updates, CalcConfig, Calculator, Update};
use palisade_dataplane::{
    iptables_dataplane, nft_dataplane, Dataplane, IncrementalMode, NoopRunner, RecordingSleeper,
    RetryPolicy,
};
use palisade_engine::synth::{generate, SynthConfig};
use palisade_model::{Cluster, Endpoint, Policy};
use palisade_render::config::EndpointMatch;
use palisade_render::{NftLayout, RenderConfig};

const NODE: &str = "n1";

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn cluster(seed: u64) -> Cluster {
    let mut c = generate(&SynthConfig::sized(240, 40, seed));
    for (i, ep) in c.endpoints.iter_mut().enumerate() {
        if i % 4 == 0 {
            ep.node = Some(NODE.into());
        }
    }
    c
}

/// One random change: label or IP changes, pods moving to or off the node, pods and
/// policies removed and put back, namespace label changes.
fn change(
    rng: &mut Rng,
    c: &Cluster,
    gone_eps: &mut Vec<Endpoint>,
    gone_pols: &mut Vec<Policy>,
) -> Update {
    match rng.below(9) {
        0 | 1 => {
            let mut ep = c.endpoints[rng.below(c.endpoints.len())].clone();
            ep.labels.insert("app".into(), format!("a{}", rng.below(4)));
            Update::EndpointUpsert(ep)
        }
        2 => {
            let mut ep = c.endpoints[rng.below(c.endpoints.len())].clone();
            ep.node = if rng.below(2) == 0 {
                Some(NODE.into())
            } else {
                Some("elsewhere".into())
            };
            Update::EndpointUpsert(ep)
        }
        3 => {
            let mut ep = c.endpoints[rng.below(c.endpoints.len())].clone();
            let x = rng.below(250) + 1;
            ep.ips = vec![format!("10.{}.{}.{}", rng.below(8), rng.below(250), x)
                .parse()
                .expect("an address")];
            Update::EndpointUpsert(ep)
        }
        4 => {
            let ep = c.endpoints[rng.below(c.endpoints.len())].clone();
            let id = ep.id.clone();
            gone_eps.push(ep);
            Update::EndpointRemove(id)
        }
        5 => match gone_eps.pop() {
            Some(ep) => Update::EndpointUpsert(ep),
            None => Update::EndpointUpsert(c.endpoints[0].clone()),
        },
        6 => {
            let p = c.policies[rng.below(c.policies.len())].clone();
            let id = p.id.clone();
            gone_pols.push(p);
            Update::PolicyRemove(id)
        }
        7 => match gone_pols.pop() {
            Some(p) => Update::PolicyUpsert(p),
            None => Update::PolicyUpsert(c.policies[0].clone()),
        },
        _ => {
            let mut ns = c
                .namespaces
                .values()
                .nth(rng.below(c.namespaces.len()))
                .cloned();
            match ns.as_mut() {
                Some(ns) => {
                    ns.labels
                        .insert("team".into(), format!("t{}", rng.below(3)));
                    Update::NamespaceUpsert(ns.clone())
                }
                None => Update::EndpointUpsert(c.endpoints[0].clone()),
            }
        }
    }
}

/// Random batches of changes on four clusters, in both endpoint matchings (address: the
/// per-family address maps, pods added, removed, moved and readdressed; interface): after
/// each, the program patched from the deltas equals a full render of the same state (and the
/// dataplane's own Verify check agrees); every batch was patched, none fell back to a full
/// render.
macro_rules! patched_programs_equal_full_renders {
    ($make:path) => {
        patched_programs_equal_full_renders!($make, NftLayout::Chains)
    };
    ($make:path, $layout:expr) => {
        for (seed, endpoint_match) in [
            (1u64, EndpointMatch::Address),
            (2, EndpointMatch::Address),
            (3, EndpointMatch::Interface),
            (4, EndpointMatch::Address),
            (5, EndpointMatch::Interface),
        ] {
            let c = cluster(seed);
            let runner = Arc::new(NoopRunner);
            let sleeper = Arc::new(RecordingSleeper::new());
            let cfg = RenderConfig {
                endpoint_match,
                nft_layout: $layout,
                ..RenderConfig::default()
            };
            let mut dp = $make(
                cfg.clone(),
                runner.clone(),
                sleeper.clone(),
                RetryPolicy::none(),
            );
            dp.set_incremental(IncrementalMode::Verify);
            let mut full = $make(cfg, runner, sleeper, RetryPolicy::none());
            let mut calc = Calculator::new(CalcConfig::new(NODE));
            calc.apply_all(cluster_updates(&c));
            dp.apply_state(calc.state()).expect("first apply");
            let mut rng = Rng(seed * 7919 + 1);
            let (mut gone_eps, mut gone_pols) = (Vec::new(), Vec::new());
            let mut patched_steps = 0;
            for step in 0..150 {
                let n = 1 + rng.below(4);
                let updates: Vec<Update> = (0..n)
                    .map(|_| change(&mut rng, &c, &mut gone_eps, &mut gone_pols))
                    .collect();
                let deltas = calc.apply_all(updates.clone());
                if deltas.is_empty() {
                    continue;
                }
                patched_steps += 1;
                dp.apply_deltas(calc.state(), &deltas).unwrap_or_else(|e| {
                    panic!("seed {seed} step {step}: {e}\nupdates {updates:?}")
                });
                let want = full.render(calc.state()).expect("full render");
                assert!(
                    want == *dp.table.desired(),
                    "seed {seed} step {step}: patched program differs from the full render after {updates:?}"
                );
            }
            assert_eq!(dp.patch_fallbacks, 0, "seed {seed}");
            assert_eq!(dp.patched, patched_steps, "seed {seed}");
            assert!(
                patched_steps > 100,
                "seed {seed}: only {patched_steps} steps changed anything"
            );
        }
    };
}

#[test]
fn patched_nftables_programs_equal_full_renders() {
    patched_programs_equal_full_renders!(nft_dataplane);
}

/// The same with the flat layout: the flat sets of the touched endpoints are refilled.
#[test]
fn patched_flat_nftables_programs_equal_full_renders() {
    patched_programs_equal_full_renders!(nft_dataplane, NftLayout::Flat);
}

#[test]
fn patched_iptables_programs_equal_full_renders() {
    patched_programs_equal_full_renders!(iptables_dataplane);
}

/// Anti-spoofing bindings that change between applies (pods coming, going, moving to a bridge,
/// becoming ambiguous) are patched into the sets one member at a time, and the patched
/// program equals a full render with the same bindings (the Verify check).
#[test]
fn binding_changes_are_patched_like_set_members() {
    use palisade_render::config::SourceBinding;
    use std::collections::BTreeMap;
    let c = cluster(9);
    let mut calc = Calculator::new(CalcConfig::new(NODE));
    calc.apply_all(cluster_updates(&c));
    let locals: Vec<std::net::IpAddr> = calc
        .state()
        .endpoints
        .values()
        .flat_map(|e| e.ips.clone())
        .collect();
    assert!(locals.len() >= 4);
    let routed = |i: usize| {
        Some(SourceBinding {
            iface: format!("veth{i}"),
            bridge_port: None,
        })
    };
    let bridged = |i: usize| {
        Some(SourceBinding {
            iface: "br0".into(),
            bridge_port: Some(format!("vb{i}")),
        })
    };
    let steps: Vec<BTreeMap<std::net::IpAddr, Option<SourceBinding>>> = vec![
        BTreeMap::from([(locals[0], routed(0)), (locals[1], routed(1))]),
        BTreeMap::from([(locals[0], routed(0)), (locals[2], bridged(2))]),
        BTreeMap::from([
            (locals[0], None),
            (locals[2], bridged(3)),
            (locals[3], routed(3)),
        ]),
        BTreeMap::new(),
    ];
    let mut dp = nft_dataplane(
        RenderConfig::default(),
        Arc::new(NoopRunner),
        Arc::new(RecordingSleeper::new()),
        RetryPolicy::none(),
    );
    dp.set_incremental(IncrementalMode::Verify);
    dp.apply_state(calc.state()).expect("first apply");
    for (i, b) in steps.into_iter().enumerate() {
        assert!(dp.set_source_bindings(b), "step {i}: changed");
        dp.apply_deltas(calc.state(), &[])
            .unwrap_or_else(|e| panic!("step {i}: {e}"));
    }
    assert_eq!(dp.patch_fallbacks, 0);
    assert_eq!(dp.patched, 4, "every binding change was patched");
}
