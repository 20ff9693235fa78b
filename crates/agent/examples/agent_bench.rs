//! Agent benchmark (root): one node with 110 local pods, 10,000 remote pods and 2,000
//! policies (the engine's synthetic cluster), iptables and nftables in the same run, each in
//! its own throwaway network namespace, with the embedded datastore in process.
//!
//! Measures, per backend: the time to program from empty (agent start → ready), and the time
//! from a datastore write (embedded store put) to the kernel being updated (the apply that
//! includes it has returned from `iptables-restore`/`ipset`/`nft -f`) for one pod label change
//! and for one policy add, p50/p99 over `--trials` trials (default 60), spaced so that each
//! write finds the agent idle.
//!
//! ```text
//! cargo run --release -p palisade-agent --example agent_bench [-- --trials 60 --local 110 --remote 10000 --policies 2000 --backend both --incremental both --endpoint-match both]
//! ```
//!
//! `--backend iptables|nftables|both`; `--endpoint-match address|interface|both` (how pods are
//! found: address verdict maps / per-address rules, or interface names); `--incremental
//! on|off|both`: each backend runs once per mode and matching, `[<backend>/full]` rendering the whole node for every apply (the agent before
//! incremental applies), `[<backend>/incremental]` patching only what changed (the default
//! agent). `--nft-layout flat|chains|both`: how the nftables runs lay out the NetworkPolicy
//! tiers (default both); each nftables run also prints the elements of its sets by kind and
//! the kernel memory the node's table took (Slab + VmallocUsed of /proc/meminfo, before and
//! after programming: a machine-wide figure, noisy when other work runs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_agent::config::{EndpointMatch, IncrementalMode};
use palisade_agent::run::build_dataplane;
use palisade_agent::{Agent, AgentConfig, DataplaneKind};
use palisade_dataplane::netns::{is_root, NetnsGuard};
use palisade_engine::synth::{generate, SynthConfig};
use palisade_model::{
    Action, EndpointPeer, NamespaceMatch, Peer, Policy, PolicyId, PortMatch, PortSpec, Protocol,
    Rule, Selector,
};
use palisade_render::NftLayout;
use palisade_store::{Datastore, EmbeddedStore, Op, Record, StoredObject, OWNER_APPLY};

const NODE: &str = "n1";

struct Opts {
    backends: Vec<DataplaneKind>,
    layouts: Vec<NftLayout>,
    matches: Vec<EndpointMatch>,
    modes: Vec<IncrementalMode>,
    trials: usize,
    local: usize,
    remote: usize,
    policies: usize,
}

