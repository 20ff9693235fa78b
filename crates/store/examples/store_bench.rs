//! Datastore benchmark: bulk writes through `apply_batch` and the latency from one write to
//! a watcher in another task, on a real etcd (started here, on loopback, tmpfs data dir when
//! /dev/shm exists) and on the embedded store.
//!
//! ```text
//! cargo run --release -p palisade-store --example store_bench [-- TRIALS]
//! ```
//!
//! Bulk: 10,000 pods and 2,000 policies, (a) in one transaction (etcd started with
//! `--max-txn-ops 100000 --max-request-bytes 64MiB`) and (b) in chunks of 128 ops (what a
//! default etcd accepts). Latency: one policy per trial through `apply_batch`, received by
//! (a) a raw watch and (b) a `Syncer`, each in its own task; p50/p99 over TRIALS (default
//! 500) trials.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use palisade_model::{
    Action, Endpoint, EndpointId, EndpointPeer, Labels, NamedPort, NamespaceMatch, Peer, Policy,
    PolicyId, PortMatch, PortSpec, Protocol, Rule, Selector,
};
use palisade_store::testing::EtcdServer;
use palisade_store::{
    keys, Datastore, EmbeddedStore, Op, StoredObject, SyncEvent, Syncer, OWNER_APPLY,
};
use tokio::sync::mpsc;

const PODS: usize = 10_000;
const POLICIES: usize = 2_000;

fn pod(i: usize) -> StoredObject {
    let mut labels = Labels::new();
    labels.insert("app".into(), format!("app-{}", i % 50));
    labels.insert("tier".into(), ["web", "db", "cache"][i % 3].into());
    StoredObject::Endpoint(Endpoint {
        id: EndpointId::new(format!("ns-{}", i % 20), format!("pod-{i}")),
        node: Some(format!("node-{}", i % 10)),
        labels,
        ips: vec![std::net::IpAddr::from([
            10,
            (i >> 16) as u8,
            (i >> 8) as u8,
            i as u8,
        ])],
        ports: vec![NamedPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 8080,
        }],
    })
}

fn policy(i: usize, namespace: &str) -> StoredObject {
    StoredObject::Policy(Policy {
        id: PolicyId {
            tier: "default".into(),
            namespace: Some(namespace.into()),
            name: format!("policy-{i}"),
        },
        order: 1000,
        selector: Selector::Eq("app".into(), format!("app-{}", i % 50)),
        namespace_selector: Selector::All,
        staged: false,
        ingress: Some(vec![Rule {
            action: Action::Allow,
            peers: vec![Peer::Endpoints(EndpointPeer {
                namespaces: NamespaceMatch::Name(namespace.into()),
                pods: Selector::Eq("tier".into(), "web".into()),
            })],
            ports: vec![PortSpec {
                protocol: Protocol::Tcp,
                port: PortMatch::Range {
                    start: 8080,
                    end: 8080,
                },
            }],
        }]),
        egress: None,
    })
}

fn ops(objects: &[StoredObject]) -> Vec<Op> {
    objects
        .iter()
        .map(|o| {
            Op::put(
                o.key().expect("key"),
                o.encode(OWNER_APPLY).expect("encode"),
            )
        })
        .collect()
}

fn objects() -> Vec<StoredObject> {
    (0..PODS)
        .map(pod)
        .chain((0..POLICIES).map(|i| policy(i, &format!("ns-{}", i % 20))))
        .collect()
}

