//! # palisade-engine — the semantics, executable
//!
//! ```text
//!  model::Cluster ──► verdict(cluster, &Flow) ──► Verdict { allowed, trace per side }  (explain)
//!                 └─► matrix(cluster, probes) ──► Matrix (bitset set algebra)          (matrix)
//!                     naive_matrix(...)        ──► the same, pair by pair (tests, bench)
//!  what_if(now, then, probes) ──► WhatIf { changes: pairs whose verdict flips, with why }
//!  synth::generate(SynthConfig) ──► a realistic synthetic Cluster (benchmarks of every stage)
//! ```
//!
//! The engine is the contract of `shared/SEMANTICS.md` and of the tier model documented in
//! `palisade_model::policy`, as code: calc, render and the kernel must agree with it on every
//! flow. A flow is allowed iff egress allows it at the source pod and ingress allows it at the
//! destination pod; an address end (not a pod) is judged by no policy. A pod talking to itself
//! is always allowed: that traffic never leaves its network namespace, so no dataplane sees it.
//! The engine judges new connections; replies of an allowed connection are allowed
//! (conntrack, SEMANTICS.md 6).
//!
//! Pure: no I/O, no clock.

mod bitset;
mod describe;
mod eval;
mod flow;
mod index;
mod matrix;
pub mod synth;
mod trace;
mod whatif;

pub use bitset::BitSet;
pub use describe::{describe_rule, explain_text};
pub use flow::{EngineError, Flow, FlowEnd};
pub use matrix::{
    matrix, matrix_order, naive_matrix, naive_rows, Matrix, Probe, ProbeMatrix, ProbeParseError,
};
pub use trace::{
    verdict, DecisionTrace, FellThrough, RuleRef, SideTrace, TieTrace, TierTrace, Verdict,
};
pub use whatif::{what_if, Change, WhatIf};
