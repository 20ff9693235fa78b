//! # palisade-dataplane — make the kernel match the rendered rules
//!
//! ```text
//!  calc ─► DesiredState ─► render ─► rule IR ─► [dataplane] program ─► Table ─► CommandRunner ─► kernel
//!                                                                      ▲   │ read back (ours only)
//!                                                                      └───┘ diff, one write per batch
//! ```
//!
//! Two backends behind one [`Table`] reconciler (modelled on felix's `iptables/table.go`):
//! [`ipt`] (iptables-restore + ipset restore, both families) and [`nft`] (one `nft -f`
//! transaction on `table inet palisade`). Each owns its objects completely (chains `pal-*`,
//! sets `pal4-*`/`pal6-*`, the nft table) and never touches anything else, except for one
//! marked jump at the top of each hooked kernel chain.
//!
//! Every command goes through a [`CommandRunner`]: [`ProcessRunner`] (optionally inside a
//! network namespace), [`fake::FakeKernel`] (an in-memory kernel for tests without root) or
//! [`NoopRunner`]. Failed writes are retried on a [`RetryPolicy`] with an injected
//! [`Sleeper`]; repeated failures turn into a full rewrite; [`Table::resync`] repairs drift.
//!
//! How a write is shaped:
//! - iptables: one `ipset restore -exist` (create and fill sets, adds before deletes), one
//!   `iptables-restore --noflush` per family (only changed chains: `:pal-x - [0:0]` flushes
//!   just that chain; removed chains flushed then `-X`; the jump into `pal-FORWARD` kept as
//!   exactly one rule at position 1), then one `ipset restore` destroying unused sets. Full
//!   rewrites fill sets under a scratch name and `swap` them in.
//! - nftables: one `nft -f` transaction; with [`nft_dataplane_netlink`], changes that only
//!   touch set elements go as one nfnetlink batch instead (the `nft` tool reads every element
//!   of the ruleset before any element change: ~100 ms at 50,000 elements).
//!
//! The agent uses the [`Dataplane`] trait: `apply_state(&DesiredState)` (render + reconcile),
//! `resync()` on a timer, `counters()`, `remove_all()`:
//!
//! ```no_run
//! use std::sync::Arc;
//! use palisade_dataplane::{nft_dataplane, Dataplane, ProcessRunner, RetryPolicy, ThreadSleeper};
//! let mut dp = nft_dataplane(
//!     palisade_render::RenderConfig::default(),
//!     Arc::new(ProcessRunner::in_netns("node-1")),
//!     Arc::new(ThreadSleeper),
//!     RetryPolicy::default(),
//! );
//! let report = dp.apply_state(&palisade_calc::DesiredState::default())?;
//! println!("{} chains rewritten in {:?}", report.chains_rewritten.len(), report.duration);
//! # Ok::<(), palisade_dataplane::DataplaneError>(())
//! ```

pub mod conntrack;
pub mod error;
pub mod exec;
pub mod fake;
pub mod from_ir;
pub mod incremental;
pub mod ipt;
pub mod netns;
pub mod nft;
pub mod origins;
pub mod report;
pub mod retry;
pub mod runner;
pub mod state;
pub mod table;

pub use error::DataplaneError;
pub use report::{ApplyReport, CounterKind, RuleCounter, RuleOrigin};
pub use retry::{RecordingSleeper, RetryPolicy, Sleeper, ThreadSleeper};
pub use runner::{
    CommandOutput, CommandRecord, CommandRunner, NoopRunner, ProcessRunner, RunnerError,
};
pub use state::{
    iptables_dataplane, nft_dataplane, nft_dataplane_netlink, Dataplane, IncrementalMode,
    StateDataplane,
};
pub use table::{Backend, Table};

/// The iptables + ipset reconciler.
pub type IptablesTable = Table<ipt::IptablesBackend>;
/// The nftables reconciler.
pub type NftTable = Table<nft::NftBackend>;
