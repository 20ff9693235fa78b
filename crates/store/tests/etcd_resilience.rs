//! The etcd backend and the syncer against real trouble: an unreachable server, a restart,
//! compaction while a client was cut off, and a cluster member dying mid-watch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_store::testing::suite::{next_event, next_sync};
use palisade_store::testing::{EtcdCluster, EtcdServer, TcpProxy};
use palisade_store::{
    Datastore, EtcdConfig, EtcdStore, Record, StoreError, StoredObject, SyncEvent, Syncer,
    WatchEvent, OWNER_APPLY,
};

fn ns(name: &str) -> (String, Vec<u8>) {
    let o = StoredObject::Namespace(palisade_model::Namespace::implicit(name));
    (o.key().unwrap(), o.encode(OWNER_APPLY).unwrap())
}

#[tokio::test]
async fn unreachable_etcd_fails_fast_and_clearly() {
    let port = palisade_store::testing::free_port().unwrap();
    let started = Instant::now();
    let err = EtcdStore::connect(EtcdConfig::new([format!("127.0.0.1:{port}")]))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_across_an_etcd_restart() {
    let mut server = EtcdServer::start().unwrap();
    let store = server.connect().await.unwrap();
    let r0 = store.put("/r/k0", b"0".to_vec()).await.unwrap();
    let mut w = store.watch("/r/", r0).await.unwrap();
    assert_eq!(next_event(&mut w).await.unwrap().revision(), r0);
    server.stop();
    server.restart().unwrap();
    // Writes after the restart (through a fresh client; the old one reconnects by itself).
    let writer = server.connect().await.unwrap();
    let r1 = writer.put("/r/k1", b"1".to_vec()).await.unwrap();
    let r2 = writer.delete("/r/k0", None).await.unwrap();
    let e1 = next_event(&mut w).await.unwrap();
    let e2 = next_event(&mut w).await.unwrap();
    assert!(
        matches!(&e1, WatchEvent::Put(kv) if kv.key == "/r/k1" && kv.mod_revision == r1),
        "{e1:?}"
    );
    assert_eq!(
        e2,
        WatchEvent::Delete {
            key: "/r/k0".into(),
            mod_revision: r2
        }
    );
    // Nothing repeated.
    let extra =
        tokio::time::timeout(Duration::from_millis(300), futures::StreamExt::next(&mut w)).await;
    assert!(extra.is_err(), "unexpected {extra:?}");
}

/// A client is cut off; meanwhile others change things and compact the history. When it
/// comes back, its syncer must deliver exactly the differences.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_during_a_disconnect_resyncs_exactly_the_changes() {
    let server = EtcdServer::start().unwrap();
    let direct = server.connect().await.unwrap();
    let proxy = TcpProxy::start(server.endpoint().parse().unwrap())
        .await
        .unwrap();
    let mut cfg = server.config();
    cfg.endpoints = vec![proxy.endpoint()];
    let cut_off_client = EtcdStore::connect(cfg).await.unwrap();
    let cut_off: Arc<dyn Datastore> = Arc::new(cut_off_client.clone());

    let names = ["a", "b", "c", "d"];
    for n in names {
        let (k, v) = ns(n);
        direct.put(&k, v).await.unwrap();
    }
    let mut sync = Syncer::new(cut_off, "/palisade/v1/namespaces/")
        .with_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .start();
    let mut initial = 0;
    while !matches!(next_sync(&mut sync).await, SyncEvent::InSync { .. }) {
        initial += 1;
    }
    assert_eq!(initial, 4);

    proxy.cut();
    // Wait until the client behind the proxy has noticed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cut_off_client.get("/x").await.is_ok() {
        assert!(Instant::now() < deadline, "proxy cut not noticed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (ka, mut va) = ns("a");
    va.extend_from_slice(b" "); // same object, new bytes: a change
    let ra = direct.put(&ka, va).await.unwrap();
    let (kb, _) = ns("b");
    direct.delete(&kb, None).await.unwrap();
    let (ke, ve) = ns("e");
    let re = direct.put(&ke, ve).await.unwrap();
    let (kf, vf) = ns("f");
    direct.put(&kf, vf).await.unwrap();
    let rf = direct.delete(&kf, None).await.unwrap();
    direct.compact(rf).await.unwrap();
    proxy.restore();

    let mut updates = Vec::new();
    let in_sync_at = loop {
        match next_sync(&mut sync).await {
            SyncEvent::InSync { revision } => break revision,
            SyncEvent::OutOfSync { .. } => {}
            SyncEvent::Update {
                key,
                value,
                revision,
            } => updates.push((key, value.is_some(), revision)),
            other => panic!("unexpected {other:?}"),
        }
    };
    updates.sort();
    assert_eq!(
        updates,
        vec![(ka, true, ra), (kb, false, in_sync_at), (ke, true, re)],
        "exactly the differences"
    );
    assert_eq!(in_sync_at, rf);
    // And it goes on watching.
    let (kg, vg) = ns("g");
    let rg = direct.put(&kg, vg).await.unwrap();
    match next_sync(&mut sync).await {
        SyncEvent::Update {
            key,
            value: Some(Record { .. }),
            revision,
        } => assert_eq!((key, revision), (kg, rg)),
        other => panic!("unexpected {other:?}"),
    }
}

/// Kill one member of three while a syncer watches and a writer writes N keys: the syncer
/// sees each of the N writes once, in revision order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_member_death_loses_and_repeats_nothing() {
    const N: usize = 60;
    let mut cluster = EtcdCluster::start(3).unwrap();
    let reader: Arc<dyn Datastore> = Arc::new(cluster.connect().await.unwrap());
    let writer = cluster.connect().await.unwrap();
    let mut sync = Syncer::new(reader, "/palisade/v1/namespaces/")
        .with_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .start();
    assert!(matches!(
        next_sync(&mut sync).await,
        SyncEvent::InSync { .. }
    ));

    // The member serving the syncer's watch (the writer has none).
    let deadline = Instant::now() + Duration::from_secs(10);
    let watched = loop {
        let w = cluster.members_with_watchers();
        if w.len() == 1 {
            break w;
        }
        assert!(
            Instant::now() < deadline,
            "one member should serve the watch: {w:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut seen: Vec<(String, i64)> = Vec::new();
    for i in 0..N {
        if i == N / 3 {
            cluster.kill_member(watched[0]);
        }
        let (k, v) = ns(&format!("n{i:03}"));
        // Retry through the election; a retried create that already landed is AlreadyExists.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match writer.create(&k, v.clone()).await {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => break,
                Err(e) if e.is_transient() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("write {k}: {e}"),
            }
        }
    }
    while seen.len() < N {
        match next_sync(&mut sync).await {
            SyncEvent::Update {
                key,
                value: Some(_),
                revision,
            } => seen.push((key, revision)),
            SyncEvent::InSync { .. } | SyncEvent::OutOfSync { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let keys: std::collections::BTreeSet<&String> = seen.iter().map(|(k, _)| k).collect();
    assert_eq!(keys.len(), N, "every key exactly once");
    assert!(
        seen.windows(2).all(|w| w[0].1 < w[1].1),
        "revisions in order: {seen:?}"
    );
    let extra = tokio::time::timeout(Duration::from_millis(300), sync.recv()).await;
    assert!(
        !matches!(extra, Ok(Some(SyncEvent::Update { .. }))),
        "no duplicate: {extra:?}"
    );
}

/// The request timeout bounds requests, not the life of a watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_watch_outlives_the_request_timeout() {
    let server = EtcdServer::start().unwrap();
    let mut cfg = server.config();
    cfg.request_timeout = Duration::from_millis(500);
    let store = EtcdStore::connect(cfg).await.unwrap();
    let mut w = store.watch("/idle/", 0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = store.put("/idle/a", b"1".to_vec()).await.unwrap();
    assert_eq!(next_event(&mut w).await.unwrap().revision(), r);
}

/// A client cut off for longer than its watch is willing to wait reports OutOfSync once,
/// then catches up and reports InSync when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncer_reports_out_of_sync_then_catches_up() {
    let server = EtcdServer::start().unwrap();
    let direct = server.connect().await.unwrap();
    let proxy = TcpProxy::start(server.endpoint().parse().unwrap())
        .await
        .unwrap();
    let mut cfg = server.config();
    cfg.endpoints = vec![proxy.endpoint()];
    cfg.request_timeout = Duration::from_millis(500);
    cfg.watch_give_up = Duration::from_millis(300);
    let reader: Arc<dyn Datastore> = Arc::new(EtcdStore::connect(cfg).await.unwrap());
    let mut sync = Syncer::new(reader, "/palisade/v1/namespaces/")
        .with_backoff(Duration::from_millis(20), Duration::from_millis(100))
        .start();
    assert!(matches!(
        next_sync(&mut sync).await,
        SyncEvent::InSync { .. }
    ));

    proxy.cut();
    assert!(matches!(
        next_sync(&mut sync).await,
        SyncEvent::OutOfSync { .. }
    ));
    let (k, v) = ns("while-away");
    let r = direct.put(&k, v).await.unwrap();
    proxy.restore();
    assert_eq!(
        next_sync(&mut sync).await,
        SyncEvent::Update {
            key: k.clone(),
            value: Some(Record::decode(&k, &ns("while-away").1).unwrap()),
            revision: r
        }
    );
    assert_eq!(
        next_sync(&mut sync).await,
        SyncEvent::InSync { revision: r }
    );
}
