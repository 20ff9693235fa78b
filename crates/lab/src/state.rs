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

    /// Writes the file atomically (temporary file, then rename).
    pub fn save(&self, names: &LabNames) -> Result<()> {
        let dir = names.state_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| LabError::io(format!("cannot create {}", dir.display()), e))?;
        let path = names.state_file();
        let tmp = dir.join("state.json.tmp");
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| LabError::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write(&tmp, &bytes)?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| LabError::io(format!("cannot write {}", path.display()), e))
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
