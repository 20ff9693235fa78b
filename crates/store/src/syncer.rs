//! The syncer: what an agent (or anyone who keeps a copy of the datastore) runs, in the way
//! of felix's syncer. It lists a prefix, delivers every object, says [`SyncEvent::InSync`],
//! then delivers each change from the watch. When the watch's history is compacted away it
//! relists and delivers only the differences (new, changed and vanished keys), and when the
//! datastore is unreachable it says [`SyncEvent::OutOfSync`], retries with backoff, and
//! catches up the same way. A consumer therefore sees every key's latest state exactly
//! once per change, never a repeat of an unchanged key.
//!
//! Events travel in groups that hold only whole revisions: a (re)list's differences and its
//! `InSync` are one group, and each group from the watch is every event that was ready at
//! once, cut only between revisions (the [`crate::WatchStream`] contract makes a revision's
//! events ready together). [`SyncHandle::recv_batch`] hands out whole groups, so a consumer
//! that takes a batch as "everything up to its highest revision" is never misled by half of
//! a multi-key write.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn palisade_store::Datastore>) {
//! use palisade_store::{keys, SyncEvent, Syncer};
//! let mut sync = Syncer::new(store, keys::ROOT).start();
//! while let Some(batch) = sync.recv_batch(1000).await {
//!     for ev in batch {
//!         match ev {
//!             SyncEvent::Update { key, value, revision } => { /* apply to the cache */ }
//!             SyncEvent::Invalid { key, error, .. } => { /* treat as deleted, report */ }
//!             SyncEvent::InSync { revision } => { /* now the dataplane may be programmed */ }
//!             SyncEvent::OutOfSync { reason } => { /* keep the dataplane; report */ }
//!         }
//!     }
//! }
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::codec::Record;
use crate::datastore::{Datastore, KeyValue, Revision, WatchEvent};
use crate::error::StoreError;

/// Watch events per group before the syncer stops taking more, at the next revision
/// boundary (a revision is never cut, so a group can be larger).
const GROUP_SOFT_LIMIT: usize = 4096;

/// What the syncer tells its consumer.
// Nearly every event is an `Update`, so boxing it would add an allocation and save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncEvent {
    /// A key was created or changed (`value: Some`) or deleted (`value: None`) at `revision`.
    Update {
        key: String,
        value: Option<Record>,
        revision: Revision,
    },
    /// A key holds a value that cannot be decoded (unknown kind, bad JSON, misplaced object).
    /// Treat the key as deleted; `error` names it.
    Invalid {
        key: String,
        error: StoreError,
        revision: Revision,
    },
    /// Every change up to `revision` has been delivered and the watch for later changes is in
    /// place: the consumer's copy is a consistent snapshot and it may act on it. Sent after
    /// the first list and again after every relist.
    InSync { revision: Revision },
    /// The datastore is unreachable; the copy may be stale until the next `InSync`.
    OutOfSync { reason: String },
}

/// Lists then watches one prefix; see the module docs.
pub struct Syncer {
    store: Arc<dyn Datastore>,
    prefix: String,
    backoff: Backoff,
    /// Groups of events queued for the consumer before the syncer waits for it.
    capacity: usize,
}

impl Syncer {
    /// A syncer of every key under `prefix` (e.g. [`crate::keys::ROOT`]).
    pub fn new(store: Arc<dyn Datastore>, prefix: impl Into<String>) -> Self {
        Syncer {
            store,
            prefix: prefix.into(),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            capacity: 256,
        }
    }

