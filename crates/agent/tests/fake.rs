//! The agent against the in-memory kernel of `palisade_dataplane::fake` and the embedded
//! datastore: no root needed.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use palisade_agent::metrics::ErrorKind;
use palisade_agent::{client, server, Agent, DataplaneKind, NodeStatus};
use palisade_dataplane::fake::FakeKernel;
use palisade_dataplane::{
    iptables_dataplane, nft_dataplane, Dataplane, RecordingSleeper, RetryPolicy,
};
use palisade_store::{Datastore, EmbeddedStore, Listing, Op, Revision, StoredObject, WatchStream};
use tokio::sync::Semaphore;

const T: Duration = Duration::from_secs(10);

fn dataplane(kind: DataplaneKind, kernel: &Arc<FakeKernel>) -> Box<dyn Dataplane> {
    let cfg = palisade_render::RenderConfig::default();
    let sleeper = Arc::new(RecordingSleeper::new());
    match kind {
        DataplaneKind::Iptables => Box::new(iptables_dataplane(
            cfg,
            kernel.clone(),
            sleeper,
            RetryPolicy::none(),
        )),
        DataplaneKind::Nftables => Box::new(nft_dataplane(
            cfg,
            kernel.clone(),
            sleeper,
            RetryPolicy::none(),
        )),
    }
}

fn kernel_text(kernel: &FakeKernel, kind: DataplaneKind) -> String {
    match kind {
        DataplaneKind::Iptables => kernel.external("iptables-save", &[], None).stdout,
        DataplaneKind::Nftables => {
            kernel
                .external("nft", &["-j", "list", "table", "inet", "palisade"], None)
                .stdout
        }
    }
}

/// An embedded store whose `list` waits until the gate opens: the agent cannot get in sync.
#[derive(Debug)]
struct GatedStore {
    inner: EmbeddedStore,
    gate: Semaphore,
    lists: AtomicUsize,
}

#[async_trait]
impl Datastore for GatedStore {
    async fn get(&self, key: &str) -> palisade_store::Result<Option<palisade_store::KeyValue>> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> palisade_store::Result<Listing> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        let _permit = self.gate.acquire().await;
        self.inner.list(prefix).await
    }
    async fn apply_batch(&self, ops: Vec<Op>) -> palisade_store::Result<Revision> {
        self.inner.apply_batch(ops).await
    }
    async fn watch(&self, prefix: &str, from: Revision) -> palisade_store::Result<WatchStream> {
        self.inner.watch(prefix, from).await
    }
    async fn compact(&self, revision: Revision) -> palisade_store::Result<()> {
        self.inner.compact(revision).await
    }
    async fn current_revision(&self) -> palisade_store::Result<Revision> {
        self.inner.current_revision().await
    }
    fn describe(&self) -> String {
        "gated embedded".into()
    }
}

#[tokio::test]
async fn nothing_is_programmed_before_the_datastore_is_in_sync() {
    let store = Arc::new(GatedStore {
        inner: EmbeddedStore::new(),
        gate: Semaphore::new(0),
        lists: AtomicUsize::new(0),
    });
    put_all(store.as_ref(), &objects()).await;
    let kernel = Arc::new(FakeKernel::new());
    let agent = Agent::new(
        config(DataplaneKind::Iptables),
        store.clone(),
        dataplane(DataplaneKind::Iptables, &kernel),
    )
    .unwrap();
    let run = Running::start(agent);
    let s = store.clone();
    wait_for("the syncer to list", T, || {
        s.lists.load(Ordering::SeqCst) >= 1
    })
    .await;
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert!(
        kernel.calls().is_empty(),
        "ran {:?} before in sync",
        kernel.calls()
    );
    assert!(!run.shared.ready());
    store.gate.add_permits(1000);
    run.wait_ready(T).await;
    assert!(kernel_text(&kernel, DataplaneKind::Iptables).contains("pal-FORWARD"));
    run.stop().await;
}

