use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::net::TcpListener;

use super::*;
use crate::{
    keys, Datastore, EmbeddedStore, Op, Record, StoreError, StoredObject, SyncEvent, Syncer,
    WatchEvent,
};

const PREFIX: &str = "/palisade/";

/// An embedded upstream, a relay following it and serving on a free port, and its address.
async fn relay(history_events: usize) -> (Arc<EmbeddedStore>, Relay, String) {
    let upstream = Arc::new(EmbeddedStore::new());
    upstream.put("/palisade/a", b"1".to_vec()).await.unwrap();
    upstream.put("/palisade/b", b"2".to_vec()).await.unwrap();
    upstream.put("/other/x", b"x".to_vec()).await.unwrap();
    let (relay, addr) = serve(upstream.clone(), history_events).await;
    (upstream, relay, addr)
}

/// A relay following `upstream`, serving on a free port once it holds its first list, and
/// its address.
async fn serve(upstream: Arc<dyn Datastore>, history_events: usize) -> (Relay, String) {
    let relay = Relay::new(RelayConfig {
        prefix: PREFIX.into(),
        history_events,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn({
        let r = relay.clone();
        async move { r.serve(listener).await }
    });
    tokio::spawn({
        let r = relay.clone();
        async move { r.follow(upstream).await }
    });
    relay.ready().await;
    (relay, addr)
}

async fn next_event(s: &mut crate::WatchStream) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream goes on")
        .expect("an event, not an error")
}

#[tokio::test]
async fn lists_and_watches_as_the_upstream_does() {
    let (upstream, relay, addr) = relay(1000).await;
    let client = RelayStore::new(vec![addr], 0);
    let listing = client.list(PREFIX).await.unwrap();
    assert_eq!(listing.items, upstream.list(PREFIX).await.unwrap().items);
    // A narrower prefix is served from the same copy.
    let only_a = client.list("/palisade/a").await.unwrap();
    assert_eq!(only_a.items.len(), 1);
    assert_eq!(only_a.revision, listing.revision);
    // Outside the relayed prefix: refused, with the reason.
    let err = client.list("/other/").await.unwrap_err();
    assert!(err.to_string().contains("serves /palisade/ only"), "{err}");

    let mut watch = client.watch(PREFIX, listing.revision + 1).await.unwrap();
    let mut narrow = client
        .watch("/palisade/b", listing.revision + 1)
        .await
        .unwrap();
    // A two-key write arrives whole; a write outside the prefix is not relayed.
    upstream.put("/other/y", b"y".to_vec()).await.unwrap();
    let rev = upstream
        .apply_batch(vec![
            Op::put("/palisade/c", b"3".to_vec()),
            Op::delete("/palisade/a"),
        ])
        .await
        .unwrap();
    let first = next_event(&mut watch).await;
    assert_eq!(first.key(), "/palisade/c");
    assert_eq!(first.revision(), rev);
    assert_eq!(
        futures::FutureExt::now_or_never(watch.next())
            .flatten()
            .map(|r| r.unwrap()),
        Some(WatchEvent::Delete {
            key: "/palisade/a".into(),
            mod_revision: rev
        }),
        "the rest of the revision is ready with its first event"
    );
    let b = upstream.put("/palisade/b", b"22".to_vec()).await.unwrap();
    match next_event(&mut narrow).await {
        WatchEvent::Put(kv) => assert_eq!((kv.key.as_str(), kv.mod_revision), ("/palisade/b", b)),
        other => panic!("the narrow watch saw {other:?}"),
    }
    assert_eq!(next_event(&mut watch).await.revision(), b);

    // A late client resumes from the kept history.
    let mut late = client.watch(PREFIX, rev).await.unwrap();
    assert_eq!(next_event(&mut late).await.revision(), rev);
    assert_eq!(next_event(&mut late).await.revision(), rev);
    assert_eq!(next_event(&mut late).await.revision(), b);
    let listing = client.list(PREFIX).await.unwrap();
    assert_eq!(listing.items, upstream.list(PREFIX).await.unwrap().items);
    assert_eq!(listing.revision, b);
    let stats = relay.stats();
    assert_eq!(
        (stats.upstream_lists, stats.keys, stats.revision),
        (1, 2, b)
    );
    assert!(
        stats.watches_served == 3 && stats.lists_served == 3,
        "{stats:?}"
    );
}

#[tokio::test]
async fn a_watch_older_than_the_history_is_compacted() {
    let (upstream, _relay, addr) = relay(2).await;
    let client = RelayStore::new(vec![addr], 0);
    let start = client.list(PREFIX).await.unwrap().revision;
    let mut watch = client.watch(PREFIX, start + 1).await.unwrap();
    for i in 0..5 {
        upstream
            .put(&format!("/palisade/k{i}"), vec![i])
            .await
            .unwrap();
        next_event(&mut watch).await;
    }
    let mut old = client.watch(PREFIX, start + 1).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), old.next()).await {
        Ok(Some(Err(StoreError::Compacted { requested, .. }))) => assert_eq!(requested, start + 1),
        other => panic!("expected Compacted, got {other:?}"),
    }
}

#[tokio::test]
async fn the_first_reachable_relay_answers_and_writes_need_a_store() {
    let (_upstream, _relay, addr) = relay(10).await;
    // A port nobody listens on (bound, then closed) first: the client moves on.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let client = RelayStore::new(vec![dead_addr.clone(), addr], 0);
    assert_eq!(client.list(PREFIX).await.unwrap().items.len(), 2);
    let err = client.put("/palisade/z", vec![]).await.unwrap_err();
    assert!(err.to_string().contains("only lists and watches"), "{err}");
    let none = RelayStore::new(vec![dead_addr], 0)
        .with_timeouts(Duration::from_secs(1), Duration::from_secs(1));
    assert!(none.list(PREFIX).await.unwrap_err().is_transient());
}

