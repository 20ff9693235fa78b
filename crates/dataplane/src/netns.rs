//! Network namespaces: entering a named one from the calling thread (for sockets that must
//! live in it), and throwaway ones for root tests, examples and benchmarks, created with a
//! unique name and removed on drop, also when a test fails.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::runner::{CommandOutput, CommandRunner, ProcessRunner, RunnerError};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace that exists while this value lives.
#[derive(Debug)]
pub struct NetnsGuard {
    name: String,
}

impl NetnsGuard {
    /// Creates `pal-<tag>-<pid>-<n>` (short enough for interface names derived from it).
    pub fn new(tag: &str) -> Result<Self, RunnerError> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("pal-{tag}-{}-{n}", std::process::id());
        let out = ProcessRunner::new().run("ip", &["netns", "add", &name], None)?;
        if !out.success() {
            return Err(RunnerError::Spawn {
                program: format!("ip netns add {name}"),
                source: std::io::Error::other(out.stderr),
            });
        }
        let guard = NetnsGuard { name };
        // Loopback up, so 127.0.0.1 works inside.
        let _ = guard.run("ip", &["link", "set", "lo", "up"], None);
        Ok(guard)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A runner whose commands run inside this namespace.
    pub fn runner(&self) -> ProcessRunner {
        ProcessRunner::in_netns(self.name.clone())
    }

    /// Runs one command inside the namespace.
    pub fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<CommandOutput, RunnerError> {
        self.runner().run(program, args, stdin)
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
    }
}

/// Whether this process runs as root (uid 0), which the kernel tests need.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Moves the calling thread (only it) into the network namespace `/run/netns/NAME`, as
/// `ip netns add` makes it. Sockets opened afterwards belong to that namespace for life.
pub fn enter(name: &str) -> Result<(), crate::DataplaneError> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/run/netns/{name}")).map_err(|e| {
        crate::DataplaneError::Netlink(format!("cannot open network namespace {name}: {e}"))
    })?;
    // SAFETY: a valid namespace descriptor; setns affects the calling thread only.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(crate::DataplaneError::Netlink(format!(
            "cannot enter network namespace {name}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}
