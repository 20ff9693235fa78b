//! # palisade-store — the datastore between the writers and the agents
//!
//! ```text
//!  palisade apply ─┐                                   ┌─► Syncer ─► SyncEvent ─► agent (calc)
//!  controller ─────┼─► Datastore (etcd v3 | embedded) ─┤
//!                  │     keys::*  codec::Record        └─► get/list ─► palisade get, controller
//! ```
//!
//! * [`Datastore`]: get / list / atomic batches with preconditions (CAS) / watch from a
//!   revision / compact, with etcd v3's revision semantics, object safe (`Arc<dyn Datastore>`).
//! * Backends: [`EtcdStore`] (etcd v3, TLS, auth, reconnecting watches) and
//!   [`EmbeddedStore`] (in process, same semantics).
//! * [`keys`]: the key layout; [`codec`]: the JSON envelope and [`StoredObject`].
//! * [`Syncer`]: list, then watch, as felix does: the current state, an `InSync` marker, then
//!   updates; survives disconnects and compaction.
//! * [`connect`]: a datastore from a URL (`etcd://host:port,...` or `embedded:`).
//! * `testing` (feature `testing`): real etcd servers and clusters for tests, and the
//!   behavioural suite every backend must pass.
//!
//! The layout and the semantics are documented in `docs/datastore.md`.

mod backoff;
pub mod codec;
pub mod datastore;
pub mod embedded;
pub mod error;
pub mod etcd;
pub mod keys;
pub mod relay;
pub mod syncer;
mod url;

#[cfg(feature = "testing")]
pub mod testing;

pub use codec::{AgentStatus, Record, StoredObject, OWNER_AGENT, OWNER_APPLY, OWNER_CONTROLLER};
pub use datastore::{
    Datastore, KeyValue, Listing, Op, Precondition, Revision, WatchEvent, WatchStream,
};
pub use embedded::EmbeddedStore;
pub use error::{Result, StoreError};
pub use etcd::{EtcdConfig, EtcdStore};
pub use relay::{Relay, RelayConfig, RelayStore};
pub use syncer::{SyncEvent, SyncHandle, Syncer};
pub use url::{connect, DatastoreUrl};