fn opts() -> Opts {
    let mut o = Opts {
        backends: vec![DataplaneKind::Iptables, DataplaneKind::Nftables],
        layouts: vec![NftLayout::Chains, NftLayout::Flat],
        matches: vec![EndpointMatch::Address, EndpointMatch::Interface],
        modes: vec![IncrementalMode::Off, IncrementalMode::On],
        trials: 60,
        local: 110,
        remote: 10_000,
        policies: 2_000,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < args.len() {
        match (args[i].as_str(), args[i + 1].as_str()) {
            ("--backend", "iptables") => o.backends = vec![DataplaneKind::Iptables],
            ("--backend", "nftables") => o.backends = vec![DataplaneKind::Nftables],
            ("--backend", _) => {}
            ("--incremental", "on") => o.modes = vec![IncrementalMode::On],
            ("--incremental", "off") => o.modes = vec![IncrementalMode::Off],
            ("--incremental", _) => {}
            ("--endpoint-match", "address") => o.matches = vec![EndpointMatch::Address],
            ("--endpoint-match", "interface") => o.matches = vec![EndpointMatch::Interface],
            ("--endpoint-match", _) => {}
            ("--nft-layout", "flat") => o.layouts = vec![NftLayout::Flat],
            ("--nft-layout", "chains") => o.layouts = vec![NftLayout::Chains],
            ("--nft-layout", _) => {}
            _ => {}
        }
        if matches!(
            args[i].as_str(),
            "--backend" | "--incremental" | "--endpoint-match" | "--nft-layout"
        ) {
            i += 2;
            continue;
        }
        let v: usize = args[i + 1]
            .parse()
            .unwrap_or_else(|_| panic!("bad value for {}", args[i]));
        match args[i].as_str() {
            "--trials" => o.trials = v,
            "--local" => o.local = v,
            "--remote" => o.remote = v,
            "--policies" => o.policies = v,
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    o
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn summary(name: &str, mut v: Vec<Duration>) -> String {
    v.sort();
    format!(
        "{name}: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        v.len(),
        percentile(&v, 0.5).as_secs_f64() * 1e3,
        percentile(&v, 0.99).as_secs_f64() * 1e3,
        v.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    )
}

/// Medians of where the applies spent their time.
fn breakdown(t: &[palisade_agent::shared::ApplyTiming]) -> String {
    let med = |f: &dyn Fn(&palisade_agent::shared::ApplyTiming) -> Duration| {
        let mut v: Vec<Duration> = t.iter().map(f).collect();
        v.sort();
        percentile(&v, 0.5).as_secs_f64() * 1e3
    };
    format!(
        "median apply {:.2} ms = calc {:.2} ms + render {:.2} ms + reconcile {:.2} ms (of which kernel writes {:.2} ms)",
        med(&|x| x.total),
        med(&|x| x.calc),
        med(&|x| x.total.saturating_sub(x.calc).saturating_sub(x.dataplane)),
        med(&|x| x.dataplane),
        med(&|x| x.write),
    )
}

/// The synthetic cluster with exactly `local` IPv4 pods on `NODE` and the rest elsewhere.
fn objects(o: &Opts) -> Vec<StoredObject> {
    let total = o.local + o.remote;
    let cluster = generate(&SynthConfig::sized(total, o.policies, 7));
    let mut out: Vec<StoredObject> = cluster
        .namespaces
        .values()
        .cloned()
        .map(StoredObject::Namespace)
        .collect();
    let mut local = 0;
    for (i, mut ep) in cluster.endpoints.into_iter().enumerate() {
        let v4 = ep.ips.first().is_some_and(|ip| ip.is_ipv4());
        if local < o.local && v4 {
            ep.node = Some(NODE.into());
            local += 1;
        } else {
            ep.node = Some(format!("node-{}", i % 90 + 1));
        }
        out.push(StoredObject::Endpoint(ep));
    }
    out.extend(cluster.policies.into_iter().map(StoredObject::Policy));
    out
}

async fn put_batch(store: &dyn Datastore, objs: &[StoredObject]) -> i64 {
    let mut rev = 0;
    for chunk in objs.chunks(1000) {
        let ops = chunk
            .iter()
            .map(|o| {
                Op::put(
                    o.key().unwrap(),
                    Record::new(OWNER_APPLY, o.clone()).encode().unwrap(),
                )
            })
            .collect();
        rev = store.apply_batch(ops).await.unwrap();
    }
    rev
}

/// Writes `obj` and returns the time until the agent has applied it to the kernel, and
/// whether that apply wrote anything.
async fn timed_put(
    store: &dyn Datastore,
    shared: &palisade_agent::Shared,
    obj: &StoredObject,
) -> (Duration, bool, palisade_agent::shared::ApplyTiming) {
    let mut applied = shared.applied();
    let value = Record::new(OWNER_APPLY, obj.clone()).encode().unwrap();
    let key = obj.key().unwrap();
    let t0 = Instant::now();
    let rev = store.put(&key, value).await.unwrap();
    applied.wait_for(|r| *r >= rev).await.unwrap();
    let dt = t0.elapsed();
    let p = shared.progress();
    (dt, p.last_wrote, p.last_timing)
}

/// Slab + VmallocUsed of /proc/meminfo, in KiB.
fn kernel_kib() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("Slab:") || l.starts_with("VmallocUsed:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// Elements of the node's nftables sets: (flat lookups, flat any-protocol sets, the rest), and
/// the number of sets.
fn nft_elements(netns: &str) -> (usize, usize, usize, usize) {
    let out = std::process::Command::new("ip")
        .args([
            "netns", "exec", netns, "nft", "-j", "list", "table", "inet", "palisade",
        ])
        .output()
        .expect("nft");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let (mut flat, mut any, mut rest, mut sets) = (0, 0, 0, 0);
    for item in v["nftables"].as_array().into_iter().flatten() {
        let Some(set) = item.get("set") else { continue };
        sets += 1;
        let n = set["elem"].as_array().map_or(0, Vec::len);
        let concat_interval = set["type"].is_array()
            && set["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "interval"));
        // The any-protocol sets say so in their comment (see `render::build::flat`).
        let comment = set["comment"].as_str().unwrap_or("");
        if concat_interval {
            flat += n;
        } else if comment.contains("allowed peers, every protocol") {
            any += n;
        } else {
            rest += n;
        }
    }
    (flat, any, rest, sets)
}

async fn bench(
    backend: DataplaneKind,
    mode: IncrementalMode,
    endpoint_match: EndpointMatch,
    layout: NftLayout,
    o: &Opts,
    objs: &[StoredObject],
) {
    let kind = match mode {
        IncrementalMode::Off => format!("{backend}/full/{endpoint_match}"),
        _ => format!("{backend}/incremental/{endpoint_match}"),
    };
    let kind = match backend {
        DataplaneKind::Nftables => format!("{kind}/{layout}"),
        _ => kind,
    };
    let kib_before = kernel_kib();
    let node = NetnsGuard::new("bench").expect("cannot create a network namespace");
    let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::new());
    put_batch(store.as_ref(), objs).await;
    let mut cfg = AgentConfig::new(NODE);
    cfg.dataplane = backend;
    cfg.incremental = mode;
    cfg.resync_interval = Duration::from_secs(3600);
    cfg.netns = Some(node.name().to_string());
    cfg.render.endpoint_match = endpoint_match;
    if backend == DataplaneKind::Nftables {
        cfg.render.nft_layout = layout;
    }
    let runner = Arc::new(node.runner());
    let dp = build_dataplane(&cfg, runner.clone());
    // With the kernel probe, as `palisade agent` runs (anti-spoofing bindings, sysctls).
    let agent = Agent::new(cfg, store.clone(), dp)
        .unwrap()
        .with_kernel(runner);
    let shared = agent.shared();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let t0 = Instant::now();
    let task = tokio::spawn(agent.run(async move {
        let _ = stop_rx.await;
    }));
    while !shared.ready() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let from_empty = t0.elapsed();
    let m = shared.metrics.encode();
    let gauge = |name: &str| {
        m.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_string()
    };
    println!(
        "[{kind}] program from empty: {:.0} ms (local endpoints {}, active policies {}, rules {}, sets {}, members {})",
        from_empty.as_secs_f64() * 1e3,
        gauge("palisade_agent_local_endpoints"),
        gauge("palisade_agent_active_policies"),
        gauge("palisade_agent_rules "),
        gauge("palisade_agent_ip_sets "),
        gauge("palisade_agent_ip_set_members"),
    );
    if backend == DataplaneKind::Nftables {
        let (flat, any, rest, sets) = nft_elements(node.name());
        println!(
            "[{kind}] kernel: {sets} sets; elements: {flat} flat (address . protocol . port), {any} flat any-protocol, {rest} other; Slab+VmallocUsed +{} KiB",
            kernel_kib().saturating_sub(kib_before)
        );
    }

    // One pod label change: a local pod moves to another app and back.
    let locals: Vec<_> = objs
        .iter()
        .filter_map(|ob| match ob {
            StoredObject::Endpoint(e) if e.node.as_deref() == Some(NODE) => Some(e.clone()),
            _ => None,
        })
        .collect();
    let mut current = locals.clone();
    let mut timings = Vec::new();
    let mut label_times = Vec::new();
    let mut label_wrote = Vec::new();
    for t in 0..o.trials {
        // Even trials move a pod to another app, odd ones move it back: every trial is a
        // real label change and the node ends as it started (the next measurements rely
        // on the original labels).
        let i = (t / 2) % locals.len();
        let mut ep = locals[i].clone();
        if t % 2 == 0 {
            ep.labels.insert("app".into(), format!("bench-{}", t % 3));
        }
        current[i] = ep.clone();
        let (dt, wrote, timing) =
            timed_put(store.as_ref(), &shared, &StoredObject::Endpoint(ep)).await;
        label_times.push(dt);
        timings.push(timing);
        if wrote {
            label_wrote.push(dt);
        }
        tokio::time::sleep(Duration::from_millis(60)).await; // let the agent go idle
    }
    println!(
        "[{kind}] {}",
        summary("pod label change → kernel, all", label_times)
    );
    println!(
        "[{kind}] {}",
        summary(
            "pod label change → kernel, those that changed the kernel",
            label_wrote
        )
    );
    println!("[{kind}]   {}", breakdown(&std::mem::take(&mut timings)));

    // One remote pod added with the labels of a local pod: it joins the same IP sets, no
    // chain changes (the element-only path).
    let mut member_times = Vec::new();
    for t in 0..o.trials {
        let mut ep = locals[(t * 7 + 3) % locals.len()].clone();
        ep.id.name = format!("bench-remote-{t}");
        ep.node = Some("node-99".into());
        ep.ips = vec![format!("10.250.{}.{}", t / 200, t % 200 + 1)
            .parse()
            .unwrap()];
        let (dt, wrote, timing) =
            timed_put(store.as_ref(), &shared, &StoredObject::Endpoint(ep)).await;
        if wrote {
            member_times.push(dt);
            timings.push(timing);
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    println!(
        "[{kind}] {}",
        summary("remote pod add (set members only) → kernel", member_times)
    );
    println!("[{kind}]   {}", breakdown(&std::mem::take(&mut timings)));

    // One policy add: a new policy selecting a local pod's app, allowing another app in.
    let mut add_times = Vec::new();
    let mut add_wrote = 0;
    for t in 0..o.trials {
        let target = &current[t % current.len()];
        let ns = target.id.namespace.clone();
        let app = target.labels.get("app").cloned().unwrap_or_default();
        let p = Policy {
            id: PolicyId {
                tier: palisade_model::DEFAULT_TIER.into(),
                namespace: Some(ns.clone()),
                name: format!("bench-add-{t}"),
            },
            order: palisade_model::KUBERNETES_POLICY_ORDER,
            selector: Selector::parse(&format!("app == '{app}'")).unwrap(),
            namespace_selector: Selector::All,
            staged: false,
            ingress: Some(vec![Rule {
                action: Action::Allow,
                peers: vec![Peer::Endpoints(EndpointPeer {
                    namespaces: NamespaceMatch::Name(ns),
                    pods: Selector::parse(&format!("app == 'bench-peer-{t}'")).unwrap(),
                })],
                ports: vec![PortSpec {
                    protocol: Protocol::Tcp,
                    port: PortMatch::Range {
                        start: 8000 + t as u16,
                        end: 8000 + t as u16,
                    },
                }],
            }]),
            egress: None,
        };
        let (dt, wrote, timing) =
            timed_put(store.as_ref(), &shared, &StoredObject::Policy(p)).await;
        add_times.push(dt);
        timings.push(timing);
        add_wrote += usize::from(wrote);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    println!(
        "[{kind}] {} (applies that wrote: {add_wrote})",
        summary("policy add → kernel", add_times)
    );
    println!("[{kind}]   {}", breakdown(&timings));
    let _ = stop_tx.send(());
    let _ = task.await;
}

/// Times the pure stages for the node's state: `render::build` alone, and the dataplane's
/// whole render (build, rule origins, program) as every apply runs it.
fn render_costs(objs: &[StoredObject]) {
    use palisade_agent::translate::{Translated, Translator};
    let mut t = Translator::new();
    let updates: Vec<_> = objs
        .iter()
        .filter_map(|o| {
            let ev = palisade_store::SyncEvent::Update {
                key: o.key().unwrap(),
                value: Some(Record::new(OWNER_APPLY, o.clone())),
                revision: 1,
            };
            match t.translate(ev) {
                Translated::Update(u) => Some(u),
                _ => None,
            }
        })
        .collect();
    let cfg = AgentConfig::new(NODE);
    let mut calc = palisade_calc::Calculator::new(cfg.calc_config());
    let t0 = Instant::now();
    calc.apply_all(updates);
    let calc_full = t0.elapsed();
    let state = calc.state();
    let mut build = Vec::new();
    for _ in 0..10 {
        let t0 = Instant::now();
        let _ = palisade_render::build(state, &cfg.render).unwrap();
        build.push(t0.elapsed());
    }
    let sleeper = Arc::new(palisade_dataplane::RecordingSleeper::new());
    let noop = Arc::new(palisade_dataplane::NoopRunner);
    let mut ipt = palisade_dataplane::iptables_dataplane(
        cfg.render.clone(),
        noop.clone(),
        sleeper.clone(),
        palisade_dataplane::RetryPolicy::none(),
    );
    let mut nft = palisade_dataplane::nft_dataplane(
        cfg.render.clone(),
        noop,
        sleeper,
        palisade_dataplane::RetryPolicy::none(),
    );
    let (mut ipt_t, mut nft_t) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let t0 = Instant::now();
        let _ = ipt.render(state).unwrap();
        ipt_t.push(t0.elapsed());
        let t0 = Instant::now();
        let _ = nft.render(state).unwrap();
        nft_t.push(t0.elapsed());
    }
    println!(
        "pure stages: full calculation {:.0} ms",
        calc_full.as_secs_f64() * 1e3
    );
    println!("  {}", summary("render::build (whole node)", build));
    println!(
        "  {}",
        summary(
            "iptables dataplane render (build + origins + program)",
            ipt_t
        )
    );
    println!(
        "  {}",
        summary(
            "nftables dataplane render (build + origins + program)",
            nft_t
        )
    );
}

fn main() {
    if !is_root() {
        eprintln!(
            "agent_bench needs root (it programs the kernel of a throwaway network namespace)"
        );
        std::process::exit(2);
    }
    let o = opts();
    let objs = objects(&o);
    println!(
        "agent_bench: {} local pods on {NODE}, {} remote pods, {} policies, {} trials per measurement",
        o.local, o.remote, o.policies, o.trials
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    render_costs(&objs);
    rt.block_on(async {
        for &backend in &o.backends {
            let layouts = match backend {
                DataplaneKind::Nftables => o.layouts.clone(),
                _ => vec![NftLayout::Chains],
            };
            for &mode in &o.modes {
                for &m in &o.matches {
                    for &layout in &layouts {
                        bench(backend, mode, m, layout, &o, &objs).await;
                    }
                }
            }
        }
    });
}
