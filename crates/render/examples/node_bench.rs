//! Benchmark of issue 4: calculation + rendering for one node of a synthetic cluster
//! (`palisade_engine::synth`).
//!
//! ```text
//! cargo run --release -p palisade-render --example node_bench [-- --pods N --nodes N
//!     --policies N --namespaces N --local N --grow N --trials N --seed N --cnps N]
//! ```
//!
//! Defaults: 10,000 pods over 100 nodes, 199 namespaces (coprime with the node count, so the
//! node's pods spread over many namespaces), 2,000 policies; `node-0` is under test and gets
//! pods of other nodes moved onto it until it has `--local` (110) pods. `--cnps N` adds N Admin
//! and N Baseline ClusterNetworkPolicies (`palisade_engine::synth::cluster_network_policies`).
//!
//! Prints, in one run:
//! - the full path: a fresh `Calculator` fed the whole cluster, IR build, iptables text, nft
//!   script (each timed, and the total), peak memory (VmHWM) and the RSS growth;
//! - rendered counts per backend (chains, rules, sets, set members, rules per active policy);
//! - incremental latency (p50/p99/max) of `Calculator::apply` + rendering its deltas with
//!   `delta::iptables` and with `delta::nft`, and the output lines per update, for remote and
//!   local pod label changes, pod adds/removes and policy adds/removes. The state before each
//!   update is kept by replaying the deltas into a [`Mirror`] outside the timed region;
//! - every time twice: wall clock, and the thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`). On
//!   a shared machine the wall clock also counts the time other processes held the CPU (with
//!   a load of 10 on 2 cores a 100 ms calculation takes 500 ms, and a 1 ms timeslice lost
//!   mid-update is the p99); the CPU time is what the work itself costs, as on a node whose
//!   agent is not starved;
//! - the remote-pod independence check: the cluster grown by `--grow` remote pods that match
//!   existing selectors renders to the same rule count and more set members. The process
//!   exits with 1 when a rule count changes, the members do not grow or a check fails.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use palisade_calc::{
    cluster_updates, compute_full, CalcConfig, Calculator, Delta, DesiredState, IpSetMember,
    Mirror, Update,
};
use palisade_engine::synth::{generate, SynthConfig, SynthRng};
use palisade_model::{
    Action, Cluster, Direction, Endpoint, EndpointId, EndpointPeer, NamespaceMatch, Peer, Policy,
    PolicyId, PortMatch, PortSpec, Protocol, Rule, Selector,
};
use palisade_render::delta::{self, IptablesDelta};
use palisade_render::iptables::{self, IptablesText};
use palisade_render::ir::{Chain, Ruleset};
use palisade_render::{build, names, nft, RenderConfig};

const NODE: &str = "node-0";

/// This thread's CPU time so far.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Wall clock and thread CPU time from one start.
#[derive(Clone, Copy)]
struct Stopwatch {
    wall: Instant,
    cpu: Duration,
}

impl Stopwatch {
    fn start() -> Self {
        Stopwatch {
            wall: Instant::now(),
            cpu: thread_cpu(),
        }
    }

    /// (wall, CPU) since the start.
    fn elapsed(&self) -> (Duration, Duration) {
        let cpu = thread_cpu().saturating_sub(self.cpu);
        (self.wall.elapsed(), cpu)
    }
}

