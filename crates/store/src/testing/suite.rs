//! The behavioural suite: what every [`Datastore`] must do, written once and run against
//! each backend through [`datastore_suite!`](crate::datastore_suite):
//!
//! ```ignore
//! palisade_store::datastore_suite!(async {
//!     let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::new());
//!     ((), store)
//! });
//! ```
//!
//! Each test uses its own key prefix and only relative revisions, so they can share a store.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};

use crate::codec::{Record, StoredObject, OWNER_APPLY};
use crate::datastore::{Datastore, Op, Precondition, Revision, WatchEvent, WatchStream};
use crate::error::StoreError;
use crate::syncer::{SyncEvent, Syncer};

/// Instantiates every suite test as a `#[tokio::test]`; `$factory` is an expression giving
/// a future of `(guard, Arc<dyn Datastore>)` (the guard lives as long as the test).
#[macro_export]
macro_rules! datastore_suite {
    ($factory:expr) => {
        $crate::datastore_suite!(@tests $factory;
            create_get_and_revisions,
            update_with_cas,
            delete_with_cas,
            list_by_prefix_at_a_revision,
            batch_is_all_or_nothing,
            watch_replays_then_follows,
            watch_from_compacted_revision,
            watch_from_a_future_revision,
            cas_race_has_one_winner_per_round,
            syncer_sends_state_in_sync_then_updates,
            watch_delivers_a_revision_at_once,
            syncer_never_splits_a_revision);
    };
    (@tests $factory:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (_guard, store) = $factory.await;
                $crate::testing::suite::$name(store).await;
            }
        )*
    };
}

const WAIT: Duration = Duration::from_secs(10);

/// The next watch item, failing the test after [`WAIT`].
pub async fn next_event(stream: &mut WatchStream) -> crate::Result<WatchEvent> {
    match tokio::time::timeout(WAIT, stream.next()).await {
        Ok(Some(item)) => item,
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within {WAIT:?}"),
    }
}

fn v(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

pub async fn create_get_and_revisions(store: Arc<dyn Datastore>) {
    let k = "/suite/create/a";
    assert_eq!(store.get(k).await.unwrap(), None);
    let before = store.current_revision().await.unwrap();
    let rev = store.create(k, v("1")).await.unwrap();
    assert_eq!(rev, before + 1, "one write bumps the revision by one");
    let kv = store.get(k).await.unwrap().expect("created key");
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (rev, rev, 1)
    );
    assert_eq!(kv.value, v("1"));
    let err = store.create(k, v("2")).await.unwrap_err();
    assert_eq!(err, StoreError::AlreadyExists { key: k.into() });
    assert_eq!(
        store.current_revision().await.unwrap(),
        rev,
        "failed create writes nothing"
    );
    let rev2 = store.put(k, v("3")).await.unwrap();
    let kv = store.get(k).await.unwrap().unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (rev, rev2, 2)
    );
}

pub async fn update_with_cas(store: Arc<dyn Datastore>) {
    let k = "/suite/update/a";
    let err = store.update(k, v("x"), None).await.unwrap_err();
    assert_eq!(err, StoreError::NotFound { key: k.into() });
    let r1 = store.create(k, v("1")).await.unwrap();
    let r2 = store.update(k, v("2"), Some(r1)).await.unwrap();
    assert!(r2 > r1);
    let err = store.update(k, v("3"), Some(r1)).await.unwrap_err();
    assert_eq!(
        err,
        StoreError::Conflict {
            key: k.into(),
            expected: r1,
            actual: r2
        }
    );
    assert_eq!(store.get(k).await.unwrap().unwrap().value, v("2"));
    let err = store
        .update("/suite/update/missing", v("3"), Some(r1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { actual: 0, .. }),
        "{err:?}"
    );
}

pub async fn delete_with_cas(store: Arc<dyn Datastore>) {
    let k = "/suite/delete/a";
    let err = store.delete(k, None).await.unwrap_err();
    assert_eq!(err, StoreError::NotFound { key: k.into() });
    let r1 = store.create(k, v("1")).await.unwrap();
    let err = store.delete(k, Some(r1 - 1)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    let r2 = store.delete(k, Some(r1)).await.unwrap();
    assert_eq!(r2, r1 + 1);
    assert_eq!(store.get(k).await.unwrap(), None);
    // Re-created keys start over.
    let r3 = store.create(k, v("again")).await.unwrap();
    let kv = store.get(k).await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.version), (r3, 1));
}

