//! The iptables + ipset backend.

pub mod backend;
pub mod program;
pub mod save;

pub use backend::{IptView, IptablesBackend};
pub use program::{Family, IpsetSpec, IptChains, IptRule, IptablesProgram};