struct Args {
    synth: SynthConfig,
    local: usize,
    grow: usize,
    trials: usize,
    /// ClusterNetworkPolicies added per tier (Admin and Baseline).
    cnps: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        synth: SynthConfig {
            namespaces: 199,
            pods: 10_000,
            policies: 2_000,
            nodes: 100,
            seed: 42,
        },
        local: 110,
        grow: 2_000,
        trials: 1_000,
        cnps: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let n: u64 = value
            .parse()
            .map_err(|_| format!("{flag}: {value:?} is not a number"))?;
        let n_usize = n as usize;
        match flag.as_str() {
            "--pods" => a.synth.pods = n_usize,
            "--policies" => a.synth.policies = n_usize,
            "--nodes" => a.synth.nodes = n_usize.max(2),
            "--namespaces" => a.synth.namespaces = n_usize.max(1),
            "--local" => a.local = n_usize,
            "--grow" => a.grow = n_usize,
            "--trials" => a.trials = n_usize.max(1),
            "--cnps" => a.cnps = n_usize,
            "--seed" => a.synth.seed = n,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(a)
}

/// A `kB` field of /proc/self/status (`VmHWM`, `VmRSS`).
fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn mib(kb: Option<u64>) -> String {
    kb.map_or_else(
        || "unknown".into(),
        |kb| format!("{:.1} MiB", kb as f64 / 1024.0),
    )
}

/// `/proc/loadavg`'s first three fields: other work on the machine skews the tail latencies.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

fn is_local(ep: &Endpoint) -> bool {
    ep.node.as_deref() == Some(NODE)
}

/// Moves pods of other nodes (chosen by `rng`) onto the node under test until it has `want`.
fn fill_node(cluster: &mut Cluster, want: usize, rng: &mut SynthRng) -> usize {
    let mut local = cluster.endpoints.iter().filter(|e| is_local(e)).count();
    let n = cluster.endpoints.len();
    let mut attempts = 0;
    while local < want && attempts < 100 * n {
        attempts += 1;
        let ep = &mut cluster.endpoints[rng.below(n)];
        if !is_local(ep) {
            ep.node = Some(NODE.into());
            local += 1;
        }
    }
    local
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let n = sorted.len();
    if n == 0 {
        return Duration::ZERO;
    }
    sorted[((n as f64 * q) as usize).min(n - 1)]
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    percentile(&v, 0.5)
}

// ---------------------------------------------------------------------------------------
// Full calculation and render.

/// What one full round produces.
struct Full {
    calc: Calculator,
    deltas: Vec<Delta>,
    rs: Ruleset,
    ipt: IptablesText,
    nft: String,
    times: [Duration; 4],
    cpu: [Duration; 4],
}

fn full_round(
    config: &CalcConfig,
    updates: Vec<Update>,
    cfg: &RenderConfig,
) -> Result<Full, String> {
    let sw = Stopwatch::start();
    let mut calc = Calculator::new(config.clone());
    let deltas = calc.apply_all(updates);
    let s1 = Stopwatch::start();
    let rs = build(calc.state(), cfg).map_err(|e| format!("build: {e}"))?;
    let s2 = Stopwatch::start();
    let ipt = iptables::render(&rs, true);
    let s3 = Stopwatch::start();
    let nft = nft::render(&rs);
    let s4 = Stopwatch::start();
    let (t0, t1, t2, t3, t4) = (sw.wall, s1.wall, s2.wall, s3.wall, s4.wall);
    let (c0, c1, c2, c3, c4) = (sw.cpu, s1.cpu, s2.cpu, s3.cpu, s4.cpu);
    Ok(Full {
        cpu: [c1 - c0, c2 - c1, c3 - c2, c4 - c3],
        calc,
        deltas,
        rs,
        ipt,
        nft,
        times: [t1 - t0, t2 - t1, t3 - t2, t4 - t3],
    })
}

// ---------------------------------------------------------------------------------------
// Counts.

/// Rendered sizes, read from the text each backend writes (sets and chains from the IR
/// where the text has no one-line form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    ipt_chains: usize,
    ipt_rules_v4: usize,
    ipt_rules_v6: usize,
    ipsets: usize,
    ipset_members: usize,
    nft_chains: usize,
    nft_rules: usize,
    nft_sets: usize,
    nft_elements: usize,
}

fn lines_with(text: &str, prefix: &str) -> usize {
    text.lines().filter(|l| l.starts_with(prefix)).count()
}

fn counts(rs: &Ruleset, ipt: &IptablesText, nft_text: &str) -> Counts {
    let v4 = ipt.v4.as_deref().unwrap_or("");
    let v6 = ipt.v6.as_deref().unwrap_or("");
    Counts {
        ipt_chains: lines_with(v4, ":").max(lines_with(v6, ":")),
        ipt_rules_v4: lines_with(v4, "-A "),
        ipt_rules_v6: lines_with(v6, "-A "),
        ipsets: lines_with(&ipt.ipset, "create "),
        ipset_members: lines_with(&ipt.ipset, "add "),
        nft_chains: lines_with(nft_text, "add chain "),
        nft_rules: lines_with(nft_text, "add rule "),
        nft_sets: lines_with(nft_text, "add set "),
        nft_elements: rs.sets.iter().map(|s| nft::set_elements(s).len()).sum(),
    }
}

