//! # palisade-agent — the per-node loop
//!
//! ```text
//!  store::Syncer ─► translate ─► batch ─► calc::Calculator ─► dataplane::Dataplane ─► kernel
//!       (watch)     (SyncEvent    (when)     (DesiredState)      (render, diff, write)
//!                    → Update)
//!  metrics + server: /metrics /healthz /readyz /counters      status: /palisade/v1/status/<node>
//! ```
//!
//! [`agent`] wires the pipeline (its module docs have the full diagram); [`batch`] and
//! [`translate`] are pure and unit-tested; [`run`] runs an agent against the kernel with its
//! HTTP server; [`status`] and [`report`] are what the agent publishes and the CLI reads.

pub mod agent;
pub mod batch;
pub mod bindings;
pub mod bridge_guard;
pub mod client;
pub mod config;
pub mod direct;
pub mod metrics;
pub mod report;
pub mod run;
pub mod server;
pub mod shared;
pub mod status;
pub mod sysctl;
pub mod translate;

pub use agent::{Agent, AgentError};
pub use config::{AgentConfig, ConfigError, DataplaneKind};
pub use report::CountersReport;
pub use shared::Shared;
pub use status::NodeStatus;
