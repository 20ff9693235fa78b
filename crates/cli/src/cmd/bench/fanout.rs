//! `palisade bench fanout`: how fast a change in etcd reaches many agents.
//!
//! Starts (or uses) one etcd, stores a synthetic cluster of `--pods` pods and `--policies`
//! policies whose pods are spread evenly over `--agents` nodes, plus one cluster-wide bench
//! policy that selects every pod. Then runs `--agents` simulated agents in this one process
//! ([`sim`]: each with its own etcd client, syncer, translator and calculator, no kernel)
//! and measures:
//!
//! * start-up: from starting the agents until the last one has applied its first snapshot;
//! * policy changes: the bench policy's port is changed `--changes` times; each time, from the
//!   put until the last agent's state changed (every agent has it active);
//! * pod label changes: one pod at a time gets the label the bench policy's peer selector
//!   picks; from the put until the last agent's peer set holds it;
//! * etcd's CPU time, memory and bytes sent per phase, and this process's.
//!
//! With `--relays R` the agents read through `R` relays (`palisade relay` processes, each
//! with one watch of etcd) instead of etcd; with `--compare` the same run measures both,
//! direct first, then through the relays (the cluster stays; the second pass uses other
//! pods for its label changes).
//!
//! Every trial also checks that every agent reached the expected state (the port, the peer
//! count), so the bench fails (exit 1) rather than report a time for a state not reached.

mod procstat;
mod relays;
mod sim;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use palisade_engine::synth::{generate, SynthConfig};
use palisade_model::{
    Action, Endpoint, EndpointPeer, NamespaceMatch, Peer, Policy, PolicyId, PortMatch, PortSpec,
    Protocol, Rule, Selector,
};
use palisade_store::testing::EtcdServer;
use palisade_store::{
    Datastore, DatastoreUrl, EtcdConfig, EtcdStore, Op, Record, RelayStore, Revision, StoredObject,
    OWNER_APPLY,
};
use serde::Serialize;
use tokio::sync::watch;

use super::Output;
use procstat::{EtcdProbe, EtcdSample, ProcSample};
use relays::Relays;

/// How long one trial (or the start-up) may take before the bench gives up on an agent.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(300);
/// The label the bench policy's peer selector picks.
const PEER_LABEL: &str = "palisade-fanout";
/// The first port the bench policy allows; trial `t` sets `BASE_PORT + 1 + t`.
const BASE_PORT: u16 = 20000;