#[tokio::test]
async fn programs_both_backends_and_reports_status_metrics_and_counters() {
    for kind in [DataplaneKind::Iptables, DataplaneKind::Nftables] {
        let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::new());
        let rev = put_all(store.as_ref(), &objects()).await;
        let kernel = Arc::new(FakeKernel::new());
        let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let agent = Agent::new(config(kind), store.clone(), dataplane(kind, &kernel))
            .unwrap()
            .with_metrics_addr(addr.to_string());
        let shared = agent.shared();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let srv = tokio::spawn(server::serve(listener, shared, async move {
            let _ = stop_rx.await;
        }));
        let (code, _) = client::get(addr, "/healthz", T).await.unwrap();
        assert_eq!(code, 200);
        let (code, body) = client::get(addr, "/readyz", T).await.unwrap();
        assert_eq!(code, 503, "not ready before running: {body}");
        let run = Running::start(agent);
        run.wait_ready(T).await;
        let text = kernel_text(&kernel, kind);
        let web_tw = palisade_render::names::endpoint_chain(
            palisade_model::Direction::Ingress,
            &palisade_model::endpoint::interface_name(
                "pal",
                &palisade_model::EndpointId::new("prod", "web"),
            ),
        );
        assert!(text.contains(&web_tw), "{kind}: no {web_tw} in\n{text}");

        // Status in the datastore: in sync at the revision, with the policy summary.
        let st = store.clone();
        wait_for_async("status in sync", T, || {
            let st = st.clone();
            async move {
                match st.get("/palisade/v1/status/n1").await.unwrap() {
                    Some(kv) => {
                        let s = NodeStatus::decode(&kv.key, &kv.value).unwrap();
                        s.in_sync && s.revision >= rev
                    }
                    None => false,
                }
            }
        })
        .await;
        let kv = store.get("/palisade/v1/status/n1").await.unwrap().unwrap();
        let status = NodeStatus::decode(&kv.key, &kv.value).unwrap();
        assert_eq!(status.dataplane, kind.as_str());
        assert_eq!(status.metrics_addr, Some(addr.to_string()));
        let web = status
            .endpoints
            .iter()
            .find(|e| e.endpoint == "prod/web")
            .unwrap();
        assert_eq!(web.ingress, vec!["prod/web-from-client".to_string()]);
        assert!(
            status.endpoints.iter().all(|e| e.endpoint != "prod/remote"),
            "remote pod is not local"
        );

        let (code, _) = client::get(addr, "/readyz", T).await.unwrap();
        assert_eq!(code, 200);
        let (_, metrics) = client::get(addr, "/metrics", T).await.unwrap();
        assert!(metrics.contains("palisade_agent_in_sync 1"), "{metrics}");
        assert!(
            metrics.contains("palisade_agent_local_endpoints 3"),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!(
                "palisade_agent_applied_revision {}",
                status.revision
            )),
            "{metrics}"
        );
        let (code, body) = client::get(addr, "/counters", T).await.unwrap();
        assert_eq!(code, 200, "{body}");
        let report: palisade_agent::CountersReport = serde_json::from_str(&body).unwrap();
        assert_eq!(report.dataplane, kind.as_str());
        assert!(
            report
                .rules
                .iter()
                .any(|r| r.policy.as_deref() == Some("prod/web-from-client") && r.rule == Some(0)),
            "{body}"
        );
        assert!(
            report
                .drops
                .iter()
                .any(|d| d.endpoint.as_deref() == Some("prod/web") && d.direction == "ingress"),
            "{body}"
        );

        // A change is applied and only the difference is written.
        kernel.clear_calls();
        let rev2 = put(store.as_ref(), &StoredObject::Policy(deny_to_client())).await;
        let sh = run.shared.clone();
        wait_for("the new policy applied", T, || {
            sh.progress().revision >= rev2 && sh.ready()
        })
        .await;
        let writes = kernel.writes();
        assert!(!writes.is_empty());
        for w in &writes {
            let input = w.stdin.as_deref().unwrap_or("");
            assert!(
                !input.contains("flush table") && !input.contains("-F pal-FORWARD"),
                "{kind}: rewrote everything:\n{input}"
            );
        }
        run.stop().await;
        let _ = stop_tx.send(());
        srv.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_failed_restore_is_counted_and_retried() {
    let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::new());
    put_all(store.as_ref(), &objects()).await;
    let kernel = Arc::new(FakeKernel::new());
    kernel.fail_next("iptables-restore", 2);
    let agent = Agent::new(
        config(DataplaneKind::Iptables),
        store.clone(),
        dataplane(DataplaneKind::Iptables, &kernel),
    )
    .unwrap();
    let run = Running::start(agent);
    let sh = run.shared.clone();
    wait_for("an apply error", T, || sh.progress().last_error.is_some()).await;
    let why = run.shared.progress().not_ready_reason().unwrap_or_default();
    assert!(
        why.contains("last apply failed") && why.contains("injected failure"),
        "{why}"
    );
    run.wait_ready(T).await;
    assert_eq!(
        run.shared.metrics.errors(ErrorKind::Apply),
        2,
        "two failures, then success"
    );
    assert!(run.shared.progress().last_error.is_none());
    assert!(kernel_text(&kernel, DataplaneKind::Iptables).contains("pal-FORWARD"));
    let metrics = run.shared.metrics.encode();
    assert!(
        metrics.contains("palisade_agent_errors_total{kind=\"apply\"} 2"),
        "{metrics}"
    );
    run.stop().await;
}