/// Rules per active policy (both directions): (nft rules, iptables rules over both families).
fn rules_per_policy(state: &DesiredState, rs: &Ruleset) -> (Vec<usize>, Vec<usize>) {
    let chains: HashMap<&str, &Chain> = rs.chains.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut nft_rules = Vec::new();
    let mut ipt_rules = Vec::new();
    for id in state.policies.keys() {
        let (mut n, mut i) = (0, 0);
        for dir in [Direction::Ingress, Direction::Egress] {
            if let Some(c) = chains.get(names::policy_chain(dir, id).as_str()) {
                n += c.rules.len();
                for f in &rs.families {
                    i += iptables::chain_rules(c, *f).lines().count();
                }
            }
        }
        nft_rules.push(n);
        ipt_rules.push(i);
    }
    (nft_rules, ipt_rules)
}

fn mean_max(v: &[usize]) -> String {
    let max = v.iter().copied().max().unwrap_or(0);
    let mean = v.iter().sum::<usize>() as f64 / v.len().max(1) as f64;
    format!("mean {mean:.2}, max {max}")
}

fn print_counts(c: &Counts, state: &DesiredState, rs: &Ruleset) {
    println!(
        "  iptables: {} chains per family, {} rules (v4 {}, v6 {}), {} ipsets, {} ipset members",
        c.ipt_chains,
        c.ipt_rules_v4 + c.ipt_rules_v6,
        c.ipt_rules_v4,
        c.ipt_rules_v6,
        c.ipsets,
        c.ipset_members
    );
    println!(
        "  nftables: {} chains, {} rules, {} sets, {} set elements",
        c.nft_chains, c.nft_rules, c.nft_sets, c.nft_elements
    );
    let (n, i) = rules_per_policy(state, rs);
    println!(
        "  rules per active policy: nftables {}; iptables (v4+v6) {}",
        mean_max(&n),
        mean_max(&i)
    );
}

// ---------------------------------------------------------------------------------------
// Incremental updates.

/// One measured update.
/// Each time as (wall clock, CPU time).
struct Step {
    calc: (Duration, Duration),
    ipt: (Duration, Duration),
    nft: (Duration, Duration),
    ipt_lines: usize,
    nft_lines: usize,
    member_deltas: usize,
}

/// The calculator, and the state the kernel holds before each update (deltas replayed).
struct Node {
    calc: Calculator,
    prev: Mirror,
    cfg: RenderConfig,
    flip: bool,
}

fn ipt_lines(d: &IptablesDelta) -> usize {
    let tables = [d.v4.as_deref(), d.v6.as_deref()];
    [d.ipset_pre.as_str(), d.ipset_post.as_str()]
        .into_iter()
        .chain(tables.into_iter().flatten())
        .map(|t| t.lines().count())
        .sum()
}

impl Node {
    /// `calc.apply(update)`, then the deltas rendered for both backends (in alternating order,
    /// so neither always runs with the other's warm caches), each timed.
    fn step(&mut self, update: Update) -> Result<Step, String> {
        let t0 = Stopwatch::start();
        let deltas = self.calc.apply(update);
        let calc = t0.elapsed();
        let (prev, next) = (&self.prev.state, self.calc.state());
        let render_ipt = || -> Result<(IptablesDelta, (Duration, Duration)), String> {
            let t = Stopwatch::start();
            let d = delta::iptables(prev, next, &deltas, &self.cfg).map_err(|e| e.to_string())?;
            Ok((d, t.elapsed()))
        };
        let render_nft = || -> Result<(String, (Duration, Duration)), String> {
            let t = Stopwatch::start();
            let d = delta::nft(prev, next, &deltas, &self.cfg).map_err(|e| e.to_string())?;
            Ok((d, t.elapsed()))
        };
        let ((ipt, ipt_t), (nft, nft_t)) = if self.flip {
            let n = render_nft()?;
            (render_ipt()?, n)
        } else {
            let i = render_ipt()?;
            (i, render_nft()?)
        };
        self.flip = !self.flip;
        let member_deltas = deltas
            .iter()
            .filter(|d| {
                matches!(
                    d,
                    Delta::SetMemberAdded { .. } | Delta::SetMemberRemoved { .. }
                )
            })
            .count();
        self.prev
            .apply_all(&deltas, self.calc.state())
            .map_err(|e| format!("delta replay: {e}"))?;
        Ok(Step {
            calc,
            ipt: ipt_t,
            nft: nft_t,
            ipt_lines: ipt_lines(&ipt),
            nft_lines: nft.lines().count(),
            member_deltas,
        })
    }
}