pub async fn list_by_prefix_at_a_revision(store: Arc<dyn Datastore>) {
    for k in [
        "/suite/list/p/b",
        "/suite/list/p/a",
        "/suite/list/pq/c",
        "/suite/list/o",
    ] {
        store.put(k, v(k)).await.unwrap();
    }
    let l = store.list("/suite/list/p/").await.unwrap();
    let keys: Vec<&str> = l.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/suite/list/p/a", "/suite/list/p/b"]);
    assert_eq!(l.revision, store.current_revision().await.unwrap());
    assert!(l.items.iter().all(|kv| kv.mod_revision <= l.revision));
    assert!(store
        .list("/suite/list/none/")
        .await
        .unwrap()
        .items
        .is_empty());
}

pub async fn batch_is_all_or_nothing(store: Arc<dyn Datastore>) {
    let p = "/suite/batch/";
    let r0 = store.create(&format!("{p}existing"), v("0")).await.unwrap();
    // The second op's precondition fails: nothing of the batch is written.
    let err = store
        .apply_batch(vec![
            Op::put(format!("{p}new"), v("1")),
            Op::put(format!("{p}existing"), v("1")).when(Precondition::ModRevision(r0 + 100)),
            Op::delete(format!("{p}existing")).when(Precondition::Any),
        ])
        .await;
    // (the duplicate key is refused before anything else)
    assert!(
        matches!(err, Err(StoreError::DuplicateKey { .. })),
        "{err:?}"
    );
    let err = store
        .apply_batch(vec![
            Op::put(format!("{p}new"), v("1")),
            Op::put(format!("{p}existing"), v("1")).when(Precondition::ModRevision(r0 + 100)),
            Op::put(format!("{p}other"), v("1")).when(Precondition::Exists),
        ])
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::Conflict {
            key: format!("{p}existing"),
            expected: r0 + 100,
            actual: r0
        },
        "the first failing op is reported"
    );
    assert_eq!(store.get(&format!("{p}new")).await.unwrap(), None);
    assert_eq!(store.current_revision().await.unwrap(), r0);
    // A good batch is one revision for all its ops.
    let r1 = store
        .apply_batch(vec![
            Op::put(format!("{p}new"), v("1")).when(Precondition::Absent),
            Op::put(format!("{p}existing"), v("2")).when(Precondition::ModRevision(r0)),
            Op::put(format!("{p}third"), v("3")),
        ])
        .await
        .unwrap();
    assert_eq!(r1, r0 + 1);
    let l = store.list(p).await.unwrap();
    assert_eq!(l.items.len(), 3);
    assert!(l.items.iter().all(|kv| kv.mod_revision == r1));
    // Deleting what is not there changes nothing, not even the revision.
    let r2 = store
        .apply_batch(vec![Op::delete(format!("{p}ghost"))])
        .await
        .unwrap();
    assert_eq!(r2, r1);
    assert_eq!(store.apply_batch(vec![]).await.unwrap(), r1);
}

pub async fn watch_replays_then_follows(store: Arc<dyn Datastore>) {
    let p = "/suite/watch/";
    let r1 = store.put(&format!("{p}a"), v("1")).await.unwrap();
    let r2 = store.delete(&format!("{p}a"), None).await.unwrap();
    store.put("/suite/watchother/x", v("no")).await.unwrap();
    let mut live = store.watch(p, 0).await.unwrap();
    let mut past = store.watch(p, r1).await.unwrap();
    let e = next_event(&mut past).await.unwrap();
    assert!(
        matches!(&e, WatchEvent::Put(kv) if kv.key == format!("{p}a") && kv.mod_revision == r1 && kv.value == v("1")),
        "{e:?}"
    );
    let e = next_event(&mut past).await.unwrap();
    assert_eq!(
        e,
        WatchEvent::Delete {
            key: format!("{p}a"),
            mod_revision: r2
        }
    );
    let r3 = store
        .apply_batch(vec![
            Op::put(format!("{p}b"), v("2")),
            Op::put(format!("{p}c"), v("3")),
        ])
        .await
        .unwrap();
    for stream in [&mut past, &mut live] {
        let b = next_event(stream).await.unwrap();
        let c = next_event(stream).await.unwrap();
        assert_eq!((b.key(), b.revision()), (format!("{p}b").as_str(), r3));
        assert_eq!((c.key(), c.revision()), (format!("{p}c").as_str(), r3));
    }
    // Nothing else (the other prefix) arrives.
    let extra = tokio::time::timeout(Duration::from_millis(200), live.next()).await;
    assert!(extra.is_err(), "unexpected event {extra:?}");
}

