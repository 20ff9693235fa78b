//! The embedded backend: everything in one process, with etcd's revision and watch
//! semantics. A `BTreeMap` holds the keys, a bounded history of events serves watches from
//! past revisions (older history is compacted away, so watchers can see `Compacted` here
//! too), and each watcher has an unbounded channel fed under the same lock as the write, so
//! no event is lost, duplicated or reordered between the replay and the live part. Each
//! message of that channel is whole revisions (the replay, or one write's events for that
//! watcher), so a revision's events reach the [`WatchStream`] together.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::datastore::{
    check_precondition, check_unique_keys, watch_stream, Datastore, KeyValue, Listing, Op,
    Revision, WatchEvent, WatchStream,
};
use crate::error::{Result, StoreError};

/// Default number of events kept for watches from past revisions.
pub const DEFAULT_HISTORY: usize = 100_000;

/// An in-process datastore. Cloning shares the same data.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmbeddedStore")
    }
}

struct Inner {
    revision: Revision,
    /// The oldest revision still watchable (1 until something is compacted).
    compact_revision: Revision,
    data: BTreeMap<String, KeyValue>,
    history: VecDeque<WatchEvent>,
    history_limit: usize,
    watchers: Vec<Watcher>,
}

struct Watcher {
    prefix: String,
    /// Events before this revision are not for this watcher.
    from: Revision,
    tx: mpsc::UnboundedSender<Result<Vec<WatchEvent>>>,
}

impl Default for EmbeddedStore {
    fn default() -> Self {
        Self::new()
    }
}

impl EmbeddedStore {
    /// An empty store keeping [`DEFAULT_HISTORY`] events of history.
    pub fn new() -> Self {
        Self::with_history(DEFAULT_HISTORY)
    }

    /// An empty store keeping at most `limit` events (at least 1) for watches from the past.
    pub fn with_history(limit: usize) -> Self {
        EmbeddedStore {
            inner: Arc::new(Mutex::new(Inner {
                revision: 1,
                compact_revision: 1,
                data: BTreeMap::new(),
                history: VecDeque::new(),
                history_limit: limit.max(1),
                watchers: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-written (every write is
        // prepared before it is applied), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn mod_revision(&self, key: &str) -> Revision {
        self.data.get(key).map_or(0, |kv| kv.mod_revision)
    }

    fn apply(&mut self, ops: Vec<Op>) -> Result<Revision> {
        check_unique_keys(&ops)?;
        for op in &ops {
            check_precondition(op.key(), op.precondition(), self.mod_revision(op.key()))?;
        }
        let rev = self.revision + 1;
        let mut events = Vec::new();
        for op in ops {
            match op {
                Op::Put { key, value, .. } => {
                    let (create_revision, version) = match self.data.get(&key) {
                        Some(old) => (old.create_revision, old.version + 1),
                        None => (rev, 1),
                    };
                    let kv = KeyValue {
                        key: key.clone(),
                        value,
                        create_revision,
                        mod_revision: rev,
                        version,
                    };
                    self.data.insert(key, kv.clone());
                    events.push(WatchEvent::Put(kv));
                }
                Op::Delete { key, .. } => {
                    if self.data.remove(&key).is_some() {
                        events.push(WatchEvent::Delete {
                            key,
                            mod_revision: rev,
                        });
                    }
                }
            }
        }
        if events.is_empty() {
            return Ok(self.revision);
        }
        self.revision = rev;
        // One message per watcher with all of this revision's events it wants.
        self.watchers.retain(|w| {
            if rev < w.from {
                return !w.tx.is_closed();
            }
            let mine: Vec<WatchEvent> = events
                .iter()
                .filter(|ev| ev.key().starts_with(&w.prefix))
                .cloned()
                .collect();
            if mine.is_empty() {
                return !w.tx.is_closed();
            }
            w.tx.send(Ok(mine)).is_ok()
        });
        self.history.extend(events);
        self.trim_history();
        Ok(rev)
    }

    /// Keeps at most `history_limit` events, dropping whole revisions from the front.
    fn trim_history(&mut self) {
        if self.history.len() <= self.history_limit {
            return;
        }
        let keep_from = self.history[self.history.len() - self.history_limit].revision();
        self.compact_to(keep_from);
    }

    fn compact_to(&mut self, revision: Revision) {
        while self
            .history
            .front()
            .is_some_and(|e| e.revision() < revision)
        {
            self.history.pop_front();
        }
        self.compact_revision = self.compact_revision.max(revision);
    }
}

#[async_trait]
impl Datastore for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.lock().data.get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let inner = self.lock();
        let items = inner
            .data
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv.clone())
            .collect();
        Ok(Listing {
            items,
            revision: inner.revision,
        })
    }

    async fn apply_batch(&self, ops: Vec<Op>) -> Result<Revision> {
        self.lock().apply(ops)
    }

    async fn watch(&self, prefix: &str, from_revision: Revision) -> Result<WatchStream> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        if from_revision > 0 && from_revision < inner.compact_revision {
            let _ = tx.send(Err(StoreError::Compacted {
                revision: inner.compact_revision,
                requested: from_revision,
            }));
            return Ok(watch_stream(UnboundedReceiverStream::new(rx)));
        }
        if from_revision > 0 {
            // The replay is whole revisions: one message.
            let replay: Vec<WatchEvent> = inner
                .history
                .iter()
                .filter(|e| e.revision() >= from_revision && e.key().starts_with(prefix))
                .cloned()
                .collect();
            if !replay.is_empty() {
                let _ = tx.send(Ok(replay));
            }
        }
        inner.watchers.push(Watcher {
            prefix: prefix.to_string(),
            from: from_revision,
            tx,
        });
        Ok(watch_stream(UnboundedReceiverStream::new(rx)))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let mut inner = self.lock();
        if revision > inner.revision {
            return Err(StoreError::Backend {
                endpoints: self.describe(),
                reason: format!(
                    "cannot compact to future revision {revision} (current is {})",
                    inner.revision
                ),
            });
        }
        if revision < inner.compact_revision {
            return Err(StoreError::Compacted {
                revision: inner.compact_revision,
                requested: revision,
            });
        }
        inner.compact_to(revision);
        Ok(())
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.lock().revision)
    }

    fn describe(&self) -> String {
        "embedded".to_string()
    }
}