#[derive(Default)]
struct Scenario {
    calc: Vec<Duration>,
    with_ipt: Vec<Duration>,
    with_nft: Vec<Duration>,
    /// CPU time of calc + render, per backend.
    cpu_ipt: Vec<Duration>,
    cpu_nft: Vec<Duration>,
    ipt_lines: Vec<usize>,
    nft_lines: Vec<usize>,
    members: usize,
}

impl Scenario {
    fn record(&mut self, s: &Step) {
        self.calc.push(s.calc.0);
        self.with_ipt.push(s.calc.0 + s.ipt.0);
        self.with_nft.push(s.calc.0 + s.nft.0);
        self.cpu_ipt.push(s.calc.1 + s.ipt.1);
        self.cpu_nft.push(s.calc.1 + s.nft.1);
        self.ipt_lines.push(s.ipt_lines);
        self.nft_lines.push(s.nft_lines);
        self.members += s.member_deltas;
    }

    /// Prints one row; returns the worst p99 of the two backends, wall clock and CPU time.
    fn report(&mut self, name: &str) -> (Duration, Duration) {
        let n = self.calc.len();
        for v in [
            &mut self.calc,
            &mut self.with_ipt,
            &mut self.with_nft,
            &mut self.cpu_ipt,
            &mut self.cpu_nft,
        ] {
            v.sort();
        }
        let t = |v: &[Duration]| {
            format!(
                "{:>7.1?} {:>7.1?} {:>7.1?}",
                percentile(v, 0.5),
                percentile(v, 0.99),
                v.last().copied().unwrap_or_default()
            )
        };
        let l = |v: &[usize]| {
            let mean = v.iter().sum::<usize>() as f64 / n.max(1) as f64;
            format!("{mean:>6.1} {:>4}", v.iter().max().copied().unwrap_or(0))
        };
        let cpu =
            |v: &[Duration]| format!("{:>7.1?} {:>7.1?}", percentile(v, 0.5), percentile(v, 0.99));
        println!(
            "  {name:<35} {n:>5} | {} | {} | {} | {} | {} | {:>5.1} | {} | {}",
            t(&self.calc),
            t(&self.with_ipt),
            t(&self.with_nft),
            l(&self.ipt_lines),
            l(&self.nft_lines),
            self.members as f64 / n.max(1) as f64,
            cpu(&self.cpu_ipt),
            cpu(&self.cpu_nft),
        );
        let p99 = |a: &[Duration], b: &[Duration]| percentile(a, 0.99).max(percentile(b, 0.99));
        (
            p99(&self.with_ipt, &self.with_nft),
            p99(&self.cpu_ipt, &self.cpu_nft),
        )
    }
}

fn fresh_ip(block: u8, t: usize, v6: bool) -> Vec<IpAddr> {
    let n = t as u32 + 1;
    let v4 = IpAddr::V4(Ipv4Addr::new(10, block, (n >> 8) as u8, n as u8));
    let mut ips = vec![v4];
    if v6 {
        ips.push(IpAddr::V6(Ipv6Addr::new(
            0xfd00,
            0,
            0,
            0,
            0,
            u16::from(block),
            (n >> 16) as u16,
            n as u16,
        )));
    }
    ips
}

fn has_v6(ep: &Endpoint) -> bool {
    ep.ips.iter().any(IpAddr::is_ipv6)
}

fn app_label(rng: &mut SynthRng, apps: usize) -> String {
    format!("app-{}", rng.below(apps))
}