pub async fn watch_from_compacted_revision(store: Arc<dyn Datastore>) {
    let p = "/suite/compact/";
    let r1 = store.put(&format!("{p}a"), v("1")).await.unwrap();
    let r2 = store.put(&format!("{p}a"), v("2")).await.unwrap();
    store.compact(r2).await.unwrap();
    let mut w = store.watch(p, r1).await.unwrap();
    let err = next_event(&mut w).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Compacted { requested, .. } if requested == r1),
        "{err:?}"
    );
    // The compaction revision itself is still watchable.
    let mut w = store.watch(p, r2).await.unwrap();
    let e = next_event(&mut w).await.unwrap();
    assert_eq!(e.revision(), r2);
}

pub async fn watch_from_a_future_revision(store: Arc<dyn Datastore>) {
    let p = "/suite/future/";
    let now = store.current_revision().await.unwrap();
    let mut w = store.watch(p, now + 2).await.unwrap();
    store.put(&format!("{p}a"), v("1")).await.unwrap();
    let r = store.put(&format!("{p}b"), v("2")).await.unwrap();
    assert_eq!(r, now + 2);
    let e = next_event(&mut w).await.unwrap();
    assert_eq!((e.key(), e.revision()), (format!("{p}b").as_str(), r));
}

pub async fn cas_race_has_one_winner_per_round(store: Arc<dyn Datastore>) {
    let k = "/suite/race/counter";
    store.create(k, v("0")).await.unwrap();
    for round in 1..=20u32 {
        let kv = store.get(k).await.unwrap().unwrap();
        let (a, b) = (store.clone(), store.clone());
        let rev = kv.mod_revision;
        let ta = tokio::spawn(async move { a.update(k, v(&format!("a{round}")), Some(rev)).await });
        let tb = tokio::spawn(async move { b.update(k, v(&format!("b{round}")), Some(rev)).await });
        let (ra, rb) = (ta.await.unwrap(), tb.await.unwrap());
        let winner = match (&ra, &rb) {
            (Ok(_), Err(StoreError::Conflict { .. })) => "a",
            (Err(StoreError::Conflict { .. }), Ok(_)) => "b",
            other => panic!("round {round}: expected exactly one winner, got {other:?}"),
        };
        let now = store.get(k).await.unwrap().unwrap();
        assert_eq!(now.value, v(&format!("{winner}{round}")));
        assert_eq!(now.version, i64::from(round) + 1);
    }
    // Read-modify-write loops with retry never lose an increment.
    let k = "/suite/race/sum";
    store.create(k, v("0")).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                loop {
                    let kv = s.get(k).await.unwrap().unwrap();
                    let n: u64 = String::from_utf8_lossy(&kv.value).parse().unwrap();
                    match s
                        .update(k, v(&(n + 1).to_string()), Some(kv.mod_revision))
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.get(k).await.unwrap().unwrap().value, v("50"));
}

fn ns(name: &str) -> (String, Vec<u8>) {
    let o = StoredObject::Namespace(palisade_model::Namespace::implicit(name));
    (o.key().unwrap(), o.encode(OWNER_APPLY).unwrap())
}

/// The next syncer event within [`WAIT`].
pub async fn next_sync(h: &mut crate::SyncHandle) -> SyncEvent {
    match tokio::time::timeout(WAIT, h.recv()).await {
        Ok(Some(ev)) => ev,
        Ok(None) => panic!("syncer stopped"),
        Err(_) => panic!("no sync event within {WAIT:?}"),
    }
}

pub async fn syncer_sends_state_in_sync_then_updates(store: Arc<dyn Datastore>) {
    // A prefix of its own, so the syncer sees only this test's keys.
    let (ka, va) = ns("suite-sync-a");
    let (kb, vb) = ns("suite-sync-b");
    store.put(&ka, va).await.unwrap();
    let bad = "/palisade/v1/namespaces/suite-sync-bad";
    store.put(bad, v("{\"kind\":\"Widget\"}")).await.unwrap();
    let prefix = "/palisade/v1/namespaces/suite-sync-";
    let mut h = Syncer::new(store.clone(), prefix).start();
    let mut initial = Vec::new();
    let in_sync_rev = loop {
        match next_sync(&mut h).await {
            SyncEvent::InSync { revision } => break revision,
            ev => initial.push(ev),
        }
    };
    assert_eq!(initial.len(), 2, "{initial:?}");
    assert!(
        matches!(&initial[0], SyncEvent::Update { key, value: Some(Record { object: StoredObject::Namespace(n), .. }), .. } if *key == ka && n.name == "suite-sync-a")
    );
    assert!(matches!(&initial[1], SyncEvent::Invalid { key, .. } if key == bad));
    let r = store.put(&kb, vb).await.unwrap();
    assert!(r > in_sync_rev);
    let ev = next_sync(&mut h).await;
    assert!(
        matches!(&ev, SyncEvent::Update { key, value: Some(_), revision } if *key == kb && *revision == r),
        "{ev:?}"
    );
    let r = store.delete(&ka, None).await.unwrap();
    assert_eq!(
        next_sync(&mut h).await,
        SyncEvent::Update {
            key: ka,
            value: None,
            revision: r
        }
    );
}

