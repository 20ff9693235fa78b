//! The one error type of the datastore: every variant names the key (or the endpoints) it is
//! about, so a caller can print it as it is.

use crate::Revision;

/// What went wrong talking to a datastore or reading one of its values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The key does not exist (for `update`/`delete`, or a batch op that requires it).
    #[error("key {key} not found")]
    NotFound { key: String },
    /// `create` (or a batch op requiring absence) found the key already there.
    #[error("key {key} already exists")]
    AlreadyExists { key: String },
    /// A compare-and-swap failed: the key's mod revision is not the expected one
    /// (`actual` is 0 when the key does not exist).
    #[error("conflict on key {key}: expected mod revision {expected}, found {actual}")]
    Conflict {
        key: String,
        expected: Revision,
        actual: Revision,
    },
    /// A watch or read asked for history the store has already compacted away.
    #[error("revision {requested} is compacted (oldest kept revision is {revision} or later); relist and watch again")]
    Compacted {
        /// The compaction revision reported by the store.
        revision: Revision,
        /// The revision the caller asked for.
        requested: Revision,
    },
    /// The store cannot be reached (or lost its quorum) within the timeout.
    #[error("datastore {endpoints} unavailable: {reason}")]
    Unavailable { endpoints: String, reason: String },
    /// A value could not be encoded or decoded.
    #[error("bad value at {key}: {reason}")]
    Codec { key: String, reason: String },
    /// A key that is not in Palisade's layout, or a name that cannot be a key segment.
    #[error("bad key {key}: {reason}")]
    InvalidKey { key: String, reason: String },
    /// A batch has more operations than the server accepts in one transaction.
    #[error("batch of {ops} operations is too large for one transaction: {reason}")]
    BatchTooLarge { ops: usize, reason: String },
    /// A batch names the same key twice.
    #[error("key {key} appears twice in one batch")]
    DuplicateKey { key: String },
    /// A datastore URL or option that cannot be used.
    #[error("bad datastore configuration: {0}")]
    Config(String),
    /// Any other error reported by the server.
    #[error("datastore {endpoints} error: {reason}")]
    Backend { endpoints: String, reason: String },
}

impl StoreError {
    /// Whether retrying later may succeed (the store was unreachable or busy).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
