//! Root tests of the phased nftables write (libnftables scripts + netlink elements): after
//! every update of a random sequence the kernel reads back exactly as desired, no script
//! carries an element line (which would make nft fetch every element of the table), and a
//! failed write (script or netlink) is repaired by the reconciler. Each test in its own
//! throwaway namespace.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use palisade_calc::{compute_full, CalcConfig, DesiredState};
use palisade_dataplane::netns::{is_root, NetnsGuard};
use palisade_dataplane::nft::libnft::{LibNftables, ScriptWriter};
use palisade_dataplane::nft::netlink::{ElementOp, ElementWriter, NetlinkElements};
use palisade_dataplane::nft::NftBackend;
use palisade_dataplane::{Dataplane, DataplaneError, RetryPolicy, StateDataplane, ThreadSleeper};
use palisade_engine::synth::{generate, SynthConfig};
use palisade_model::Cluster;
use palisade_render::RenderConfig;

fn skip() -> bool {
    if !is_root() {
        eprintln!("skipped: needs root to create network namespaces");
        return true;
    }
    if std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: nft is not installed");
        return true;
    }
    false
}

fn dataplane(ns: &NetnsGuard, scripts: Arc<dyn ScriptWriter>) -> StateDataplane<NftBackend> {
    let elements = Arc::new(NetlinkElements::new(Some(ns.name().to_string())));
    StateDataplane::new(
        NftBackend::with_writers(elements, scripts),
        RenderConfig::default(),
        Arc::new(ns.runner()),
        Arc::new(ThreadSleeper),
        RetryPolicy::default(),
    )
}

fn state_of(cluster: &Cluster) -> DesiredState {
    compute_full(&CalcConfig::new("node-0"), cluster)
}

/// A deterministic pseudo-random step: relabel, remove or re-add a pod; remove or re-add a
/// policy. Local pods come and go too, so verdict-map elements are added and removed.
fn mutate(cluster: &mut Cluster, original: &Cluster, step: u64) {
    let r = step
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        >> 33;
    let n = cluster.endpoints.len().max(1);
    match r % 5 {
        0 | 1 => {
            if let Some(e) = cluster.endpoints.get_mut((r as usize / 5) % n) {
                let v = format!("v{}", r % 3);
                e.labels.insert("app".into(), v);
            }
        }
        2 => {
            if !cluster.endpoints.is_empty() {
                cluster.endpoints.remove((r as usize / 5) % n);
            }
        }
        3 => {
            let missing: Vec<_> = original
                .endpoints
                .iter()
                .filter(|e| cluster.endpoint(&e.id).is_none())
                .cloned()
                .collect();
            if let Some(e) = missing.get((r as usize / 5) % missing.len().max(1)) {
                cluster.upsert_endpoint(e.clone());
            }
        }
        _ => {
            let np = cluster.policies.len();
            if np > original.policies.len() / 2 && r.is_multiple_of(2) {
                cluster.policies.remove((r as usize / 5) % np);
            } else if let Some(p) = original
                .policies
                .iter()
                .find(|p| !cluster.policies.iter().any(|q| q.id == p.id))
            {
                cluster.upsert_policy(p.clone());
            }
        }
    }
}

