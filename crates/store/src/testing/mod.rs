//! Test helpers for every crate that needs a real datastore (feature `testing`):
//!
//! * [`EtcdServer`]: one `etcd` on 127.0.0.1 with free ports and a temporary data directory,
//!   started and polled until healthy (no blind sleeps), killed by pid on drop; it can be
//!   stopped and restarted on the same ports and data.
//! * [`EtcdCluster`]: a cluster of such members on loopback, whose members can be killed.
//! * [`TcpProxy`]: a loopback TCP proxy that can cut and restore connections, to simulate a
//!   client losing its etcd while others keep writing.
//! * [`suite`]: the behavioural tests every `Datastore` backend must pass, and
//!   [`datastore_suite!`](crate::datastore_suite) to instantiate them.
//!
//! Data directories go to `/dev/shm` when it exists (cheap fsync), else the system temp
//! directory; `PALISADE_ETCD_TMPDIR` overrides that (e.g. to measure on a real disk).
//! The `etcd` binary must be on `PATH` (Debian's `etcd-server`). Servers allow large
//! transactions (`--max-txn-ops 100000`, `--max-request-bytes 64 MiB`).

pub mod suite;

mod certs;
mod etcd_server;
mod proxy;

pub use certs::TestCerts;
pub use etcd_server::{EtcdCluster, EtcdServer};
pub use proxy::TcpProxy;

/// A free TCP port on 127.0.0.1 (bound, then released; good enough for tests).
///
/// Ports come from 20000..32000, below Linux's ephemeral range (32768..60999): a port taken
/// from the ephemeral range can be handed to some test's outgoing connection between our
/// release and etcd's bind, while this range is only ever given out here. Falls back to a
/// kernel-chosen port if no candidate is free.
pub fn free_port() -> std::io::Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    for _ in 0..64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let port = 20000 + (h.finish() % 12000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Whether the `etcd` binary can be run here; tests that need it can skip with a message
/// when it cannot.
pub fn etcd_available() -> bool {
    std::process::Command::new("etcd")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
