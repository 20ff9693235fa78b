//! # palisade-lab — a cluster of network namespaces on one machine
//!
//! ```text
//!  manifests ─► plan (nodes: Node manifests or n1..nN; node and address per pod)
//!              ─► topology (netns, routes between nodes, Node addresses on the nodes)
//!                  └► pods wired by the CNI plugins (bridge, ptp: [`cni`]) or by the lab;
//!                     host-networked pods live in their node's namespace, on its addresses
//!                                                      │
//!  lab daemon: pod servers (TCP/HTTP, UDP echo, SCTP INIT→INIT-ACK)
//!              datastore ─► one agent per node, programming that node's namespace
//!              control socket (JSON lines) ◄─ lab apply / delete / probe / status / down
//!  prober: threads enter each source pod's namespace and connect, ping, send, INIT
//! ```
//!
//! Every name derives from the lab's name ([`names`]); the state file ([`state`]) lists what
//! was made so that [`lifecycle::down`] removes all of it, also after a crash.

pub mod addressing;
pub mod agents;
pub mod bench;
pub mod cmd;
pub mod cni;
pub mod control;
pub mod daemon;
pub mod error;
pub mod held;
pub mod lifecycle;
pub mod names;
pub mod netns;
pub mod plan;
pub mod probe;
pub mod sctp;
pub mod server;
pub mod state;
pub mod topology;
pub mod wiring;

pub use error::{LabError, Result};
pub use lifecycle::{down, up, DownReport, UpOptions};
pub use names::LabNames;
pub use plan::{Plan, PodPlan};
pub use state::LabState;
pub use wiring::{Cni, EndpointMatch, IpFamily};