#[test]
fn phased_updates_read_back_exactly_and_never_write_elements_in_scripts() {
    if skip() {
        return;
    }
    let ns = NetnsGuard::new("dph").unwrap();
    let lib = Arc::new(LibNftables::open(Some(ns.name().to_string())).unwrap());
    let mut dp = dataplane(&ns, lib);
    // Named ports, ipBlocks with except, IPv6, tiers with Deny and Pass: all kinds of sets.
    let original = generate(&SynthConfig {
        namespaces: 5,
        pods: 160,
        policies: 60,
        nodes: 2,
        seed: 11,
    });
    let mut cluster = original.clone();
    dp.apply_state(&state_of(&cluster)).unwrap();
    let (mut phased, mut structures, mut maps) = (0, 0, 0);
    for step in 0..40u64 {
        mutate(&mut cluster, &original, step);
        let r = dp.apply_state(&state_of(&cluster)).unwrap();
        for w in r.writes() {
            assert!(
                w.program == "libnftables" || w.program == "netlink",
                "step {step}: {w:?}"
            );
            if w.program == "libnftables" {
                let text = w.stdin.as_deref().unwrap_or_default();
                assert!(
                    !text
                        .lines()
                        .any(|l| l.starts_with("add element") || l.starts_with("delete element")),
                    "step {step}: a script with elements: {text}"
                );
            }
            phased += 1;
            structures += usize::from(w.args == ["structure"]);
            maps += usize::from(w.args == ["maps"]);
        }
        let again = dp.resync().unwrap();
        assert!(
            again.wrote_nothing(),
            "step {step}: kernel differs from desired after a phased write: {again:?}"
        );
    }
    assert!(
        phased > 40 && structures > 0 && maps > 0,
        "the sequence exercised the phases: {phased} writes, {structures} structures, {maps} maps"
    );
}

/// Counts the writes of both writers and fails the `n`-th.
struct Injector {
    n: usize,
    seen: AtomicUsize,
}

impl Injector {
    fn next(&self) -> Result<(), DataplaneError> {
        if self.seen.fetch_add(1, Ordering::SeqCst) == self.n {
            return Err(DataplaneError::Netlink("injected failure".into()));
        }
        Ok(())
    }
}

struct FailingScripts(Arc<Injector>, LibNftables);

impl ScriptWriter for FailingScripts {
    fn run(&self, script: &str) -> Result<(), DataplaneError> {
        self.0.next()?;
        self.1.run(script)
    }
}

struct FailingElements(Arc<Injector>, NetlinkElements);

impl ElementWriter for FailingElements {
    fn write(&self, ops: &[ElementOp]) -> Result<(), DataplaneError> {
        self.0.next()?;
        self.1.write(ops)
    }
}

#[test]
fn a_failed_phase_is_read_back_and_completed() {
    if skip() {
        return;
    }
    let original = generate(&SynthConfig {
        namespaces: 4,
        pods: 80,
        policies: 30,
        nodes: 2,
        seed: 5,
    });
    // Policies and a local pod more, then fewer again: the updates change set members,
    // create and rewrite chains, map and unmap an interface and remove chains and sets;
    // fail each write (script or netlink) in turn.
    let mut smaller = original.clone();
    smaller.policies.truncate(original.policies.len() * 2 / 3);
    let local = smaller
        .endpoints
        .iter()
        .position(|e| e.node.as_deref() == Some("node-0"))
        .unwrap();
    smaller.endpoints.remove(local);
    let mut tested = 0;
    for n in 1.. {
        let ns = NetnsGuard::new("dpf").unwrap();
        let name = Some(ns.name().to_string());
        let injector = Arc::new(Injector {
            n,
            seen: AtomicUsize::new(0),
        });
        let scripts = FailingScripts(injector.clone(), LibNftables::open(name.clone()).unwrap());
        let elements = FailingElements(injector.clone(), NetlinkElements::new(name));
        let mut dp = StateDataplane::new(
            NftBackend::with_writers(Arc::new(elements), Arc::new(scripts)),
            RenderConfig::default(),
            Arc::new(ns.runner()),
            Arc::new(ThreadSleeper),
            RetryPolicy::default(),
        );
        dp.apply_state(&state_of(&smaller)).unwrap();
        let grow = dp.apply_state(&state_of(&original)).unwrap();
        let shrink = dp.apply_state(&state_of(&smaller)).unwrap();
        // Writes are counted up to and including the retry's.
        if injector.seen.load(Ordering::SeqCst) <= n {
            assert_eq!(grow.attempts + shrink.attempts, 2);
            break;
        }
        tested += 1;
        assert_eq!(
            grow.attempts + shrink.attempts,
            3,
            "write {n}: one write failed and was retried"
        );
        assert!(
            dp.resync().unwrap().wrote_nothing(),
            "failure at write {n}: the retry left the kernel different from desired"
        );
    }
    assert!(tested >= 5, "only {tested} write positions were failed");
}