#[tokio::test]
async fn drift_is_repaired_at_the_next_resync() {
    let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::new());
    put_all(store.as_ref(), &objects()).await;
    let kernel = Arc::new(FakeKernel::new());
    let mut cfg = config(DataplaneKind::Iptables);
    cfg.resync_interval = Duration::from_millis(200);
    let agent = Agent::new(
        cfg,
        store.clone(),
        dataplane(DataplaneKind::Iptables, &kernel),
    )
    .unwrap();
    let run = Running::start(agent);
    run.wait_ready(T).await;
    let healthy = kernel_text(&kernel, DataplaneKind::Iptables);
    let resyncs = run.shared.metrics.resyncs.get();
    let out = kernel.external("iptables", &["-F", "pal-FORWARD"], None);
    let flushed = if out.success() {
        kernel_text(&kernel, DataplaneKind::Iptables)
    } else {
        // The fake may not know `iptables -F`: flush through restore instead.
        let out = kernel.external(
            "iptables-restore",
            &["--noflush"],
            Some("*filter\n:pal-FORWARD - [0:0]\nCOMMIT\n"),
        );
        assert!(out.success(), "{}", out.stderr);
        kernel_text(&kernel, DataplaneKind::Iptables)
    };
    assert_ne!(flushed, healthy, "the chain was flushed");
    let k = kernel.clone();
    let sh = run.shared.clone();
    wait_for("drift repaired by a resync", T, || {
        kernel_text(&k, DataplaneKind::Iptables) == healthy && sh.metrics.resyncs.get() > resyncs
    })
    .await;
    run.stop().await;
}

#[tokio::test]
async fn a_change_that_changes_nothing_on_this_node_never_reaches_the_dataplane() {
    let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::new());
    put_all(store.as_ref(), &objects()).await;
    let kernel = Arc::new(FakeKernel::new());
    let agent = Agent::new(
        config(DataplaneKind::Nftables),
        store.clone(),
        dataplane(DataplaneKind::Nftables, &kernel),
    )
    .unwrap();
    let run = Running::start(agent);
    run.wait_ready(T).await;
    let applies = run.shared.metrics.applies.get();
    kernel.clear_calls();
    // A pod on another node that no selector of n1's policies matches.
    let rev = put(
        store.as_ref(),
        &StoredObject::Endpoint(pod("dev", "unrelated", "n2", "10.0.9.9", "batch")),
    )
    .await;
    let mut applied = run.shared.applied();
    tokio::time::timeout(T, applied.wait_for(|r| *r >= rev))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.shared.metrics.applies.get(), applies + 1);
    assert!(kernel.calls().is_empty(), "ran {:?}", kernel.calls());
    assert!(!run.shared.progress().last_wrote);
    // A relevant change still goes through.
    let rev = put(
        store.as_ref(),
        &StoredObject::Endpoint(pod("prod", "client2", "n2", "10.0.1.2", "client")),
    )
    .await;
    tokio::time::timeout(T, applied.wait_for(|r| *r >= rev))
        .await
        .unwrap()
        .unwrap();
    assert!(run.shared.progress().last_wrote);
    assert!(!kernel.writes().is_empty());
    run.stop().await;
}

/// A host-networked pod on this very node, labelled like the selected pods and like the
/// peers of their policies, is neither a local workload endpoint nor a peer: the kernel is
/// not touched, and deleting it changes nothing either.
#[tokio::test]
async fn a_host_networked_pod_is_never_programmed() {
    let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::new());
    put_all(store.as_ref(), &objects()).await;
    let kernel = Arc::new(FakeKernel::new());
    let agent = Agent::new(
        config(DataplaneKind::Nftables),
        store.clone(),
        dataplane(DataplaneKind::Nftables, &kernel),
    )
    .unwrap();
    let run = Running::start(agent);
    run.wait_ready(T).await;
    let before = kernel_text(&kernel, DataplaneKind::Nftables);
    kernel.clear_calls();
    let mut applied = run.shared.applied();
    // The agent reports no revision for keys it does not read: a change after each one (a pod
    // on another node that nothing selects, which writes nothing) says it got past it.
    let mut marker = 0;
    let mut got_past = |store: Arc<dyn Datastore>| {
        marker += 1;
        async move {
            let unrelated = pod(
                "dev",
                "unrelated",
                "n2",
                "10.0.9.9",
                &format!("batch{marker}"),
            );
            put(store.as_ref(), &StoredObject::Endpoint(unrelated)).await
        }
    };
    for app in ["web", "client"] {
        let host = StoredObject::HostEndpoint(pod("prod", app, NODE, "192.168.0.1", app));
        put(store.as_ref(), &host).await;
        let rev = got_past(store.clone()).await;
        tokio::time::timeout(T, applied.wait_for(|r| *r >= rev))
            .await
            .unwrap()
            .unwrap();
        delete(store.as_ref(), &host).await;
        let rev = got_past(store.clone()).await;
        tokio::time::timeout(T, applied.wait_for(|r| *r >= rev))
            .await
            .unwrap()
            .unwrap();
    }
    assert!(kernel.writes().is_empty(), "wrote {:?}", kernel.writes());
    assert_eq!(kernel_text(&kernel, DataplaneKind::Nftables), before);
    run.stop().await;
}

