//! # palisade-render — the fourth stage of the pipeline
//!
//! ```text
//!  calc::DesiredState ─► build::build ─► ir::Ruleset ─┬─► iptables::render  (ipset restore + iptables-restore text, per family)
//!  (+ Vec<Delta>)         (layout)        (typed IR)   ├─► nft::render       (one `nft -f` script, table inet palisade)
//!                                                      ├─► delta::*          (incremental commands for a batch of deltas)
//!                                                      └─► interp::evaluate  (one packet through the IR: verdict + rule path)
//! ```
//!
//! Pure: no I/O, no clock, no processes. The dataplane crate feeds the text to the kernel.
//! Both backends render the same IR, so the IR interpreter checks both; there is no separate
//! interpreter for nftables text. Everything derived from user input that reaches rule text is
//! hashed (chain and set names, comments), checked (interface names) or sanitized (log
//! prefixes, set comments); see [`names`].
//!
//! Tests (`cargo test -p palisade-render`): unit tests beside the code; `tests/interp.rs`
//! (the layout, packet by packet); `tests/differential.rs` (proptest: the interpreter agrees
//! with `palisade_engine::verdict` on every flow with a local end of random clusters);
//! `tests/delta.rs` (proptest: plans from the real `Calculator`'s deltas turn one ruleset into
//! the next); `tests/hostile.rs` (hostile names stay inside sanitized quotes);
//! `tests/snapshots.rs` (insta, the `examples/`); `tests/iface_prefixes.rs` (several interface
//! prefixes: every name dispatched, on both backends and in the interpreter);
//! `tests/scale.rs`; `tests/kernel_parse.rs` (root: the real tools load full rulesets and
//! deltas in throwaway network namespaces; skipped otherwise). Timings:
//! `cargo bench -p palisade-render`.

pub mod build;
pub mod config;
pub mod delta;
pub mod error;
pub mod interp;
pub mod iptables;
pub mod ir;
pub mod names;
pub mod nft;

pub use build::build;
pub use config::{NftLayout, RenderConfig};
pub use error::RenderError;
pub use ir::Ruleset;
