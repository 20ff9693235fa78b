//! Agent memory benchmark (root): the resident memory of one real agent process per remote
//! pod, in steady state.
//!
//! For each size (default 10,000 and 20,000 pods) the parent starts a real etcd (127.0.0.1,
//! free port, temporary directory), stores the engine's synthetic cluster with `--policies`
//! policies (default 2,000) and `--local` pods (default 100) on node `n1`, creates a
//! throwaway network namespace, and starts this same program again as the agent process
//! (`--child`): a real `Agent` with its own etcd client and the nftables dataplane inside that
//! namespace, the full resync every `--resync` seconds (default 5). The parent reads the
//! child's VmRSS from /proc after the first apply and after each of the first `--resyncs`
//! full resyncs (default 2), then stops it. It prints the figures per size and the
//! difference per pod between the two sizes: the cost of one more remote pod.
//!
//! ```text
//! cargo run --release -p palisade-agent --example memory_bench [-- --pods 10000,20000 --policies 2000 --local 100 --resyncs 2 --dataplane nftables|noop]
//! ```
//!
//! `--dhat FILE`: the child runs under the `dhat` heap profiler and writes its profile to
//! FILE after the first resync (its live bytes at that moment are the profile's "at the end"
//! figures; use one size only, e.g. `--pods 20000`); `--dataplane noop` keeps the whole agent but
//! writes nothing to a kernel (no root needed).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use palisade_agent::{Agent, AgentConfig, DataplaneKind};
use palisade_engine::synth::{generate, SynthConfig};
use palisade_store::testing::EtcdServer;
use palisade_store::{Datastore, EtcdConfig, EtcdStore, Op, Record, StoredObject, OWNER_APPLY};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const NODE: &str = "n1";

#[derive(Clone)]
struct Opts {
    sizes: Vec<usize>,
    policies: usize,
    local: usize,
    resyncs: usize,
    resync_secs: u64,
    noop: bool,
    dhat: Option<String>,
}

