//! The state file `/run/palisade/lab/<name>/state.json`: the lab's settings, its plan, every
//! namespace created (written before anything else is created, updated as it goes) and the
//! daemon's and agents' pids. `lab down` reads it; a scan for the lab's prefix catches
//! whatever a crash kept out of it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{LabError, Result};
use crate::names::LabNames;
use crate::plan::Plan;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    pub name: String,
    pub id: String,
    /// `iptables` or `nftables`.
    pub dataplane: String,
    /// `embedded:` or an `etcd://` URL.
    pub datastore: String,
    /// Whether agents program the nodes (false: topology and servers only).
    pub agents: bool,
    /// Who wires the pods.
    #[serde(default)]
    pub cni: crate::wiring::Cni,
    /// The families IPAM hands out.
    #[serde(default)]
    pub ip_family: crate::wiring::IpFamily,
    /// How the agents recognize local pods.
    #[serde(default)]
    pub endpoint_match: crate::wiring::EndpointMatch,
    /// The agents revoke established connections that new rules deny.
    #[serde(default)]
    pub revoke: bool,
    /// `--nft-layout` of the agents (`None`: their default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nft_layout: Option<String>,
    pub plan: Plan,
    /// Every network namespace created so far.
    pub netns: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_pid: Option<u32>,
    /// Agent processes (etcd datastore only; embedded agents live in the daemon).
    #[serde(default)]
    pub agent_pids: Vec<u32>,
    /// The cluster as first loaded (endpoints with node and address), for the daemon.
    #[serde(default)]
    pub cluster: palisade_model::Cluster,
}

impl LabState {
    pub fn load(names: &LabNames) -> Result<Option<LabState>> {
        let path = names.state_file();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| LabError::State {
                    path,
                    reason: format!("unreadable state file ({e}); `palisade lab down` removes it"),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LabError::State {
                path,
                reason: e.to_string(),
            }),
        }
    }

    /// Writes the file atomically (a temporary file of this process, then rename), under the
    /// state lock.
    pub fn save(&self, names: &LabNames) -> Result<()> {
        let _lock = StateLock::take(names)?;
        self.write_unlocked(names)
    }

    /// Reads the file, lets `change` edit it and writes it back, all under the state lock:
    /// `lab up` and the daemon both write it while the lab starts, and neither may lose the
    /// other's fields. A missing file starts from `self`.
    pub fn update(&self, names: &LabNames, change: impl FnOnce(&mut LabState)) -> Result<LabState> {
        let _lock = StateLock::take(names)?;
        let mut current = LabState::load(names)?.unwrap_or_else(|| self.clone());
        change(&mut current);
        current.write_unlocked(names)?;
        Ok(current)
    }

    fn write_unlocked(&self, names: &LabNames) -> Result<()> {
        let dir = names.state_dir();
        let path = names.state_file();
        let tmp = dir.join(format!("state.json.{}.tmp", std::process::id()));
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| LabError::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write(&tmp, &bytes)?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| LabError::io(format!("cannot write {}", path.display()), e))
    }
}

/// An exclusive `flock` on the state directory's lock file, held until dropped.
struct StateLock {
    _file: std::fs::File,
}

impl StateLock {
    fn take(names: &LabNames) -> Result<StateLock> {
        use std::os::fd::AsRawFd;
        let dir = names.state_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| LabError::io(format!("cannot create {}", dir.display()), e))?;
        let path = dir.join("state.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| LabError::io(format!("cannot open {}", path.display()), e))?;
        // SAFETY: flock on a descriptor we own; released when the file is closed.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(LabError::io(
                format!("cannot lock {}", path.display()),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(StateLock { _file: f })
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes)
        .map_err(|e| LabError::io(format!("cannot write {}", path.display()), e))
}

/// Whether `pid` runs `palisade lab daemon --name <name>` (so a recycled pid is never killed).
pub fn is_daemon_of(pid: u32, name: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let has = |s: &str| args.contains(&s.as_bytes());
    has("lab") && has("daemon") && has(name)
}

/// Whether `pid` runs `palisade agent` (an agent process this lab started).
pub fn is_agent(pid: u32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    cmdline.split(|b| *b == 0).any(|a| a == b"agent")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two writers (as `lab up` and the daemon) updating different fields at once: neither
    /// update is lost, and no write fails on the other's temporary file.
    #[test]
    fn concurrent_updates_keep_both_writers_fields() {
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } != 0 {
            eprintln!(
                "skipped: needs root to write under {}",
                crate::names::STATE_ROOT
            );
            return;
        }
        let names = LabNames::new(&format!("t-state-{}", std::process::id())).unwrap();
        let base = LabState {
            name: names.name.clone(),
            ..Default::default()
        };
        base.save(&names).unwrap();
        let (a, b) = (names.clone(), names.clone());
        let (sa, sb) = (base.clone(), base.clone());
        let t1 = std::thread::spawn(move || {
            for i in 0..200u32 {
                sa.update(&a, |s| s.daemon_pid = Some(i)).unwrap();
            }
        });
        let t2 = std::thread::spawn(move || {
            for i in 0..200u32 {
                sb.update(&b, |s| s.agent_pids.push(i)).unwrap();
            }
        });
        t1.join().unwrap();
        t2.join().unwrap();
        let end = LabState::load(&names).unwrap().unwrap();
        let _ = std::fs::remove_dir_all(names.state_dir());
        assert_eq!(end.daemon_pid, Some(199));
        assert_eq!(end.agent_pids, (0..200).collect::<Vec<_>>());
    }
}