/// A NetworkPolicy-like ingress allow in `ns` for pods with `app` from pods of a random app,
/// in the same namespace or in the namespaces of a team, on port 80 or the named port `http`.
fn bench_policy(name: String, ns: &str, app: String, apps: usize, rng: &mut SynthRng) -> Policy {
    let namespaces = if rng.one_in(2) {
        NamespaceMatch::Name(ns.to_string())
    } else {
        let team = ["payments", "search", "platform", "web"][rng.below(4)];
        NamespaceMatch::Selector(Selector::Eq("team".into(), team.into()))
    };
    let peer = EndpointPeer {
        namespaces,
        pods: Selector::Eq("app".into(), app_label(rng, apps)),
    };
    let port = if rng.one_in(3) {
        PortMatch::Named("http".into())
    } else {
        PortMatch::Range { start: 80, end: 80 }
    };
    Policy {
        id: PolicyId {
            tier: "default".into(),
            namespace: Some(ns.to_string()),
            name,
        },
        order: 1000,
        selector: Selector::Eq("app".into(), app),
        namespace_selector: Selector::All,
        staged: false,
        ingress: Some(vec![Rule {
            action: Action::Allow,
            peers: vec![Peer::Endpoints(peer)],
            ports: vec![PortSpec {
                protocol: Protocol::Tcp,
                port,
            }],
        }]),
        egress: None,
    }
}

/// The larger of each of two (wall, CPU) pairs.
fn max2(a: (Duration, Duration), b: (Duration, Duration)) -> (Duration, Duration) {
    (a.0.max(b.0), a.1.max(b.1))
}

/// Runs every incremental scenario; returns the worst p99 (wall clock, CPU time).
fn incremental(
    node: &mut Node,
    cluster: &Cluster,
    cfg: &SynthConfig,
    trials: usize,
) -> Result<(Duration, Duration), String> {
    let apps = (cfg.pods / cfg.namespaces.max(1) / 5).clamp(1, 20);
    let mut rng = SynthRng::new(cfg.seed ^ 0x0004_e0de);
    let eps = &cluster.endpoints;
    let remote: Vec<usize> = (0..eps.len())
        .filter(|&i| !is_local(&eps[i]) && !eps[i].ips.is_empty())
        .collect();
    let local: Vec<usize> = (0..eps.len()).filter(|&i| is_local(&eps[i])).collect();
    if remote.is_empty() || local.is_empty() {
        return Err("need both local and remote pods".into());
    }
    let remote_node = |rng: &mut SynthRng| format!("node-{}", 1 + rng.below(cfg.nodes - 1));
    println!(
        "incremental: calc.apply + delta render; times p50 p99 max; lines = output lines per \
         update (mean max); members = set member deltas per update"
    );
    println!(
        "  {:<35} {:>5} | {:^23} | {:^23} | {:^23} | {:^11} | {:^11} | members | {:^15} | {:^15}",
        "scenario",
        "n",
        "calc only",
        "calc + iptables",
        "calc + nftables",
        "ipt lines",
        "nft lines",
        "CPU c+ipt p50/99",
        "CPU c+nft p50/99"
    );
    let mut worst = (Duration::ZERO, Duration::ZERO);

    // A remote pod's label changes so that it enters or leaves at least one set (changes that
    // touch no set are skipped and counted), and back.
    let mut sc = Scenario::default();
    let mut skipped = 0;
    let mut attempts = 0;
    while sc.calc.len() < trials && attempts < 50 * trials {
        attempts += 1;
        let original = eps[remote[rng.below(remote.len())]].clone();
        let mut changed = original.clone();
        changed
            .labels
            .insert("app".into(), app_label(&mut rng, apps));
        if rng.one_in(2) {
            let role = ["frontend", "backend", "db"][rng.below(3)];
            changed.labels.insert("role".into(), role.into());
        }
        for ep in [changed, original] {
            let s = node.step(Update::EndpointUpsert(ep))?;
            if s.member_deltas > 0 {
                sc.record(&s);
            } else {
                skipped += 1;
            }
        }
    }
    worst = max2(worst, sc.report("remote pod label change"));

    // A local pod's label changes (policies selecting it change), and back.
    let mut sc = Scenario::default();
    for _ in 0..trials.div_ceil(2) {
        let original = eps[local[rng.below(local.len())]].clone();
        let mut changed = original.clone();
        changed
            .labels
            .insert("app".into(), app_label(&mut rng, apps));
        for ep in [changed, original] {
            sc.record(&node.step(Update::EndpointUpsert(ep))?);
        }
    }
    worst = max2(worst, sc.report("local pod label change"));

    // Pod adds (a copy of an existing pod's labels and ports, fresh address), then removes.
    for (label, on_node, block) in [("remote", false, 64u8), ("local", true, 65u8)] {
        let (mut add, mut remove) = (Scenario::default(), Scenario::default());
        for t in 0..trials {
            let template = &eps[rng.below(eps.len())];
            let mut ep = template.clone();
            ep.id = EndpointId::new(template.id.namespace.clone(), format!("bench-{label}-{t}"));
            ep.node = Some(if on_node {
                NODE.to_string()
            } else {
                remote_node(&mut rng)
            });
            ep.ips = fresh_ip(block, t, has_v6(template));
            let id = ep.id.clone();
            add.record(&node.step(Update::EndpointUpsert(ep))?);
            remove.record(&node.step(Update::EndpointRemove(id))?);
        }
        worst = max2(worst, add.report(&format!("pod add ({label})")));
        worst = max2(worst, remove.report(&format!("pod remove ({label})")));
    }

    // Policy adds: in a random namespace (mostly selecting no local pod), and aimed at the app
    // of a random local pod (always active); each removed again.
    let namespaces: Vec<&String> = cluster.namespaces.keys().collect();
    for label in ["any namespace", "selects a local pod"] {
        let (mut add, mut remove) = (Scenario::default(), Scenario::default());
        for t in 0..trials {
            let (ns, app) = if label == "any namespace" {
                let ns = namespaces[rng.below(namespaces.len())].clone();
                (ns, app_label(&mut rng, apps))
            } else {
                let ep = &eps[local[rng.below(local.len())]];
                let app = ep.labels.get("app").cloned().unwrap_or_default();
                (ep.id.namespace.clone(), app)
            };
            let policy = bench_policy(format!("bench-{t}"), &ns, app, apps, &mut rng);
            let id = policy.id.clone();
            add.record(&node.step(Update::PolicyUpsert(policy))?);
            remove.record(&node.step(Update::PolicyRemove(id))?);
        }
        worst = max2(worst, add.report(&format!("policy add ({label})")));
        worst = max2(worst, remove.report(&format!("policy remove ({label})")));
    }
    println!(
        "  (remote label changes that touched no set, skipped: {skipped} of {} updates)",
        2 * attempts
    );
    Ok(worst)
}