fn opts(args: &[String]) -> Opts {
    let mut o = Opts {
        sizes: vec![10_000, 20_000],
        policies: 2_000,
        local: 100,
        resyncs: 2,
        resync_secs: 5,
        noop: false,
        dhat: None,
    };
    let mut i = 0;
    while i + 1 < args.len() {
        let v = args[i + 1].as_str();
        let num = || {
            v.parse::<usize>()
                .unwrap_or_else(|_| panic!("bad value for {}", args[i]))
        };
        match args[i].as_str() {
            "--pods" => {
                o.sizes = v
                    .split(',')
                    .map(|s| s.parse().expect("--pods: comma-separated numbers"))
                    .collect()
            }
            "--policies" => o.policies = num(),
            "--local" => o.local = num(),
            "--resyncs" => o.resyncs = num().max(1),
            "--resync" => o.resync_secs = num().max(1) as u64,
            "--dataplane" => o.noop = v == "noop",
            "--dhat" => o.dhat = Some(v.to_string()),
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    o
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child(&args[1..]);
        return;
    }
    let o = opts(&args);
    if !o.noop && !palisade_dataplane::netns::is_root() {
        eprintln!("memory_bench needs root for the nftables namespace (or --dataplane noop)");
        std::process::exit(2);
    }
    let mut results = Vec::new();
    for &pods in &o.sizes {
        let r = measure(&o, pods);
        println!(
            "pods {pods} (remote {}): RSS after first apply {:.1} MiB; after resyncs {}",
            pods - o.local,
            r[0] as f64 / 1024.0,
            r[1..]
                .iter()
                .map(|k| format!("{:.1} MiB", *k as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join(", ")
        );
        results.push((pods, r));
    }
    if let [(p0, a), (p1, b)] = &results[..] {
        let per = |x: u64, y: u64| (y as f64 - x as f64) * 1024.0 / (*p1 as f64 - *p0 as f64);
        println!(
            "per remote pod: {:.0} bytes after the first apply, {:.0} bytes after the last resync",
            per(a[0], b[0]),
            per(*a.last().unwrap(), *b.last().unwrap())
        );
    }
}

/// Runs one size; returns the child's VmRSS (KiB) after the first apply and each resync.
fn measure(o: &Opts, pods: usize) -> Vec<u64> {
    let etcd = EtcdServer::start().expect("start etcd");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = etcd.connect().await.expect("connect to etcd");
        load(&store, &objects(pods, o.local, o.policies)).await;
    });
    let ns = (!o.noop).then(|| {
        palisade_dataplane::netns::NetnsGuard::new("membench").expect("create a namespace")
    });
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.arg("--child")
        .arg(etcd.endpoint())
        .arg(ns.as_ref().map_or("-", |n| n.name()))
        .arg(o.resync_secs.to_string())
        .arg(o.resyncs.to_string())
        .arg(o.dhat.clone().unwrap_or_else(|| "-".into()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().expect("start the agent process");
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut rss = Vec::new();
    for _ in 0..=o.resyncs {
        let line = lines
            .next()
            .and_then(Result::ok)
            .expect("the agent process reports each step");
        assert!(line == "applied" || line == "resynced", "{line}");
        rss.push(vm_rss(pid).expect("read the agent's VmRSS"));
        child.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    }
    drop(child.stdin.take()); // tells the child to stop
    let _ = child.wait();
    drop(ns);
    rss
}

fn vm_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The synthetic cluster with exactly `local` IPv4 pods on `NODE`, the rest on 90 others.
fn objects(pods: usize, local: usize, policies: usize) -> Vec<StoredObject> {
    let cluster = generate(&SynthConfig::sized(pods, policies, 7));
    let mut out: Vec<StoredObject> = cluster
        .namespaces
        .into_values()
        .map(StoredObject::Namespace)
        .collect();
    let mut placed = 0;
    for (i, mut ep) in cluster.endpoints.into_iter().enumerate() {
        if placed < local && ep.ips.first().is_some_and(|ip| ip.is_ipv4()) {
            ep.node = Some(NODE.into());
            placed += 1;
        } else {
            ep.node = Some(format!("node-{}", i % 90 + 1));
        }
        out.push(StoredObject::Endpoint(ep));
    }
    out.extend(cluster.policies.into_iter().map(StoredObject::Policy));
    out
}

async fn load(store: &dyn Datastore, objs: &[StoredObject]) {
    for chunk in objs.chunks(1000) {
        let ops = chunk
            .iter()
            .map(|o| {
                let value = Record::new(OWNER_APPLY, o.clone()).encode().unwrap();
                Op::put(o.key().unwrap(), value)
            })
            .collect();
        store.apply_batch(ops).await.expect("store the cluster");
    }
}

/// The agent process: `--child ENDPOINT NETNS|- RESYNC_SECS RESYNCS DHAT|-`. Prints
/// `applied` after the first apply and `resynced` after each resync, and waits for a line on
/// stdin before going on (so the parent reads the RSS of a quiet process).
fn child(args: &[String]) {
    let [endpoint, netns, resync_secs, resyncs, dhat_file] = args else {
        panic!("--child ENDPOINT NETNS RESYNC_SECS RESYNCS DHAT");
    };
    let mut profiler = (dhat_file != "-").then(|| {
        dhat::Profiler::builder()
            .file_name(dhat_file.clone())
            .build()
    });
    let resyncs: u64 = resyncs.parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store: Arc<dyn Datastore> = Arc::new(
            EtcdStore::connect(EtcdConfig::new([endpoint.clone()]))
                .await
                .expect("connect to etcd"),
        );
        let mut cfg = AgentConfig::new(NODE);
        cfg.dataplane = DataplaneKind::Nftables;
        cfg.resync_interval = Duration::from_secs(resync_secs.parse().unwrap());
        let dp: Box<dyn palisade_dataplane::Dataplane> = if netns == "-" {
            Box::new(palisade_dataplane::nft_dataplane(
                cfg.render.clone(),
                Arc::new(palisade_dataplane::NoopRunner),
                Arc::new(palisade_dataplane::ThreadSleeper),
                palisade_dataplane::RetryPolicy::none(),
            ))
        } else {
            cfg.netns = Some(netns.clone());
            let runner = palisade_agent::run::kernel_runner(&cfg);
            palisade_agent::run::build_dataplane(&cfg, runner)
        };
        let agent = Agent::new(cfg, store, dp).unwrap();
        let shared = agent.shared();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(agent.run(async move {
            let _ = stop_rx.await;
        }));
        let (line_tx, mut line_rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                if line.is_err() || line_tx.send(()).is_err() {
                    return;
                }
            }
        });
        while !shared.ready() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        report("applied");
        let _ = line_rx.recv().await;
        for n in 1..=resyncs {
            while shared.metrics.resyncs.get() < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // The profile is written when the profiler is dropped: its "bytes at the end"
            // are what is live after the first resync.
            drop(profiler.take());
            report("resynced");
            let _ = line_rx.recv().await;
        }
        let _ = line_rx.recv().await; // stdin closed
        let _ = stop_tx.send(());
        let _ = task.await;
    });
}

fn report(what: &str) {
    if std::env::var_os("MEMORY_BENCH_MALLINFO").is_some() {
        malloc_summary(what);
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{what}");
    let _ = out.flush();
}

/// With `MEMORY_BENCH_MALLINFO` set: malloc's own view on stderr (bytes in use, held in its
/// arenas, free in them, and in mmapped chunks), to tell fragmentation from live data.
fn malloc_summary(what: &str) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads malloc's statistics.
        let m = unsafe { libc::mallinfo2() };
        let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
        eprintln!(
            "{what}: malloc in use {:.1} MiB, arenas {:.1} MiB (free {:.1} MiB, releasable {:.1} MiB), mmapped {:.1} MiB",
            mib(m.uordblks),
            mib(m.arena),
            mib(m.fordblks),
            mib(m.keepcost),
            mib(m.hblkhd)
        );
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = what;
}