    /// Retry delays after a failure: from `initial`, doubling up to `max`.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = Backoff::new(initial, max);
        self
    }

    /// Spawns the syncer on the current tokio runtime; stop it by dropping the handle.
    pub fn start(self) -> SyncHandle {
        let (tx, rx) = mpsc::channel(self.capacity.max(1));
        let task = tokio::spawn(self.run_groups(tx));
        SyncHandle {
            rx,
            buf: VecDeque::new(),
            task,
        }
    }

    /// Runs until `tx`'s receiver is dropped, sending the events one by one: the receiver
    /// cannot tell where a revision ends. Prefer [`Syncer::start`] and
    /// [`SyncHandle::recv_batch`], which keep revisions whole.
    pub async fn run(self, tx: mpsc::Sender<SyncEvent>) {
        let (groups_tx, mut groups_rx) = mpsc::channel::<Vec<SyncEvent>>(1);
        let forward = async move {
            while let Some(group) = groups_rx.recv().await {
                for ev in group {
                    if tx.send(ev).await.is_err() {
                        return; // dropping `groups_rx` stops the syncer
                    }
                }
            }
        };
        tokio::join!(self.run_groups(groups_tx), forward);
    }

    /// Runs until `tx`'s receiver is dropped; each message is a group of whole revisions.
    async fn run_groups(mut self, tx: mpsc::Sender<Vec<SyncEvent>>) {
        let mut state = State {
            known: HashMap::new(),
            group: Vec::new(),
            tx,
        };
        let _ = self.sync_forever(&mut state).await;
    }

    /// Returns only when the consumer is gone (`Err(Closed)`).
    async fn sync_forever(&mut self, state: &mut State) -> Result<(), Closed> {
        let mut reported = false;
        loop {
            let listing = match self.store.list(&self.prefix).await {
                Ok(l) => l,
                Err(e) => {
                    self.fail(state, &mut reported, e).await?;
                    continue;
                }
            };
            // Watch from just after the list; only then is the copy known to stay current.
            let mut stream = match self.store.watch(&self.prefix, listing.revision + 1).await {
                Ok(s) => s,
                Err(e) => {
                    self.fail(state, &mut reported, e).await?;
                    continue;
                }
            };
            // The differences and InSync as one group: a relist never shows half a revision.
            state.diff(listing.items, listing.revision);
            state.group.push(SyncEvent::InSync {
                revision: listing.revision,
            });
            state.flush().await?;
            reported = false;
            self.backoff.reset();
            let error = self.follow(state, &mut stream).await?;
            if let StoreError::Compacted { .. } = error {
                tracing::info!(prefix = %self.prefix, %error, "history compacted; relisting");
                continue;
            }
            self.fail(state, &mut reported, error).await?;
        }
    }

    /// Delivers the watch's events, a group at a time, until it fails; returns why.
    async fn follow(
        &self,
        state: &mut State,
        stream: &mut crate::WatchStream,
    ) -> Result<StoreError, Closed> {
        let ended = || StoreError::Unavailable {
            endpoints: self.store.describe(),
            reason: "watch ended".into(),
        };
        // The first event of the next group, when the last one stopped at its soft limit.
        let mut carry: Option<WatchEvent> = None;
        loop {
            let first = match carry.take() {
                Some(ev) => Some(Ok(ev)),
                None => tokio::select! {
                    n = stream.next() => n,
                    _ = state.tx.closed() => return Err(Closed),
                },
            };
            let mut error = None;
            match first {
                Some(Ok(ev)) => {
                    let (mut revision, mut taken) = (ev.revision(), 1);
                    state.event(ev);
                    // Take everything ready: the rest of this revision is (the WatchStream
                    // contract), so stopping where nothing is ready stops between revisions.
                    loop {
                        match stream.next().now_or_never() {
                            None => break,
                            Some(Some(Ok(ev))) => {
                                if taken >= GROUP_SOFT_LIMIT && ev.revision() != revision {
                                    carry = Some(ev);
                                    break;
                                }
                                (revision, taken) = (ev.revision(), taken + 1);
                                state.event(ev);
                            }
                            Some(Some(Err(e))) => {
                                error = Some(e);
                                break;
                            }
                            Some(None) => {
                                error = Some(ended());
                                break;
                            }
                        }
                    }
                }
                Some(Err(e)) => error = Some(e),
                None => error = Some(ended()),
            }
            state.flush().await?;
            if let Some(e) = error {
                return Ok(e);
            }
        }
    }

    /// Reports the error once per outage (`reported`) and waits before the next attempt.
    async fn fail(
        &mut self,
        state: &mut State,
        reported: &mut bool,
        e: StoreError,
    ) -> Result<(), Closed> {
        tracing::warn!(prefix = %self.prefix, error = %e, "datastore sync failed; retrying");
        if !*reported {
            state.group.push(SyncEvent::OutOfSync {
                reason: e.to_string(),
            });
            state.flush().await?;
            *reported = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(self.backoff.next_delay()) => Ok(()),
            _ = state.tx.closed() => Err(Closed),
        }
    }
}