/// The agent's syncer runs unchanged over the relay.
#[tokio::test]
async fn a_syncer_through_the_relay_gets_in_sync_and_follows() {
    let (upstream, _relay, addr) = relay(100).await;
    let ns = StoredObject::Namespace(palisade_model::Namespace::implicit("prod"));
    let record = |o: &StoredObject| Record::new("test", o.clone()).encode().unwrap();
    let rev = upstream.put(&ns.key().unwrap(), record(&ns)).await.unwrap();
    let store: Arc<dyn Datastore> = Arc::new(RelayStore::new(vec![addr], 0));
    let mut sync = Syncer::new(store, keys::ROOT).start();
    let mut seen_ns = false;
    loop {
        let batch = sync.recv_batch(100).await.expect("syncer runs");
        for ev in batch {
            match ev {
                SyncEvent::Update { key, value, .. } if key == ns.key().unwrap() => {
                    assert_eq!(value.unwrap().object, ns);
                    seen_ns = true;
                }
                SyncEvent::InSync { revision } => {
                    assert!(revision >= rev);
                    assert!(seen_ns, "the namespace comes before InSync");
                }
                _ => {}
            }
        }
        if seen_ns {
            break;
        }
    }
    let ns2 = StoredObject::Namespace(palisade_model::Namespace::implicit("dev"));
    let rev2 = upstream
        .put(&ns2.key().unwrap(), record(&ns2))
        .await
        .unwrap();
    loop {
        let batch = tokio::time::timeout(Duration::from_secs(10), sync.recv_batch(100))
            .await
            .expect("the change arrives")
            .expect("syncer runs");
        if batch.iter().any(|ev| {
            matches!(ev, SyncEvent::Update { key, revision, .. }
                if *key == ns2.key().unwrap() && *revision == rev2)
        }) {
            break;
        }
    }
}

/// An upstream whose watches can be broken on demand (each ends with `Compacted`).
#[derive(Debug)]
struct Breakable {
    inner: Arc<EmbeddedStore>,
    breaks: tokio::sync::broadcast::Sender<()>,
}

#[async_trait::async_trait]
impl Datastore for Breakable {
    async fn get(&self, key: &str) -> crate::Result<Option<crate::KeyValue>> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> crate::Result<crate::Listing> {
        self.inner.list(prefix).await
    }
    async fn apply_batch(&self, ops: Vec<Op>) -> crate::Result<crate::Revision> {
        self.inner.apply_batch(ops).await
    }
    async fn watch(
        &self,
        prefix: &str,
        from: crate::Revision,
    ) -> crate::Result<crate::WatchStream> {
        let stream = self.inner.watch(prefix, from).await?;
        let rx = self.breaks.subscribe();
        Ok(Box::pin(futures::stream::unfold(
            Some((stream, rx)),
            |state| async move {
                let (mut stream, mut rx) = state?;
                tokio::select! {
                    ev = stream.next() => ev.map(|e| (e, Some((stream, rx)))),
                    _ = rx.recv() => Some((
                        Err(StoreError::Compacted { revision: 1, requested: 1 }),
                        None,
                    )),
                }
            },
        )))
    }
    async fn compact(&self, revision: crate::Revision) -> crate::Result<()> {
        self.inner.compact(revision).await
    }
    async fn current_revision(&self) -> crate::Result<crate::Revision> {
        self.inner.current_revision().await
    }
    fn describe(&self) -> String {
        "breakable".into()
    }
}

/// When the relay has to relist upstream, its clients' watches end with `Compacted`, and a
/// syncer through it relists and sees what changed meanwhile.
#[tokio::test]
async fn an_upstream_relist_makes_the_clients_relist() {
    let inner = Arc::new(EmbeddedStore::new());
    let (breaks, _) = tokio::sync::broadcast::channel(4);
    let upstream = Arc::new(Breakable {
        inner: inner.clone(),
        breaks: breaks.clone(),
    });
    let (relay, addr) = serve(upstream.clone(), RelayConfig::new(PREFIX).history_events).await;
    let client = RelayStore::new(vec![addr.clone()], 0);
    let rev = client.list(PREFIX).await.unwrap().revision;
    let mut watch = client.watch(PREFIX, rev + 1).await.unwrap();
    let store: Arc<dyn Datastore> = Arc::new(RelayStore::new(vec![addr], 0));
    let mut sync = Syncer::new(store, keys::ROOT)
        .with_backoff(Duration::from_millis(10), Duration::from_millis(50))
        .start();
    let first = sync.recv_batch(100).await.unwrap();
    assert!(
        matches!(first.last(), Some(SyncEvent::InSync { .. })),
        "{first:?}"
    );

    breaks.send(()).unwrap();
    match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
        Ok(Some(Err(StoreError::Compacted { .. }))) => {}
        other => panic!("expected Compacted, got {other:?}"),
    }
    let ns = StoredObject::Namespace(palisade_model::Namespace::implicit("late"));
    let value = Record::new("test", ns.clone()).encode().unwrap();
    inner.put(&ns.key().unwrap(), value).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    'seen: loop {
        let batch = tokio::time::timeout_at(deadline, sync.recv_batch(100))
            .await
            .expect("the late namespace arrives")
            .unwrap();
        for ev in batch {
            if let SyncEvent::Update {
                key,
                value: Some(_),
                ..
            } = ev
            {
                if key == ns.key().unwrap() {
                    break 'seen;
                }
            }
        }
    }
    assert!(relay.stats().upstream_lists >= 2, "{:?}", relay.stats());
}