/// One batch of `keys` namespaces `{prefix}{batch}-{k}`, as put ops.
fn ns_batch(prefix: &str, batch: usize, keys: usize) -> Vec<Op> {
    (0..keys)
        .map(|k| {
            let (key, value) = ns(&format!("{prefix}{batch}-{k}"));
            Op::put(key, value)
        })
        .collect()
}

/// Once a watch yields the first event of a revision, the rest of that revision is ready
/// (no await needed): a consumer draining what is ready never sees half a write.
pub async fn watch_delivers_a_revision_at_once(store: Arc<dyn Datastore>) {
    const KEYS: usize = 5;
    let mut w = store
        .watch("/palisade/v1/namespaces/suite-whole-", 0)
        .await
        .unwrap();
    for round in 0..50 {
        let rev = store
            .apply_batch(ns_batch("suite-whole-", round, KEYS))
            .await
            .unwrap();
        let first = next_event(&mut w).await.unwrap();
        assert_eq!(first.revision(), rev);
        for i in 1..KEYS {
            match w.next().now_or_never() {
                Some(Some(Ok(ev))) => assert_eq!(ev.revision(), rev, "round {round}"),
                other => panic!(
                    "round {round}: event {i} of revision {rev} not ready with the first: {other:?}"
                ),
            }
        }
    }
}

/// `recv_batch` with a timeout of [`WAIT`].
pub async fn next_sync_batch(h: &mut crate::SyncHandle, max: usize) -> Vec<SyncEvent> {
    match tokio::time::timeout(WAIT, h.recv_batch(max)).await {
        Ok(Some(batch)) => batch,
        Ok(None) => panic!("syncer stopped"),
        Err(_) => panic!("no sync batch within {WAIT:?}"),
    }
}

/// The agent's pattern: `recv_batch` in a tight loop while a writer applies multi-key
/// batches. No batch may hold part of a revision: the consumer would take the revision as
/// applied with only some of its keys.
pub async fn syncer_never_splits_a_revision(store: Arc<dyn Datastore>) {
    const BATCHES: usize = 200;
    const KEYS: usize = 5;
    let mut h = Syncer::new(store.clone(), "/palisade/v1/namespaces/suite-atomic-").start();
    loop {
        let batch = next_sync_batch(&mut h, 4096).await;
        if matches!(batch.last(), Some(SyncEvent::InSync { .. })) {
            break;
        }
    }
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for b in 0..BATCHES {
                store
                    .apply_batch(ns_batch("suite-atomic-", b, KEYS))
                    .await
                    .unwrap();
            }
        })
    };
    let (mut seen, mut calls) = (0, 0);
    let mut split: Vec<(usize, Revision, usize)> = Vec::new();
    while seen < BATCHES * KEYS {
        let batch = next_sync_batch(&mut h, 4096).await;
        let mut per_revision = std::collections::BTreeMap::<Revision, usize>::new();
        for ev in &batch {
            match ev {
                SyncEvent::Update {
                    value: Some(_),
                    revision,
                    ..
                } => *per_revision.entry(*revision).or_default() += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        seen += batch.len();
        split.extend(
            per_revision
                .into_iter()
                .filter(|&(_, n)| n != KEYS)
                .map(|(rev, n)| (calls, rev, n)),
        );
        calls += 1;
    }
    writer.await.unwrap();
    assert!(
        split.is_empty(),
        "{} revisions split over {calls} recv_batch calls; first (call, revision, events): {:?}",
        split.len(),
        &split[..split.len().min(10)]
    );
    // A group is never cut to fit `max` either.
    let rev = store
        .apply_batch(ns_batch("suite-atomic-last-", 0, KEYS))
        .await
        .unwrap();
    let batch = next_sync_batch(&mut h, 2).await;
    assert_eq!(batch.len(), KEYS, "{batch:?}");
    assert!(batch
        .iter()
        .all(|ev| matches!(ev, SyncEvent::Update { revision, .. } if *revision == rev)));
}
