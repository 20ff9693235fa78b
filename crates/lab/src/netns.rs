//! Entering a lab network namespace from the current thread (`setns(CLONE_NEWNET)`), so that
//! sockets made afterwards by this thread live in that namespace. Sockets keep their namespace
//! for life, whichever thread uses them later.

use std::fs::File;
use std::os::fd::AsRawFd;

use crate::error::{LabError, Result};

/// Moves the calling thread into network namespace `name` (`/run/netns/<name>`). Use it in a
/// thread made for the purpose: the thread stays there.
pub fn enter(name: &str) -> Result<()> {
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).map_err(|source| LabError::Netns {
        name: name.to_string(),
        source,
    })?;
    // SAFETY: setns(2) on a valid open fd; it changes only this thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(LabError::Netns {
            name: name.to_string(),
            source: std::io::Error::last_os_error(),
        })
    }
}

/// Runs `f` on a new thread inside namespace `name` and returns its result.
pub fn run_in<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let name = name.to_string();
    std::thread::spawn(move || {
        enter(&name)?;
        f()
    })
    .join()
    .map_err(|_| LabError::Daemon("a thread inside a network namespace panicked".into()))?
}