struct Closed;

struct State {
    /// Every key delivered (valid or not) and the mod revision it was delivered at.
    known: HashMap<String, Revision>,
    /// Events of the group being built; [`State::flush`] sends them.
    group: Vec<SyncEvent>,
    tx: mpsc::Sender<Vec<SyncEvent>>,
}

impl State {
    /// Sends the group built so far (if any) as one message.
    async fn flush(&mut self) -> Result<(), Closed> {
        if self.group.is_empty() {
            return Ok(());
        }
        let group = std::mem::take(&mut self.group);
        self.tx.send(group).await.map_err(|_| Closed)
    }

    fn put(&mut self, kv: KeyValue) {
        self.known.insert(kv.key.clone(), kv.mod_revision);
        let ev = match Record::decode(&kv.key, &kv.value) {
            Ok(rec) => SyncEvent::Update {
                key: kv.key,
                value: Some(rec),
                revision: kv.mod_revision,
            },
            Err(error) => SyncEvent::Invalid {
                key: kv.key,
                error,
                revision: kv.mod_revision,
            },
        };
        self.group.push(ev);
    }

    fn event(&mut self, ev: WatchEvent) {
        match ev {
            WatchEvent::Put(kv) => self.put(kv),
            WatchEvent::Delete { key, mod_revision } => {
                if self.known.remove(&key).is_none() {
                    return; // never delivered, nothing to retract
                }
                self.group.push(SyncEvent::Update {
                    key,
                    value: None,
                    revision: mod_revision,
                });
            }
        }
    }

    /// Adds what differs between the last delivered state and a fresh listing.
    fn diff(&mut self, items: Vec<KeyValue>, revision: Revision) {
        let mut present = std::collections::HashSet::with_capacity(items.len());
        for kv in items {
            present.insert(kv.key.clone());
            if self.known.get(&kv.key) != Some(&kv.mod_revision) {
                self.put(kv);
            }
        }
        let mut gone: Vec<String> = self
            .known
            .keys()
            .filter(|k| !present.contains(*k))
            .cloned()
            .collect();
        gone.sort();
        for key in gone {
            self.known.remove(&key);
            self.group.push(SyncEvent::Update {
                key,
                value: None,
                revision,
            });
        }
    }
}

/// The running syncer: receive its events; dropping the handle stops it.
pub struct SyncHandle {
    /// Groups of whole revisions.
    rx: mpsc::Receiver<Vec<SyncEvent>>,
    /// The rest of a group that `recv` or the stream has started handing out.
    buf: VecDeque<SyncEvent>,
    task: JoinHandle<()>,
}

impl SyncHandle {
    /// The next event (`None` only if the syncer stopped).
    pub async fn recv(&mut self) -> Option<SyncEvent> {
        loop {
            if let Some(ev) = self.buf.pop_front() {
                return Some(ev);
            }
            let group = self.rx.recv().await?;
            self.buf.extend(group);
        }
    }

    /// Waits for events, then takes whatever else is already queued while it has fewer than
    /// `max`: a consumer can apply a whole burst (such as the initial list) in one go. The
    /// batch never ends inside a revision: it holds whole groups (see the module docs), so
    /// it can exceed `max`, and every revision it mentions is complete in it (unless `recv`
    /// or the stream took the first events of a group, in which case it starts with the
    /// rest of that group).
    pub async fn recv_batch(&mut self, max: usize) -> Option<Vec<SyncEvent>> {
        let mut out: Vec<SyncEvent> = if self.buf.is_empty() {
            self.rx.recv().await?
        } else {
            self.buf.drain(..).collect()
        };
        while out.len() < max.max(1) {
            match self.rx.try_recv() {
                Ok(group) => out.extend(group),
                Err(_) => break,
            }
        }
        Some(out)
    }
}

