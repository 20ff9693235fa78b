//! Drops as they happen: the kernel logs every policy drop (rate-limited) to an NFLOG group
//! with a prefix carrying a compact key of its drop site; the agent reads that group itself.
//!
//! ```text
//!  kernel: log rule before each drop ──NFLOG group──► reader thread (in the node's netns)
//!          prefix "pal-drop <key> …"                    nflog::decode → packet::parse
//!                                                       attribution: key → DropIndex (built
//!                                                       from the DesiredState at each apply),
//!                                                       addresses → AddressBook (every pod)
//!                                                       ─► DropLog ring ─► GET /drops[?follow]
//!                                                       ─► policy_drops_total{namespace,pod,direction}
//! ```

pub mod attribution;
pub mod log;
pub mod nflog;
pub mod packet;
pub mod reader;
pub mod record;

pub use attribution::{AddressBook, DropIndex, DropOrigin};
pub use log::DropLog;
pub use reader::DropReader;
pub use record::{DropRecord, PolicyNames};

/// Now, as the stream writes times (RFC 3339, UTC, milliseconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
