//! Replays a cluster through the controller as watch streams from the fake API server:
//! 10,000 pods and 2,000 NetworkPolicies (in 50 namespaces) by default.
//!
//! 1. initial sync: the objects exist before the controller starts (list → datastore);
//! 2. updates: every pod relabelled and every policy changed, as live watch events;
//! 3. deletes: every pod deleted, as live watch events.
//!
//! For each datastore (embedded, and etcd when the binary is installed) it prints the
//! initial sync time and the events/s applied in phases 2 and 3.
//!
//! `cargo run --release -p palisade-kube --example controller_bench [-- --pods N --policies N
//! --namespaces N --store embedded|etcd|both]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use palisade_kube::fake_api::objects::{allow_from, namespace, pod};
use palisade_kube::fake_api::FakeApi;
use palisade_kube::{ControllerConfig, Metrics};
use palisade_store::Datastore;
use tokio::sync::watch;

struct Opts {
    pods: usize,
    policies: usize,
    namespaces: usize,
    store: String,
}

fn opts() -> Opts {
    let mut o = Opts {
        pods: 10_000,
        policies: 2_000,
        namespaces: 50,
        store: "both".into(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < args.len() {
        let v = &args[i + 1];
        match args[i].as_str() {
            "--pods" => o.pods = v.parse().unwrap_or(o.pods),
            "--policies" => o.policies = v.parse().unwrap_or(o.policies),
            "--namespaces" => o.namespaces = v.parse().unwrap_or(o.namespaces).max(1),
            "--store" => o.store = v.clone(),
            other => eprintln!("ignoring unknown option {other}"),
        }
        i += 2;
    }
    o
}

fn ip(i: usize) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

async fn wait_writes(metrics: &Metrics, target: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while metrics.writes_total() < target {
        if Instant::now() > deadline {
            panic!("{what}: only {} of {target} writes", metrics.writes_total());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn bench(name: &str, store: Arc<dyn Datastore>, o: &Opts) {
    let (client, api) = FakeApi::start();
    let ns = |i: usize| format!("ns-{}", i % o.namespaces);
    for n in 0..o.namespaces {
        api.apply(&namespace(&format!("ns-{n}"), &[("team", "t")]));
    }
    for i in 0..o.pods {
        let app = format!("app-{}", i % 40);
        api.apply(&pod(
            &ns(i),
            &format!("pod-{i}"),
            Some(&format!("node-{}", i % 20)),
            Some(&ip(i)),
            &[("app", &app)],
        ));
    }
    for i in 0..o.policies {
        api.apply(&allow_from(
            &ns(i),
            &format!("pol-{i}"),
            &format!("app-{}", i % 40),
            &format!("app-{}", (i + 1) % 40),
        ));
    }
    let metrics = Metrics::new();
    let (_leader_tx, leader) = watch::channel(true);
    let (stop, shutdown) = watch::channel(false);
    let t0 = Instant::now();
    let task = tokio::spawn(palisade_kube::run(
        client,
        store.clone(),
        ControllerConfig::default(),
        metrics.clone(),
        leader,
        shutdown,
    ));
    let initial = (o.namespaces + o.pods + o.policies) as u64;
    wait_writes(&metrics, initial, "initial sync").await;
    let sync = t0.elapsed();

    // Updates as live watch events.
    let t1 = Instant::now();
    for i in 0..o.pods {
        let app = format!("app-{}", (i + 7) % 40);
        api.apply(&pod(
            &ns(i),
            &format!("pod-{i}"),
            Some(&format!("node-{}", i % 20)),
            Some(&ip(i)),
            &[("app", &app), ("v", "2")],
        ));
    }
    for i in 0..o.policies {
        api.apply(&allow_from(
            &ns(i),
            &format!("pol-{i}"),
            &format!("app-{}", i % 40),
            &format!("app-{}", (i + 3) % 40),
        ));
    }
    let produced_upd = t1.elapsed();
    let updates = (o.pods + o.policies) as u64;
    wait_writes(&metrics, initial + updates, "updates").await;
    let upd = t1.elapsed();

    let t2 = Instant::now();
    for i in 0..o.pods {
        api.delete::<Pod>(Some(&ns(i)), &format!("pod-{i}"));
    }
    wait_writes(&metrics, initial + updates + o.pods as u64, "deletes").await;
    let del = t2.elapsed();
    let left = store
        .list(palisade_store::keys::ENDPOINTS)
        .await
        .map(|l| l.items.len())
        .unwrap_or(usize::MAX);
    assert_eq!(left, 0, "every endpoint deleted");
    stop.send_replace(true);
    let _ = task.await;

    let text = metrics.encode();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0)
    };
    let mean_lag = value("palisade_controller_lag_seconds_sum")
        / value("palisade_controller_lag_seconds_count").max(1.0);
    println!(
        "{name:>8}: initial sync of {initial} objects {:>7.3} s ({:>8.0} objects/s) | {updates} update events {:>7.3} s ({:>8.0} events/s) | {} delete events {:>7.3} s ({:>8.0} events/s)",
        sync.as_secs_f64(),
        initial as f64 / sync.as_secs_f64(),
        upd.as_secs_f64(),
        updates as f64 / upd.as_secs_f64(),
        o.pods,
        del.as_secs_f64(),
        o.pods as f64 / del.as_secs_f64(),
    );
    println!(
        "{name:>8}: mean lag event→datastore {:.1} ms; the fake API alone took {:.3} s to emit the update events",
        mean_lag * 1000.0,
        produced_upd.as_secs_f64()
    );
}

/// The same objects fed straight into the reconcile loop (no HTTP, no JSON decode): the
/// cost of cache + plan + datastore writes alone.
async fn direct(name: &str, store: Arc<dyn Datastore>, o: &Opts) {
    use palisade_kube::cache::Change;
    use palisade_kube::objects::{self as obj, id_of, Kind};
    use palisade_kube::Reconciler;
    let ns = |i: usize| format!("ns-{}", i % o.namespaces);
    let metrics = Metrics::new();
    let mut rec = Reconciler::new(store, metrics.clone(), &ControllerConfig::default());
    let now = tokio::time::Instant::now;
    let mut changes = Vec::new();
    for kind in Kind::ALL {
        changes.push(Change::Init(kind));
    }
    for n in 0..o.namespaces {
        let v = namespace(&format!("ns-{n}"), &[]);
        changes.push(Change::InitApply(
            id_of(Kind::Namespace, &v),
            obj::namespace(&v),
        ));
    }
    for i in 0..o.pods {
        let v = pod(
            &ns(i),
            &format!("pod-{i}"),
            Some(&format!("node-{}", i % 20)),
            Some(&ip(i)),
            &[("app", "a")],
        );
        changes.push(Change::InitApply(id_of(Kind::Pod, &v), obj::pod(&v)));
    }
    for i in 0..o.policies {
        let v = allow_from(&ns(i), &format!("pol-{i}"), "a", "b");
        changes.push(Change::InitApply(
            id_of(Kind::NetworkPolicy, &v),
            obj::network_policy(&v),
        ));
    }
    for kind in Kind::ALL {
        changes.push(Change::InitDone(kind));
    }
    let t0 = Instant::now();
    for c in changes {
        rec.take((c, now()));
    }
    while rec.pending() {
        rec.round(true).await;
    }
    let sync = t0.elapsed();
    let mut updates = Vec::new();
    for i in 0..o.pods {
        let v = pod(
            &ns(i),
            &format!("pod-{i}"),
            Some(&format!("node-{}", i % 20)),
            Some(&ip(i)),
            &[("app", "b")],
        );
        updates.push(Change::Apply(id_of(Kind::Pod, &v), obj::pod(&v)));
    }
    let t1 = Instant::now();
    for chunk in updates.chunks(1000) {
        for c in chunk {
            rec.take((c.clone(), now()));
        }
        while rec.pending() {
            rec.round(true).await;
        }
    }
    let upd = t1.elapsed();
    println!(
        "{name:>8} (direct, no API): initial sync {:>7.3} s | {} pod updates in batches of 1000 {:>7.3} s ({:>8.0} events/s) | {} writes",
        sync.as_secs_f64(),
        o.pods,
        upd.as_secs_f64(),
        o.pods as f64 / upd.as_secs_f64(),
        metrics.writes_total()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let o = opts();
    println!(
        "controller_bench: {} pods, {} policies, {} namespaces (fake API watch streams → controller → datastore)",
        o.pods, o.policies, o.namespaces
    );
    if o.store == "embedded" || o.store == "both" {
        bench(
            "embedded",
            Arc::new(palisade_store::EmbeddedStore::new()),
            &o,
        )
        .await;
        direct(
            "embedded",
            Arc::new(palisade_store::EmbeddedStore::new()),
            &o,
        )
        .await;
    }
    if o.store == "etcd" || o.store == "both" {
        if !palisade_store::testing::etcd_available() {
            println!("    etcd: skipped (no etcd binary)");
            return;
        }
        let server = palisade_store::testing::EtcdServer::start().expect("start etcd");
        let store = server.connect().await.expect("connect etcd");
        bench("etcd", Arc::new(store), &o).await;
        let server = palisade_store::testing::EtcdServer::start().expect("start etcd");
        let store = server.connect().await.expect("connect etcd");
        direct("etcd", Arc::new(store), &o).await;
    }
}
