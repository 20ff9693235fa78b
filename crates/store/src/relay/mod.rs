//! A fan-out relay between etcd and many agents, in the manner of Calico's Typha.
//!
//! ```text
//!  etcd ─(one list, one watch)─► Relay ─(TCP, wire)─► RelayStore ─► Syncer ─► agent
//!                                  └──────────────► RelayStore ─► Syncer ─► agent …
//! ```
//!
//! The [`Relay`] lists a prefix once and watches it, keeping the current values (key →
//! [`crate::KeyValue`]), its revision and the last events (`history_events`). Clients speak
//! the [`crate::Datastore`] read contract through [`RelayStore`]: `list` answers from the
//! copy at the relay's revision, `watch(from)` replays the kept history from `from` and
//! then streams every new group of events; a `from` older than the history is
//! [`crate::StoreError::Compacted`], so the client's [`crate::Syncer`] relists, exactly as
//! against etcd. An agent therefore runs the same syncer, translator and calculator.
//!
//! Costs: etcd sees one watcher per relay. Each group of events is encoded once and the
//! same bytes are written to every client of the whole prefix; the listing of the whole
//! prefix is encoded once per revision. A client that falls more than a few thousand groups
//! behind is told to relist (`Compacted`) instead of holding memory for everyone; when the
//! relay itself has to relist upstream (compaction, an outage), every client is told to
//! relist, and the syncer delivers only the differences.

mod client;
mod server;
pub mod wire;

pub use client::RelayStore;
pub use server::{Relay, RelayConfig, RelayStats};

#[cfg(test)]
mod tests;