/// The handle is also a stream of events, one by one, for `StreamExt` combinators and
/// `select!`.
impl futures::Stream for SyncHandle {
    type Item = SyncEvent;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<SyncEvent>> {
        loop {
            if let Some(ev) = self.buf.pop_front() {
                return std::task::Poll::Ready(Some(ev));
            }
            match std::task::ready!(self.rx.poll_recv(cx)) {
                Some(group) => self.buf.extend(group),
                None => return std::task::Poll::Ready(None),
            }
        }
    }
}

impl Drop for SyncHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::datastore::{Listing, Op, WatchStream};
    use crate::EmbeddedStore;

    const BATCHES: usize = 1000;
    const KEYS: usize = 5;

    /// An embedded store that, right after the (first) list, applies `BATCHES` writes of
    /// `KEYS` keys: the syncer's watch then replays them all at once.
    #[derive(Debug)]
    struct BurstAfterList {
        inner: EmbeddedStore,
        done: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl Datastore for BurstAfterList {
        async fn get(&self, key: &str) -> crate::Result<Option<KeyValue>> {
            self.inner.get(key).await
        }
        async fn list(&self, prefix: &str) -> crate::Result<Listing> {
            let listing = self.inner.list(prefix).await?;
            if !self.done.swap(true, std::sync::atomic::Ordering::SeqCst) {
                for b in 0..BATCHES {
                    let ops = (0..KEYS)
                        .map(|k| Op::put(format!("{prefix}{b}-{k}"), b"x".to_vec()))
                        .collect();
                    self.inner.apply_batch(ops).await?;
                }
            }
            Ok(listing)
        }
        async fn apply_batch(&self, ops: Vec<Op>) -> crate::Result<Revision> {
            self.inner.apply_batch(ops).await
        }
        async fn watch(&self, prefix: &str, from: Revision) -> crate::Result<WatchStream> {
            self.inner.watch(prefix, from).await
        }
        async fn compact(&self, revision: Revision) -> crate::Result<()> {
            self.inner.compact(revision).await
        }
        async fn current_revision(&self) -> crate::Result<Revision> {
            self.inner.current_revision().await
        }
        fn describe(&self) -> String {
            "burst".into()
        }
    }

    fn revision(ev: &SyncEvent) -> Revision {
        match ev {
            SyncEvent::Update { revision, .. } | SyncEvent::Invalid { revision, .. } => *revision,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A burst larger than the soft limit is cut into several groups, each at a revision
    /// boundary, and nothing is lost or repeated.
    #[tokio::test]
    async fn large_bursts_are_cut_between_revisions() {
        let store = Arc::new(BurstAfterList {
            inner: EmbeddedStore::new(),
            done: false.into(),
        });
        let mut h = Syncer::new(store, "/t/").start();
        let mut last = match h.recv_batch(1).await.as_deref() {
            Some([SyncEvent::InSync { revision }]) => *revision,
            other => panic!("expected InSync alone, got {other:?}"),
        };
        let mut sizes = Vec::new();
        while sizes.iter().sum::<usize>() < BATCHES * KEYS {
            // max 1: exactly one group per call.
            let group = h.recv_batch(1).await.expect("syncer running");
            let first = revision(&group[0]);
            let end = revision(&group[group.len() - 1]);
            assert_eq!(first, last + 1, "groups are contiguous");
            let mut per_revision = HashMap::<Revision, usize>::new();
            for ev in &group {
                *per_revision.entry(revision(ev)).or_default() += 1;
            }
            assert!(
                per_revision.values().all(|&n| n == KEYS),
                "{per_revision:?}"
            );
            last = end;
            sizes.push(group.len());
        }
        // 4096 events, then the rest of the revision in progress (4100), then the rest.
        assert_eq!(sizes, [4100, BATCHES * KEYS - 4100]);
    }
}