#[tokio::test]
async fn a_burst_of_changes_is_coalesced_into_few_applies() {
    let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::new());
    put_all(store.as_ref(), &objects()).await;
    let kernel = Arc::new(FakeKernel::new());
    let agent = Agent::new(
        config(DataplaneKind::Iptables),
        store.clone(),
        dataplane(DataplaneKind::Iptables, &kernel),
    )
    .unwrap();
    let run = Running::start(agent);
    run.wait_ready(T).await;
    let before = run.shared.metrics.applies.get();
    // 200 relevant changes as fast as the store takes them: remote client pods appear.
    let mut rev = 0;
    for i in 0..200u32 {
        let ip = format!("10.0.{}.{}", 100 + i / 200, i % 200 + 1);
        rev = put(
            store.as_ref(),
            &StoredObject::Endpoint(pod("prod", &format!("c{i}"), "n2", &ip, "client")),
        )
        .await;
    }
    let mut applied = run.shared.applied();
    tokio::time::timeout(T, applied.wait_for(|r| *r >= rev))
        .await
        .unwrap()
        .unwrap();
    let applies = run.shared.metrics.applies.get() - before;
    assert!(
        (1..=40).contains(&applies),
        "200 changes took {applies} applies"
    );
    // The kernel has all of them.
    let save = kernel.external("ipset", &["save"], None).stdout;
    assert!(save.contains("10.0.100.200"), "{save}");
    run.stop().await;
}

/// Deletes `key` and returns the revision.
async fn delete(store: &dyn Datastore, object: &StoredObject) -> i64 {
    store
        .apply_batch(vec![Op::delete(object.key().unwrap())])
        .await
        .unwrap()
}

#[tokio::test]
async fn incremental_applies_match_a_full_render_and_a_fresh_agent() {
    let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::new());
    put_all(store.as_ref(), &objects()).await;
    let kernel = Arc::new(FakeKernel::new());
    // `config` checks every patched program against a full render: a difference fails the
    // apply and counts an apply error.
    let agent = Agent::new(
        config(DataplaneKind::Nftables),
        store.clone(),
        dataplane(DataplaneKind::Nftables, &kernel),
    )
    .unwrap();
    let run = Running::start(agent);
    run.wait_ready(T).await;
    let mut applied = run.shared.applied();
    // A deterministic pseudo-random walk: pods coming, going and changing app on both
    // nodes, the two policies removed and put back.
    let apps = ["web", "client", "other", "db"];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut present: std::collections::BTreeSet<String> =
        objects().iter().map(|o| o.key().unwrap()).collect();
    for step in 0..60u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x % 6) as usize;
        let node = if x.is_multiple_of(3) { "n2" } else { NODE };
        let app = apps[(x >> 8) as usize % apps.len()];
        let ip = format!("10.0.{}.{}", 2 + i, 10 + (x >> 16) % 3);
        let p = StoredObject::Endpoint(pod("prod", &format!("p{i}"), node, &ip, app));
        let web = StoredObject::Policy(allow_client_to_web());
        let deny = StoredObject::Policy(deny_to_client());
        // Only objects that exist are deleted (deleting nothing makes no event).
        let (object, remove) = match (x >> 24) % 6 {
            0 => (p, true),
            1 => (web, true),
            2 => (deny, true),
            3 => (web, false),
            4 => (deny, false),
            _ => (p, false),
        };
        let key = object.key().unwrap();
        let rev = if remove && present.contains(&key) {
            present.remove(&key);
            delete(store.as_ref(), &object).await
        } else {
            present.insert(key);
            put(store.as_ref(), &object).await
        };
        tokio::time::timeout(T, applied.wait_for(|r| *r >= rev))
            .await
            .unwrap_or_else(|_| panic!("step {step} not applied"))
            .unwrap();
    }
    assert_eq!(run.shared.metrics.errors(ErrorKind::Apply), 0);
    let incremental = kernel_text(&kernel, DataplaneKind::Nftables);
    run.stop().await;
    // A fresh agent renders everything from the same datastore: the same kernel.
    let fresh = Arc::new(FakeKernel::new());
    let agent = Agent::new(
        config(DataplaneKind::Nftables),
        store.clone(),
        dataplane(DataplaneKind::Nftables, &fresh),
    )
    .unwrap();
    let run = Running::start(agent);
    run.wait_ready(T).await;
    assert_eq!(kernel_text(&fresh, DataplaneKind::Nftables), incremental);
    run.stop().await;
}
