//! Running `palisade` in root tests of labs: the command, its checked output, and a guard that
//! takes a lab down when the test ends, also when it fails.

use std::process::{Command, Output};

use serde_json::Value;

/// The binary under test, without a datastore from the environment.
pub fn palisade() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_palisade"));
    c.env_remove("PALISADE_DATASTORE");
    c
}

/// True (after saying why) when the test cannot run: not root.
pub fn skip_unless_root(test: &str) -> bool {
    // SAFETY: geteuid has no side effects.
    if unsafe { libc::geteuid() } == 0 {
        return false;
    }
    eprintln!("skipping {test}: needs root (it creates network namespaces)");
    true
}

pub fn run(args: &[&str]) -> Output {
    palisade().args(args).output().expect("run palisade")
}

/// Standard output of a command that must succeed.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "palisade {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// JSON lines of a command's output.
pub fn json_lines(args: &[&str]) -> Vec<Value> {
    ok(args)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Takes a lab down when the test ends, also when it fails.
pub struct LabGuard(pub String);

impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = palisade().args(["lab", "--name", &self.0, "down"]).output();
    }
}

/// Held while a root test has a lab up: labs of different tests (nextest runs each in its own
/// process) take turns, so that probes, which time out, do not starve one another on a small
/// machine. Released when dropped.
pub struct LabLock(#[allow(dead_code)] std::fs::File);

/// Waits for the lab lock (an exclusive `flock` on a file in the system's temp dir).
pub fn lab_lock() -> LabLock {
    let path = std::env::temp_dir().join("palisade-lab-tests.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    // SAFETY: flock(2) on a file descriptor we own; it only takes an advisory lock.
    let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock {}", path.display());
    LabLock(file)
}