async fn bulk(store: &dyn Datastore, chunk: usize) -> f64 {
    let all = ops(&objects());
    let n = all.len();
    let started = Instant::now();
    let mut batch = Vec::with_capacity(chunk.min(n));
    for op in all {
        batch.push(op);
        if batch.len() == chunk {
            store
                .apply_batch(std::mem::take(&mut batch))
                .await
                .expect("batch");
        }
    }
    if !batch.is_empty() {
        store.apply_batch(batch).await.expect("batch");
    }
    let got = store.list(keys::ROOT).await.expect("list").items.len();
    assert!(got >= n, "stored {got} of {n}");
    n as f64 / started.elapsed().as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(mut d: Vec<Duration>) -> String {
    d.sort();
    format!(
        "p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms (n={})",
        percentile(&d, 0.50).as_secs_f64() * 1e3,
        percentile(&d, 0.99).as_secs_f64() * 1e3,
        d[d.len() - 1].as_secs_f64() * 1e3,
        d.len()
    )
}

/// One policy per trial; a raw watch in another task reports when it sees it.
async fn latency_watch(store: Arc<dyn Datastore>, trials: usize) -> Vec<Duration> {
    let prefix = keys::policy("default", Some("lat-watch"), "x").expect("key");
    let prefix = prefix.trim_end_matches('x').to_string();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut stream = store.watch(&prefix, 0).await.expect("watch");
    tokio::spawn(async move {
        while let Some(Ok(ev)) = stream.next().await {
            if tx.send((ev.key().to_string(), Instant::now())).is_err() {
                return;
            }
        }
    });
    let mut out = Vec::with_capacity(trials);
    for i in 0..trials {
        let o = policy(i, "lat-watch");
        let key = o.key().expect("key");
        let op = Op::put(key.clone(), o.encode(OWNER_APPLY).expect("encode"));
        let started = Instant::now();
        store.apply_batch(vec![op]).await.expect("write");
        let (got, at) = rx.recv().await.expect("watcher alive");
        assert_eq!(got, key);
        out.push(at - started);
    }
    out
}

/// The same through a Syncer (decode included), as an agent sees it.
async fn latency_syncer(store: Arc<dyn Datastore>, trials: usize) -> Vec<Duration> {
    let prefix = "/palisade/v1/policies/default/lat-sync/";
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut h = Syncer::new(store.clone(), prefix).start();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        while let Some(ev) = h.recv().await {
            let key = match ev {
                SyncEvent::Update { key, .. } => key,
                SyncEvent::InSync { .. } => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                    continue;
                }
                _ => continue,
            };
            if tx.send((key, Instant::now())).is_err() {
                return;
            }
        }
    });
    ready_rx.await.expect("in sync");
    let mut out = Vec::with_capacity(trials);
    for i in 0..trials {
        let o = policy(i, "lat-sync");
        let key = o.key().expect("key");
        let op = Op::put(key.clone(), o.encode(OWNER_APPLY).expect("encode"));
        let started = Instant::now();
        store.apply_batch(vec![op]).await.expect("write");
        let (got, at) = rx.recv().await.expect("syncer alive");
        assert_eq!(got, key);
        out.push(at - started);
    }
    out
}

async fn run(name: &str, fresh: impl Fn() -> Arc<dyn Datastore>, trials: usize) {
    let one = bulk(fresh().as_ref(), usize::MAX).await;
    println!(
        "{name}: bulk apply of {} objects in one batch: {one:.0} objects/s",
        PODS + POLICIES
    );
    let chunked = bulk(fresh().as_ref(), 128).await;
    println!("{name}: bulk apply in batches of 128 ops: {chunked:.0} objects/s");
    let store = fresh();
    println!(
        "{name}: apply -> watch latency: {}",
        summary(latency_watch(store.clone(), trials).await)
    );
    println!(
        "{name}: apply -> syncer latency: {}",
        summary(latency_syncer(store, trials).await)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let trials: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500)
        .max(200);
    run(
        "embedded",
        || Arc::new(EmbeddedStore::new()) as Arc<dyn Datastore>,
        trials,
    )
    .await;

    // A fresh etcd per measurement, so each starts empty.
    let mut servers = Vec::new();
    let mut stores: Vec<Arc<dyn Datastore>> = Vec::new();
    for _ in 0..3 {
        let server = EtcdServer::start().expect("start etcd (is the etcd binary installed?)");
        stores.push(Arc::new(server.connect().await.expect("connect")));
        servers.push(server);
    }
    let next = std::sync::Mutex::new(stores);
    run("etcd", || next.lock().expect("lock").remove(0), trials).await;
    drop(servers);
}