/// The render cost of one unchanged policy or endpoint (no calc): what every policy or local
/// endpoint change pays in `delta::plan` before any rule of its own is written.
fn fixed_costs(state: &DesiredState, cfg: &RenderConfig) -> Result<(), String> {
    let policy = state.policies.keys().next().cloned();
    let endpoint = state.endpoints.keys().next().cloned();
    let (Some(policy), Some(endpoint)) = (policy, endpoint) else {
        return Ok(());
    };
    let cases = [
        ("one policy", Delta::PolicyChanged { id: policy }),
        ("one endpoint", Delta::EndpointChanged { id: endpoint }),
    ];
    for (name, d) in cases {
        let deltas = [d];
        let (mut ipt, mut nft) = (Vec::new(), Vec::new());
        for _ in 0..200 {
            let t = Instant::now();
            delta::iptables(state, state, &deltas, cfg).map_err(|e| e.to_string())?;
            ipt.push(t.elapsed());
            let t = Instant::now();
            delta::nft(state, state, &deltas, cfg).map_err(|e| e.to_string())?;
            nft.push(t.elapsed());
        }
        println!(
            "  render only, {name} rewritten unchanged (median of 200): iptables {:.1?}, nftables {:.1?}",
            median(ipt),
            median(nft)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The remote-pod independence check.

/// `cluster` plus `n` remote pods, each a copy of a random remote pod's namespace, labels and
/// ports (so they match the selectors that one matches) with a fresh address.
fn grow(cluster: &Cluster, n: usize, nodes: usize, seed: u64) -> (Cluster, BTreeSet<IpAddr>) {
    let mut rng = SynthRng::new(seed ^ 0x6e0e);
    let remote: Vec<&Endpoint> = cluster
        .endpoints
        .iter()
        .filter(|e| !is_local(e) && !e.ips.is_empty())
        .collect();
    let mut grown = cluster.clone();
    let mut ips = BTreeSet::new();
    for t in 0..n {
        let Some(template) = remote.get(rng.below(remote.len())) else {
            break;
        };
        let mut ep = (*template).clone();
        ep.id = EndpointId::new(template.id.namespace.clone(), format!("grown-{t}"));
        ep.node = Some(format!("node-{}", 1 + rng.below(nodes - 1)));
        ep.ips = fresh_ip(128, t, has_v6(template));
        ips.extend(ep.ips.iter().copied());
        grown.endpoints.push(ep);
    }
    grown.endpoints.sort_by(|a, b| a.id.cmp(&b.id));
    (grown, ips)
}

/// How many of `ips` are in at least one set of `state`.
fn ips_in_sets(state: &DesiredState, ips: &BTreeSet<IpAddr>) -> usize {
    let mut found = BTreeSet::new();
    for set in state.ip_sets.values() {
        for m in &set.members {
            let ip = match m {
                IpSetMember::Net(net) => net.addr(),
                IpSetMember::NetPort { ip, .. } => *ip,
            };
            if ips.contains(&ip) {
                found.insert(ip);
            }
        }
    }
    found.len()
}

// ---------------------------------------------------------------------------------------

fn run(args: Args) -> Result<bool, String> {
    let synth = args.synth;
    let mut ok = true;
    let load_start = load_average();
    let start = Instant::now();
    let mut cluster = generate(&synth);
    for p in palisade_engine::synth::cluster_network_policies(args.cnps, args.cnps, synth.seed) {
        cluster.upsert_policy(p);
    }
    let mut rng = SynthRng::new(synth.seed ^ 0x10ca1);
    let local = fill_node(&mut cluster, args.local, &mut rng);
    println!(
        "cluster: {} pods over {} nodes, {} namespaces, {} policies (seed {}, generated in {:.1?}); \
         node under test {NODE}: {local} local pods",
        cluster.endpoints.len(),
        synth.nodes,
        cluster.namespaces.len(),
        cluster.policies.len(),
        synth.seed,
        start.elapsed()
    );
    let config = CalcConfig::new(NODE);
    let cfg = RenderConfig::default();
    let updates = cluster_updates(&cluster);

    // Full: three rounds, medians per stage.
    let batch = updates.clone();
    let rss0 = status_kb("VmRSS:");
    let mut full = full_round(&config, batch, &cfg)?;
    let rss1 = status_kb("VmRSS:");
    let mut rounds = vec![full.times];
    let mut cpu_rounds = vec![full.cpu];
    for _ in 0..2 {
        full = full_round(&config, updates.clone(), &cfg)?;
        rounds.push(full.times);
        cpu_rounds.push(full.cpu);
    }
    let stage = |i: usize| median(rounds.iter().map(|r| r[i]).collect());
    let totals: Vec<Duration> = rounds.iter().map(|r| r.iter().sum()).collect();
    let total = median(totals.clone());
    println!(
        "full (median of {} rounds): calc {:.1?} + build IR {:.1?} + iptables text {:.1?} + nft \
         script {:.1?} = {:.1?} (rounds: {:.1?})  [target < 300 ms: {}]",
        rounds.len(),
        stage(0),
        stage(1),
        stage(2),
        stage(3),
        total,
        totals,
        if total < Duration::from_millis(300) {
            "met"
        } else {
            "NOT met"
        }
    );
    let cpu_stage = |i: usize| median(cpu_rounds.iter().map(|r| r[i]).collect());
    let cpu_total = median(cpu_rounds.iter().map(|r| r.iter().sum()).collect());
    println!(
        "  CPU time (thread): calc {:.1?} + build IR {:.1?} + iptables text {:.1?} + nft script \
         {:.1?} = {:.1?}  [target < 300 ms: {}]",
        cpu_stage(0),
        cpu_stage(1),
        cpu_stage(2),
        cpu_stage(3),
        cpu_total,
        if cpu_total < Duration::from_millis(300) {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "  text: iptables {} KiB (ipset {} KiB), nft {} KiB; {} updates in, {} deltas out",
        (full.ipt.ipset.len()
            + full.ipt.v4.as_ref().map_or(0, String::len)
            + full.ipt.v6.as_ref().map_or(0, String::len))
            / 1024,
        full.ipt.ipset.len() / 1024,
        full.nft.len() / 1024,
        updates.len(),
        full.deltas.len()
    );
    println!(
        "memory: peak (VmHWM) {}; RSS growth for one loaded Calculator + IR + both texts {}",
        mib(status_kb("VmHWM:")),
        mib(rss0.zip(rss1).map(|(a, b)| b.saturating_sub(a)))
    );
    let stats = full.calc.stats();
    println!(
        "node: {} local endpoints, {} active policies of {}, {} calc ip sets, {} calc set members",
        stats.local_endpoints,
        stats.active_policies,
        stats.policies,
        stats.ip_sets,
        stats.set_members
    );
    let before = counts(&full.rs, &full.ipt, &full.nft);
    println!("counts:");
    print_counts(&before, full.calc.state(), &full.rs);

    // Incremental.
    let mut prev = Mirror::new();
    prev.apply_all(&full.deltas, full.calc.state())
        .map_err(|e| format!("initial delta replay: {e}"))?;
    let Full { calc, .. } = full;
    let mut node = Node {
        calc,
        prev,
        cfg: cfg.clone(),
        flip: false,
    };
    let (worst, worst_cpu) = incremental(&mut node, &cluster, &synth, args.trials)?;
    let met = |d: Duration| {
        if d < Duration::from_millis(1) {
            "met"
        } else {
            "NOT met"
        }
    };
    println!(
        "  worst incremental p99 (calc + render, either backend): wall {worst:.1?}, CPU time \
         {worst_cpu:.1?}  [target < 1 ms: wall {}, CPU {}]",
        met(worst),
        met(worst_cpu)
    );
    fixed_costs(node.calc.state(), &cfg)?;
    let replay_ok = node.prev.state == *node.calc.state();
    let oracle_ok = compute_full(&config, &cluster) == *node.calc.state();
    println!(
        "  after all trials: replayed deltas equal the calc state: {replay_ok}; calc state equals \
         compute_full: {oracle_ok}"
    );
    ok &= replay_ok && oracle_ok;

    // Remote-pod independence.
    let (grown, new_ips) = grow(&cluster, args.grow, synth.nodes, synth.seed);
    let t = Instant::now();
    let mut calc = Calculator::new(config.clone());
    calc.apply_all(cluster_updates(&grown));
    let grown_rs = build(calc.state(), &cfg).map_err(|e| format!("build (grown): {e}"))?;
    let after = counts(
        &grown_rs,
        &iptables::render(&grown_rs, true),
        &nft::render(&grown_rs),
    );
    println!(
        "independence: +{} remote pods ({} pods in all; {} of their {} addresses in some set; \
         full calc+render {:.1?}), node still has {} local endpoints",
        args.grow,
        grown.endpoints.len(),
        ips_in_sets(calc.state(), &new_ips),
        new_ips.len(),
        t.elapsed(),
        calc.stats().local_endpoints
    );
    print_counts(&after, calc.state(), &grown_rs);
    let rules_same = before.nft_rules == after.nft_rules;
    let ipt_same =
        before.ipt_rules_v4 + before.ipt_rules_v6 == after.ipt_rules_v4 + after.ipt_rules_v6;
    let grew =
        after.nft_elements > before.nft_elements && after.ipset_members > before.ipset_members;
    println!(
        "  nftables rules {} -> {} ({}); iptables rules {} -> {} ({})",
        before.nft_rules,
        after.nft_rules,
        if rules_same {
            "equal: OK"
        } else {
            "CHANGED: FAIL"
        },
        before.ipt_rules_v4 + before.ipt_rules_v6,
        after.ipt_rules_v4 + after.ipt_rules_v6,
        if ipt_same { "equal" } else { "changed" }
    );
    println!(
        "  set members: nft elements {} -> {}, ipset members {} -> {} ({})",
        before.nft_elements,
        after.nft_elements,
        before.ipset_members,
        after.ipset_members,
        if grew {
            "grew: OK"
        } else {
            "did NOT grow: FAIL"
        }
    );
    ok &= rules_same && grew;
    println!("peak memory at end (VmHWM): {}", mib(status_kb("VmHWM:")));
    println!(
        "load average at start {load_start}, at end {}, on {} CPUs",
        load_average(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    Ok(ok)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("node_bench: {e}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("node_bench: a check failed (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("node_bench: {e}");
            ExitCode::FAILURE
        }
    }
}
