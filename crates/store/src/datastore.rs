//! The `Datastore` trait: a revisioned key-value store with compare-and-swap, atomic batches
//! and watches from a revision, with etcd v3's semantics. Both backends
//! ([`crate::etcd::EtcdStore`], [`crate::embedded::EmbeddedStore`]) implement it and pass
//! the same behavioural suite (`testing::suite`).
//!
//! Revisions: one global counter, bumped once per successful write (a batch is one write; a
//! write that changes nothing bumps nothing). Every key has a `create_revision` and a
//! `mod_revision`; every watch event carries the revision of the write that made it.

use std::fmt;
use std::pin::Pin;

use async_trait::async_trait;
use futures::{Stream, StreamExt};

use crate::error::{Result, StoreError};

/// A datastore revision (etcd's `int64`). 0 means "none" (a missing key's mod revision, or
/// "from now" when starting a watch).
pub type Revision = i64;

/// One stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the write that created the key (since its last deletion).
    pub create_revision: Revision,
    /// Revision of the write that last changed the key.
    pub mod_revision: Revision,
    /// Number of writes since creation (1 after create).
    pub version: i64,
}

/// The result of `list`: the items under a prefix, sorted by key, as of `revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub items: Vec<KeyValue>,
    /// The store's revision when the list was read: watch from `revision + 1` to see every
    /// later change exactly once.
    pub revision: Revision,
}

/// A condition an operation requires of its key, checked atomically with the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precondition {
    /// No condition.
    #[default]
    Any,
    /// The key must not exist (else [`StoreError::AlreadyExists`]).
    Absent,
    /// The key must exist (else [`StoreError::NotFound`]).
    Exists,
    /// The key's mod revision must be this one (else [`StoreError::Conflict`]); the
    /// read-modify-write guard.
    ModRevision(Revision),
}

/// One operation of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        precondition: Precondition,
    },
    /// Deleting a key that does not exist is a no-op unless the precondition says otherwise.
    Delete {
        key: String,
        precondition: Precondition,
    },
}

impl Op {
    pub fn put(key: impl Into<String>, value: Vec<u8>) -> Op {
        Op::Put {
            key: key.into(),
            value,
            precondition: Precondition::Any,
        }
    }

    pub fn delete(key: impl Into<String>) -> Op {
        Op::Delete {
            key: key.into(),
            precondition: Precondition::Any,
        }
    }

    /// The same operation with a precondition.
    pub fn when(self, precondition: Precondition) -> Op {
        match self {
            Op::Put { key, value, .. } => Op::Put {
                key,
                value,
                precondition,
            },
            Op::Delete { key, .. } => Op::Delete { key, precondition },
        }
    }

    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } => key,
        }
    }

    pub fn precondition(&self) -> Precondition {
        match self {
            Op::Put { precondition, .. } | Op::Delete { precondition, .. } => *precondition,
        }
    }
}

/// Checks one precondition against a key's current mod revision (0 = absent).
pub fn check_precondition(key: &str, precondition: Precondition, actual: Revision) -> Result<()> {
    match precondition {
        Precondition::Any => Ok(()),
        Precondition::Absent if actual == 0 => Ok(()),
        Precondition::Absent => Err(StoreError::AlreadyExists { key: key.into() }),
        Precondition::Exists if actual != 0 => Ok(()),
        Precondition::Exists => Err(StoreError::NotFound { key: key.into() }),
        Precondition::ModRevision(expected) if expected == actual => Ok(()),
        Precondition::ModRevision(expected) => Err(StoreError::Conflict {
            key: key.into(),
            expected,
            actual,
        }),
    }
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or changed; `kv.mod_revision` is the revision of the change.
    Put(KeyValue),
    /// The key was deleted at `mod_revision`.
    Delete { key: String, mod_revision: Revision },
}

impl WatchEvent {
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }

    /// The revision of the write that produced this event.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

/// The events of a watch, in revision order. An `Err` item is the last one: the stream ends
/// after it. [`StoreError::Compacted`] means the history the watch needed is gone (relist
/// and watch again); [`StoreError::Unavailable`] means the backend gave up reconnecting.
///
/// A revision's events travel together: once the stream has yielded the first event of a
/// revision, every other event of that revision is ready, so polling without waiting
/// (`futures::FutureExt::now_or_never`) returns them. A consumer that takes "everything
/// ready" therefore never holds part of a multi-key write. Backends build the stream with
/// [`watch_stream`] from a channel of whole revisions.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent>> + Send>>;

/// A [`WatchStream`] from a stream of groups of events, each group holding only whole
/// revisions (one revision, or one etcd watch response): the group's events come out one by
/// one, all of them ready once the first is. Empty groups are skipped.
pub fn watch_stream<S>(groups: S) -> WatchStream
where
    S: Stream<Item = Result<Vec<WatchEvent>>> + Send + 'static,
{
    use futures::future::{ready, Either};
    use futures::stream::{iter, once};
    Box::pin(groups.flat_map(|group| match group {
        Ok(events) => Either::Left(iter(events.into_iter().map(Ok))),
        Err(e) => Either::Right(once(ready(Err(e)))),
    }))
}

/// A revisioned key-value store; see the module docs. Object safe: hold it as
/// `Arc<dyn Datastore>`.
#[async_trait]
pub trait Datastore: Send + Sync + fmt::Debug {
    /// The key's current value, or `None`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Every key starting with `prefix`, sorted, and the revision they were read at.
    async fn list(&self, prefix: &str) -> Result<Listing>;

    /// Applies every op or none: if any precondition fails nothing is written and the error
    /// of the first failing op (in op order) is returned. Returns the revision of the write
    /// (the current revision if the batch changed nothing). An empty batch writes nothing.
    async fn apply_batch(&self, ops: Vec<Op>) -> Result<Revision>;

    /// Events for keys under `prefix` with revision `>= from_revision` (0: only changes
    /// after the call). Past events still in the store's history are replayed first. A
    /// watch from a compacted revision yields one `Err(Compacted)` item.
    async fn watch(&self, prefix: &str, from_revision: Revision) -> Result<WatchStream>;

    /// Discards history before `revision` (etcd semantics): a later watch from a revision
    /// below it yields `Compacted`; `revision` and later stay watchable.
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// The store's current revision.
    async fn current_revision(&self) -> Result<Revision>;

    /// A short description for messages, e.g. `etcd 127.0.0.1:2379`.
    fn describe(&self) -> String;

    /// Creates the key; [`StoreError::AlreadyExists`] if it is there.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        self.apply_batch(vec![Op::put(key, value).when(Precondition::Absent)])
            .await
    }

    /// Replaces an existing key; with `expected`, only if its mod revision is that one.
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<Revision> {
        let pre = expected.map_or(Precondition::Exists, Precondition::ModRevision);
        self.apply_batch(vec![Op::put(key, value).when(pre)]).await
    }

    /// Creates or replaces the key, unconditionally.
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        self.apply_batch(vec![Op::put(key, value)]).await
    }

    /// Deletes an existing key; with `expected`, only if its mod revision is that one.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision> {
        let pre = expected.map_or(Precondition::Exists, Precondition::ModRevision);
        self.apply_batch(vec![Op::delete(key).when(pre)]).await
    }
}

/// A batch may name each key once (etcd refuses duplicates in one transaction).
pub fn check_unique_keys(ops: &[Op]) -> Result<()> {
    let mut seen = std::collections::HashSet::with_capacity(ops.len());
    for op in ops {
        if !seen.insert(op.key()) {
            return Err(StoreError::DuplicateKey {
                key: op.key().to_string(),
            });
        }
    }
    Ok(())
}