#[derive(clap::Args)]
pub struct FanoutArgs {
    /// Simulated agents, one node each, all in this process.
    #[arg(long, default_value_t = 20)]
    pub agents: usize,
    /// Pods in the synthetic cluster, spread evenly over the agents' nodes.
    #[arg(long, default_value_t = 400)]
    pub pods: usize,
    /// Policies in the synthetic cluster (plus the bench's own).
    #[arg(long, default_value_t = 100)]
    pub policies: usize,
    /// Timed policy changes, and as many timed pod label changes.
    #[arg(long, default_value_t = 100)]
    pub changes: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Use this etcd (etcd://HOST:PORT[,...]) instead of starting one; it must be empty
    /// under /palisade/ (the bench writes there). etcd's CPU and memory are then not read.
    #[arg(long, value_name = "URL")]
    pub datastore: Option<String>,
    /// The metrics listener (HOST:PORT) of the etcd given with --datastore, for bytes sent.
    #[arg(long, value_name = "HOST:PORT", requires = "datastore")]
    pub etcd_metrics: Option<String>,
    /// Agents read through this many relays (`palisade relay` processes, agent i using
    /// relay i mod R) instead of etcd directly; 0: directly.
    #[arg(long, default_value_t = 0, value_name = "R")]
    pub relays: usize,
    /// Measure twice in one run: agents directly on etcd, then through --relays relays.
    #[arg(long, requires = "relays")]
    pub compare: bool,
    /// What each agent runs: `calc` (syncer, translator and calculator, as the real agent)
    /// or `delivery` (syncer and translator only: the cost of delivering the datastore to
    /// the agents, at sizes whose calculators do not fit in this machine's memory).
    #[arg(long, value_enum, default_value_t = PipelineArg::Calc)]
    pub pipeline: PipelineArg,
    /// Worker threads of this process (default: one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PipelineArg {
    Calc,
    Delivery,
}

#[derive(Serialize)]
struct Latency {
    changes: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Mean over the changes of the spread between the first and the last agent.
    mean_first_to_last_ms: f64,
}

#[derive(Serialize, Default)]
struct PhaseCost {
    /// etcd's CPU time in the phase, in seconds (when the bench started etcd).
    etcd_cpu_seconds: Option<f64>,
    /// Bytes etcd sent to its clients in the phase.
    etcd_sent_bytes: Option<f64>,
    /// This process's CPU time in the phase (every agent together), in seconds.
    agents_cpu_seconds: Option<f64>,
    /// The relays' CPU time in the phase (all of them), in seconds; `None` when direct.
    relays_cpu_seconds: Option<f64>,
}

#[derive(Serialize)]
struct ProcessFigures {
    rss_kib: u64,
    peak_rss_kib: u64,
    cpu_seconds: f64,
}

#[derive(Serialize)]
struct Report {
    agents: usize,
    pods: usize,
    policies: usize,
    namespaces: usize,
    local_pods_per_agent_max: usize,
    /// What each agent ran after its syncer: `calc` or `delivery` (nothing).
    pipeline: PipelineArg,
    /// Processes the agents ran in.
    processes: usize,
    datastore: String,
    etcd_started_by_bench: bool,
    /// Time to store the cluster.
    load_ms: f64,
    /// The (first) pass: directly on etcd, or through relays without --compare.
    #[serde(flatten)]
    pass: Pass,
    /// With --compare: the second pass, through the relays.
    through_relays: Option<Pass>,
    /// Every agent reached every state the bench waited for (in every pass).
    all_agents_reached_state: bool,
}

/// One set of agents, started and measured.
#[derive(Serialize)]
struct Pass {
    /// Relays the agents read through (0: directly from etcd).
    relays: usize,
    /// From starting the agents until the last one applied its first snapshot.
    startup_ms: f64,
    policy_change: Latency,
    label_change: Latency,
    startup_cost: PhaseCost,
    policy_changes_cost: PhaseCost,
    label_changes_cost: PhaseCost,
    /// etcd at the end of the pass (when the bench started it).
    etcd: Option<ProcessFigures>,
    /// This process (all agents) at the end of the pass; `rss_kib_per_agent` is its growth
    /// from before the agents started, divided by their number.
    bench_process: Option<ProcessFigures>,
    rss_kib_per_agent: Option<f64>,
    /// The relays at the end of the pass, summed.
    relay_processes: Option<ProcessFigures>,
    #[serde(skip)]
    ok: bool,
}

pub fn run(a: FanoutArgs) -> Result<ExitCode> {
    if a.agents == 0 {
        bail!("--agents must be at least 1");
    }
    if a.pods < a.agents {
        bail!(
            "--pods ({}) must be at least --agents ({}): every agent needs a local pod",
            a.pods,
            a.agents
        );
    }
    if a.changes == 0 {
        bail!("--changes must be at least 1");
    }
    // As the real agent does (see palisade_agent::alloc): the RSS per agent is then its heap.
    palisade_agent::alloc::limit_arenas();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = a.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = rt.block_on(bench(&a))?;
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => print_report(&report),
    }
    // Dropping the runtime would wait for a thousand watch tasks to notice; they are ours.
    rt.shutdown_background();
    Ok(if report.all_agents_reached_state {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The bench's etcd: started here, or given.
struct Etcd {
    _server: Option<EtcdServer>,
    config: EtcdConfig,
    url: String,
    probe: EtcdProbe,
}

fn etcd(a: &FanoutArgs) -> Result<Etcd> {
    let mut etcd = match &a.datastore {
        None => {
            let server = EtcdServer::start()
                .context("cannot start etcd (is the `etcd` binary on PATH? or pass --datastore)")?;
            Etcd {
                config: server.config(),
                url: server.url(),
                probe: EtcdProbe {
                    pid: server.pid(),
                    metrics: Some(server.metrics_endpoint()),
                },
                _server: Some(server),
            }
        }
        Some(text) => {
            let endpoints = match text.parse::<DatastoreUrl>()? {
                DatastoreUrl::Etcd { endpoints } => endpoints,
                DatastoreUrl::Embedded => {
                    bail!("--datastore: the fanout bench needs etcd (embedded: is one per process)")
                }
            };
            Etcd {
                config: EtcdConfig::new(endpoints),
                url: text.clone(),
                probe: EtcdProbe {
                    pid: None,
                    metrics: a.etcd_metrics.clone(),
                },
                _server: None,
            }
        }
    };
    // A thousand clients on two cores: answers can be slow, that is what is measured.
    etcd.config.connect_timeout = Duration::from_secs(30);
    etcd.config.request_timeout = Duration::from_secs(120);
    etcd.config.watch_give_up = Duration::from_secs(300);
    Ok(etcd)
}

fn node_name(i: usize) -> String {
    format!("fanout-{i}")
}

fn bench_policy_id() -> PolicyId {
    PolicyId {
        tier: "admin".into(),
        namespace: None,
        name: "palisade-fanout-bench".into(),
    }
}

/// The cluster-wide bench policy: selects every pod, allows `port` from pods labelled
/// `PEER_LABEL=peer` (in any namespace).
fn bench_policy(port: u16) -> Policy {
    Policy {
        id: bench_policy_id(),
        order: 1,
        selector: Selector::All,
        namespace_selector: Selector::All,
        staged: false,
        ingress: Some(vec![Rule {
            action: Action::Allow,
            peers: vec![Peer::Endpoints(EndpointPeer {
                namespaces: NamespaceMatch::Selector(Selector::All),
                pods: Selector::parse(&format!("{PEER_LABEL} == 'peer'"))
                    .expect("the bench selector parses"),
            })],
            ports: vec![PortSpec {
                protocol: Protocol::Tcp,
                port: PortMatch::Range {
                    start: port,
                    end: port,
                },
            }],
        }]),
        egress: None,
    }
}

struct Cluster {
    objects: Vec<StoredObject>,
    /// Pods with exactly one address, for the label trials.
    label_candidates: Vec<Endpoint>,
    namespaces: usize,
    max_local: usize,
}

/// Sets of agents the run measures: one, or two with --compare.
fn passes(a: &FanoutArgs) -> usize {
    if a.compare {
        2
    } else {
        1
    }
}

fn cluster(a: &FanoutArgs) -> Cluster {
    let c = generate(&SynthConfig::sized(a.pods, a.policies, a.seed));
    let namespaces = c.namespaces.len();
    let mut objects: Vec<StoredObject> = c
        .namespaces
        .into_values()
        .map(StoredObject::Namespace)
        .collect();
    let mut per_node = vec![0usize; a.agents];
    let mut label_candidates = Vec::new();
    for (i, mut ep) in c.endpoints.into_iter().enumerate() {
        ep.node = Some(node_name(i % a.agents));
        per_node[i % a.agents] += 1;
        if ep.ips.len() == 1 && label_candidates.len() < a.changes * passes(a) {
            label_candidates.push(ep.clone());
        }
        objects.push(StoredObject::Endpoint(ep));
    }
    objects.extend(c.policies.into_iter().map(StoredObject::Policy));
    objects.push(StoredObject::Policy(bench_policy(BASE_PORT)));
    Cluster {
        objects,
        label_candidates,
        namespaces,
        max_local: per_node.into_iter().max().unwrap_or(0),
    }
}

fn encode(o: &StoredObject) -> Result<(String, Vec<u8>)> {
    Ok((o.key()?, Record::new(OWNER_APPLY, o.clone()).encode()?))
}

async fn load(store: &dyn Datastore, objects: &[StoredObject]) -> Result<Revision> {
    let mut rev = 0;
    for chunk in objects.chunks(1000) {
        let ops = chunk
            .iter()
            .map(|o| encode(o).map(|(k, v)| Op::put(k, v)))
            .collect::<Result<Vec<_>>>()?;
        rev = store
            .apply_batch(ops)
            .await
            .context("storing the cluster")?;
    }
    Ok(rev)
}

async fn bench(a: &FanoutArgs) -> Result<Report> {
    let etcd = etcd(a)?;
    let writer: Arc<dyn Datastore> = Arc::new(
        EtcdStore::connect(etcd.config.clone())
            .await
            .with_context(|| format!("cannot use etcd at {}", etcd.url))?,
    );
    if !writer
        .list(palisade_store::keys::ROOT)
        .await?
        .items
        .is_empty()
    {
        bail!(
            "the datastore at {} already holds objects under {}: give the bench an empty one",
            etcd.url,
            palisade_store::keys::ROOT
        );
    }
    let cl = cluster(a);
    let needed = a.changes * passes(a);
    if cl.label_candidates.len() < needed {
        bail!(
            "--changes {} needs {needed} single-address pods; the cluster has {} (raise --pods)",
            a.changes,
            cl.label_candidates.len()
        );
    }
    let t = Instant::now();
    let loaded = load(writer.as_ref(), &cl.objects).await?;
    let load_ms = ms(t.elapsed());

    let mut state = Trials {
        loaded,
        port: BASE_PORT,
        peers: 0,
        next_port: BASE_PORT + 1,
    };
    let (pass, through_relays) = if a.compare {
        let direct = run_pass(a, &etcd, &writer, &cl, 0, &mut state).await?;
        let relayed = run_pass(a, &etcd, &writer, &cl, a.relays, &mut state).await?;
        (direct, Some(relayed))
    } else {
        (
            run_pass(a, &etcd, &writer, &cl, a.relays, &mut state).await?,
            None,
        )
    };
    Ok(Report {
        agents: a.agents,
        pods: a.pods,
        policies: a.policies,
        namespaces: cl.namespaces,
        local_pods_per_agent_max: cl.max_local,
        pipeline: a.pipeline,
        processes: 1,
        datastore: etcd.url.clone(),
        etcd_started_by_bench: a.datastore.is_none(),
        load_ms,
        all_agents_reached_state: pass.ok && through_relays.as_ref().is_none_or(|p| p.ok),
        pass,
        through_relays,
    })
}

/// Where the trials left the cluster: what the next set of agents starts from.
struct Trials {
    /// The revision every agent must reach at start-up.
    loaded: Revision,
    /// The bench policy's port and the number of pods labelled as its peers.
    port: u16,
    peers: usize,
    next_port: u16,
}

/// Starts `a.agents` agents (through `relays` relays, or directly), measures start-up and
/// the trials, and stops them.
async fn run_pass(
    a: &FanoutArgs,
    etcd: &Etcd,
    writer: &Arc<dyn Datastore>,
    cl: &Cluster,
    relays: usize,
    st: &mut Trials,
) -> Result<Pass> {
    let relays = if relays > 0 {
        Some(Relays::start(relays, &etcd.url)?)
    } else {
        None
    };
    let relay_sample = || relays.as_ref().and_then(Relays::sample);
    // Start-up.
    let mut ok = true;
    palisade_agent::alloc::release_free_memory();
    let bench_before = procstat::sample("self");
    let (etcd0, self0, relay0) = (
        etcd.probe.sample(),
        procstat::sample("self"),
        relay_sample(),
    );
    let started = Instant::now();
    let mut views = Vec::with_capacity(a.agents);
    for i in 0..a.agents {
        let (tx, rx) = watch::channel(sim::View::default());
        let config = etcd.config.clone();
        let relay_addrs = relays.as_ref().map(|r| r.addrs.clone());
        let connect = move || async move {
            Ok(match relay_addrs {
                Some(addrs) => Arc::new(
                    RelayStore::new(addrs, i)
                        .with_timeouts(config.connect_timeout, config.request_timeout),
                ) as Arc<dyn Datastore>,
                None => Arc::new(EtcdStore::connect(config).await?) as Arc<dyn Datastore>,
            })
        };
        let pipeline = match a.pipeline {
            PipelineArg::Calc => sim::Pipeline::Calc,
            PipelineArg::Delivery => sim::Pipeline::Delivery,
        };
        tokio::spawn(sim::run(
            node_name(i),
            bench_policy_id(),
            PEER_LABEL,
            pipeline,
            connect,
            tx,
        ));
        views.push(rx);
    }
    let expected_local = |i: usize| a.pods / a.agents + usize::from(i < a.pods % a.agents);
    let mut startup = Duration::ZERO;
    for (i, rx) in views.iter_mut().enumerate() {
        let v = wait(rx, i, |v| v.revision >= st.loaded).await?;
        startup = startup.max(v.ready_at.map_or(Duration::ZERO, |t| t - started));
        if v.local_endpoints != expected_local(i)
            || v.bench_port != Some(st.port)
            || v.bench_peers != st.peers
        {
            eprintln!(
                "error: agent {} started with {} local pods, bench port {:?} and {} peers; expected {}, {} and {}",
                node_name(i),
                v.local_endpoints,
                v.bench_port,
                v.bench_peers,
                expected_local(i),
                st.port,
                st.peers
            );
            ok = false;
        }
    }
    palisade_agent::alloc::release_free_memory();
    let (etcd1, self1, relay1) = (
        etcd.probe.sample(),
        procstat::sample("self"),
        relay_sample(),
    );

    // Policy changes.
    let mut policy_times = Vec::with_capacity(a.changes);
    let mut spreads = Vec::new();
    for _ in 0..a.changes {
        let port = st.next_port;
        st.next_port = if port >= u16::MAX - 1 {
            BASE_PORT + 1
        } else {
            port + 1
        };
        let (k, v) = encode(&StoredObject::Policy(bench_policy(port)))?;
        let t0 = Instant::now();
        let rev = writer.put(&k, v).await?;
        st.port = port;
        st.loaded = rev;
        let (last, spread, good) =
            wait_all(&mut views, rev, t0, |v| v.bench_port == Some(port)).await?;
        ok &= good;
        policy_times.push(last);
        spreads.push(spread);
    }
    let policy_change = latency(policy_times, &spreads);
    let (etcd2, self2, relay2) = (
        etcd.probe.sample(),
        procstat::sample("self"),
        relay_sample(),
    );

    // Pod label changes: pods not labelled by an earlier pass.
    let mut label_times = Vec::with_capacity(a.changes);
    spreads.clear();
    let candidates = cl.label_candidates.iter().skip(st.peers).take(a.changes);
    for ep in candidates {
        let mut ep = ep.clone();
        ep.labels.insert(PEER_LABEL.into(), "peer".into());
        let (k, v) = encode(&StoredObject::Endpoint(ep))?;
        let t0 = Instant::now();
        let rev = writer.put(&k, v).await?;
        st.peers += 1;
        st.loaded = rev;
        let peers = st.peers;
        let (last, spread, good) =
            wait_all(&mut views, rev, t0, |v| v.bench_peers == peers).await?;
        ok &= good;
        label_times.push(last);
        spreads.push(spread);
    }
    let label_change = latency(label_times, &spreads);
    let (etcd3, self3, relay3) = (
        etcd.probe.sample(),
        procstat::sample("self"),
        relay_sample(),
    );
    // Stop this pass's agents (each ends when its receiver is gone) before the next one.
    drop(views);

    let figures = |s: Option<ProcSample>| {
        s.map(|s| ProcessFigures {
            rss_kib: s.rss_kib,
            peak_rss_kib: s.peak_rss_kib,
            cpu_seconds: s.cpu_seconds,
        })
    };
    Ok(Pass {
        relays: relays.as_ref().map_or(0, Relays::len),
        startup_ms: ms(startup),
        policy_change,
        label_change,
        startup_cost: cost(&etcd0, &etcd1, (self0, self1), (relay0, relay1)),
        policy_changes_cost: cost(&etcd1, &etcd2, (self1, self2), (relay1, relay2)),
        label_changes_cost: cost(&etcd2, &etcd3, (self2, self3), (relay2, relay3)),
        etcd: figures(etcd3.process),
        rss_kib_per_agent: match (bench_before, self3) {
            (Some(b), Some(e)) => {
                Some(e.rss_kib.saturating_sub(b.rss_kib) as f64 / a.agents as f64)
            }
            _ => None,
        },
        bench_process: figures(self3),
        relay_processes: figures(relay3),
        ok,
    })
}

/// Waits until agent `i`'s view satisfies `done`; fails on an agent error or the timeout.
async fn wait(
    rx: &mut watch::Receiver<sim::View>,
    i: usize,
    done: impl Fn(&sim::View) -> bool,
) -> Result<sim::View> {
    let r =
        tokio::time::timeout(TRIAL_TIMEOUT, rx.wait_for(|v| v.error.is_some() || done(v))).await;
    let v = match r.map(|w| w.map(|v| v.clone())) {
        Ok(Ok(v)) => v,
        Ok(Err(_)) => bail!("agent {} stopped", node_name(i)),
        Err(_) => bail!(
            "agent {} did not get there within {TRIAL_TIMEOUT:?} (applied revision {})",
            node_name(i),
            rx.borrow().revision
        ),
    };
    if let Some(e) = &v.error {
        bail!("agent {}: {e}", node_name(i));
    }
    Ok(v)
}

/// Waits until every agent has applied `rev`; returns the time from `t0` to the last
/// agent's state change, the spread between the first and the last, and whether every
/// agent's state changed at `rev` into one where `expect` holds.
async fn wait_all(
    views: &mut [watch::Receiver<sim::View>],
    rev: Revision,
    t0: Instant,
    expect: impl Fn(&sim::View) -> bool,
) -> Result<(Duration, Duration, bool)> {
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    let mut good = true;
    for (i, rx) in views.iter_mut().enumerate() {
        let v = wait(rx, i, |v| v.revision >= rev).await?;
        match v.changed {
            Some((r, at)) if r >= rev && expect(&v) => {
                first = Some(first.map_or(at, |f| f.min(at)));
                last = Some(last.map_or(at, |l| l.max(at)));
            }
            _ => {
                eprintln!(
                    "error: agent {} applied revision {} without reaching the expected state ({v:?})",
                    node_name(i),
                    v.revision
                );
                good = false;
            }
        }
    }
    let since = |t: Option<Instant>| t.map_or(Duration::ZERO, |t| t.saturating_duration_since(t0));
    Ok((since(last), since(last).saturating_sub(since(first)), good))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn latency(mut v: Vec<Duration>, spreads: &[Duration]) -> Latency {
    v.sort();
    let mean_spread = if spreads.is_empty() {
        0.0
    } else {
        spreads.iter().map(|d| ms(*d)).sum::<f64>() / spreads.len() as f64
    };
    Latency {
        changes: v.len(),
        p50_ms: ms(percentile(&v, 0.5)),
        p99_ms: ms(percentile(&v, 0.99)),
        max_ms: ms(v.last().copied().unwrap_or_default()),
        mean_first_to_last_ms: mean_spread,
    }
}

type Samples = (Option<ProcSample>, Option<ProcSample>);

fn cost(e0: &EtcdSample, e1: &EtcdSample, agents: Samples, relays: Samples) -> PhaseCost {
    let cpu = |(a, b): Samples| Some(b?.cpu_seconds - a?.cpu_seconds);
    PhaseCost {
        etcd_cpu_seconds: cpu((e0.process, e1.process)),
        etcd_sent_bytes: e0.sent_bytes.zip(e1.sent_bytes).map(|(a, b)| b - a),
        agents_cpu_seconds: cpu(agents),
        relays_cpu_seconds: cpu(relays),
    }
}

fn print_report(r: &Report) {
    println!(
        "fanout: {} agents ({}) in {} process, {} pods ({} namespaces, up to {} local per agent), {} policies + 1 bench policy; etcd {}{}",
        r.agents,
        match r.pipeline {
            PipelineArg::Calc => "syncer, translator, calculator",
            PipelineArg::Delivery => "syncer and translator only",
        },
        r.processes,
        r.pods,
        r.namespaces,
        r.local_pods_per_agent_max,
        r.policies,
        r.datastore,
        if r.etcd_started_by_bench { " (started by the bench)" } else { "" }
    );
    println!("stored the cluster in {:.0} ms", r.load_ms);
    print_pass(&r.pass);
    if let Some(p) = &r.through_relays {
        print_pass(p);
    }
    println!(
        "every agent reached every state: {}",
        if r.all_agents_reached_state {
            "yes"
        } else {
            "NO"
        }
    );
}

fn print_pass(r: &Pass) {
    let opt = |v: Option<f64>, unit: &str, scale: f64| {
        v.map_or("n/a".to_string(), |v| format!("{:.2} {unit}", v / scale))
    };
    if r.relays == 0 {
        println!("== agents directly on etcd");
    } else {
        println!("== agents through {} relays", r.relays);
    }
    let phase = |name: &str, c: &PhaseCost| {
        println!(
            "  {name}: etcd CPU {}, etcd sent {}, agents' CPU {}{}",
            opt(c.etcd_cpu_seconds, "s", 1.0),
            opt(c.etcd_sent_bytes, "MiB", 1024.0 * 1024.0),
            opt(c.agents_cpu_seconds, "s", 1.0),
            c.relays_cpu_seconds
                .map_or(String::new(), |v| format!(", relays' CPU {v:.2} s"))
        )
    };
    println!("start-up of all agents: {:.0} ms", r.startup_ms);
    phase("start-up", &r.startup_cost);
    for (name, l, c) in [
        (
            "policy put → last agent",
            &r.policy_change,
            &r.policy_changes_cost,
        ),
        (
            "pod label change → last agent",
            &r.label_change,
            &r.label_changes_cost,
        ),
    ] {
        println!(
            "{name}: n={} p50={:.1} ms p99={:.1} ms max={:.1} ms (first to last agent: {:.1} ms on average)",
            l.changes, l.p50_ms, l.p99_ms, l.max_ms, l.mean_first_to_last_ms
        );
        phase("cost", c);
    }
    let process = |name: &str, e: &ProcessFigures| {
        println!(
            "{name}: RSS {:.1} MiB (peak {:.1} MiB), CPU {:.1} s in all",
            e.rss_kib as f64 / 1024.0,
            e.peak_rss_kib as f64 / 1024.0,
            e.cpu_seconds
        )
    };
    if let Some(e) = &r.etcd {
        process("etcd at the end", e);
    }
    if let Some(e) = &r.relay_processes {
        process("relays at the end (all)", e);
    }
    if let Some(b) = &r.bench_process {
        println!(
            "agents' process at the end: RSS {:.1} MiB (peak {:.1} MiB; {} per agent), CPU {:.1} s",
            b.rss_kib as f64 / 1024.0,
            b.peak_rss_kib as f64 / 1024.0,
            opt(r.rss_kib_per_agent, "MiB", 1024.0),
            b.cpu_seconds
        );
    }
}
