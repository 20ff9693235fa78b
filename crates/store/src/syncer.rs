//! The syncer: what an agent (or anyone who keeps a copy of the datastore) runs, in the way
//! of felix's syncer. It lists a prefix, delivers every object, says [`SyncEvent::InSync`],
//! then delivers each change from the watch. When the watch's history is compacted away it
//! relists and delivers only the differences (new, changed and vanished keys), and when the
//! datastore is unreachable it says [`SyncEvent::OutOfSync`], retries with backoff, and
//! catches up the same way. A consumer therefore sees every key's latest state exactly
//! once per change, never a repeat of an unchanged key.
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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::codec::Record;
use crate::datastore::{Datastore, KeyValue, Revision, WatchEvent};
use crate::error::StoreError;

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
    capacity: usize,
}

impl Syncer {
    /// A syncer of every key under `prefix` (e.g. [`crate::keys::ROOT`]).
    pub fn new(store: Arc<dyn Datastore>, prefix: impl Into<String>) -> Self {
        Syncer {
            store,
            prefix: prefix.into(),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            capacity: 4096,
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
        let task = tokio::spawn(self.run(tx));
        SyncHandle { rx, task }
    }

    /// Runs until `tx`'s receiver is dropped.
    pub async fn run(mut self, tx: mpsc::Sender<SyncEvent>) {
        let mut state = State {
            known: HashMap::new(),
            tx,
        };
        let _ = self.sync_forever(&mut state).await;
    }

    /// Returns only when the consumer is gone (`Err(Closed)`).
    async fn sync_forever(&mut self, state: &mut State) -> Result<(), Closed> {
        let mut reported = false;
        loop {
            // List (until it works), deliver the differences, say InSync.
            let listing = match self.store.list(&self.prefix).await {
                Ok(l) => l,
                Err(e) => {
                    self.fail(state, &mut reported, e).await?;
                    continue;
                }
            };
            state.diff(listing.items, listing.revision).await?;
            // Watch from just after the list; only then is the copy known to stay current.
            let mut stream = match self.store.watch(&self.prefix, listing.revision + 1).await {
                Ok(s) => s,
                Err(e) => {
                    self.fail(state, &mut reported, e).await?;
                    continue;
                }
            };
            state
                .send(SyncEvent::InSync {
                    revision: listing.revision,
                })
                .await?;
            reported = false;
            self.backoff.reset();
            let error = loop {
                let next = tokio::select! {
                    n = stream.next() => n,
                    _ = state.tx.closed() => return Err(Closed),
                };
                match next {
                    Some(Ok(ev)) => state.event(ev).await?,
                    Some(Err(e)) => break e,
                    None => {
                        break StoreError::Unavailable {
                            endpoints: self.store.describe(),
                            reason: "watch ended".into(),
                        }
                    }
                }
            };
            if let StoreError::Compacted { .. } = error {
                tracing::info!(prefix = %self.prefix, %error, "history compacted; relisting");
                continue;
            }
            self.fail(state, &mut reported, error).await?;
        }
    }

    /// Reports the error once per outage (`reported`) and waits before the next attempt.
    async fn fail(
        &mut self,
        state: &State,
        reported: &mut bool,
        e: StoreError,
    ) -> Result<(), Closed> {
        tracing::warn!(prefix = %self.prefix, error = %e, "datastore sync failed; retrying");
        if !*reported {
            state
                .send(SyncEvent::OutOfSync {
                    reason: e.to_string(),
                })
                .await?;
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
    tx: mpsc::Sender<SyncEvent>,
}

impl State {
    async fn send(&self, ev: SyncEvent) -> Result<(), Closed> {
        self.tx.send(ev).await.map_err(|_| Closed)
    }

    async fn put(&mut self, kv: KeyValue) -> Result<(), Closed> {
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
        self.send(ev).await
    }

    async fn event(&mut self, ev: WatchEvent) -> Result<(), Closed> {
        match ev {
            WatchEvent::Put(kv) => self.put(kv).await,
            WatchEvent::Delete { key, mod_revision } => {
                if self.known.remove(&key).is_none() {
                    return Ok(()); // never delivered, nothing to retract
                }
                self.send(SyncEvent::Update {
                    key,
                    value: None,
                    revision: mod_revision,
                })
                .await
            }
        }
    }

    /// Delivers what differs between the last delivered state and a fresh listing.
    async fn diff(&mut self, items: Vec<KeyValue>, revision: Revision) -> Result<(), Closed> {
        let mut present = std::collections::HashSet::with_capacity(items.len());
        for kv in items {
            present.insert(kv.key.clone());
            if self.known.get(&kv.key) != Some(&kv.mod_revision) {
                self.put(kv).await?;
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
            self.send(SyncEvent::Update {
                key,
                value: None,
                revision,
            })
            .await?;
        }
        Ok(())
    }
}

/// The running syncer: receive its events; dropping the handle stops it.
pub struct SyncHandle {
    rx: mpsc::Receiver<SyncEvent>,
    task: JoinHandle<()>,
}

impl SyncHandle {
    /// The next event (`None` only if the syncer stopped).
    pub async fn recv(&mut self) -> Option<SyncEvent> {
        self.rx.recv().await
    }

    /// Waits for one event, then takes whatever else is already queued, up to `max` in all:
    /// a consumer can apply a whole burst (such as the initial list) in one go.
    pub async fn recv_batch(&mut self, max: usize) -> Option<Vec<SyncEvent>> {
        let first = self.rx.recv().await?;
        let mut out = vec![first];
        while out.len() < max.max(1) {
            match self.rx.try_recv() {
                Ok(ev) => out.push(ev),
                Err(_) => break,
            }
        }
        Some(out)
    }
}

/// The handle is also a stream of events, for `StreamExt` combinators and `select!`.
impl futures::Stream for SyncHandle {
    type Item = SyncEvent;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<SyncEvent>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for SyncHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
