//! `up` and `down`: the order in which a lab comes to life and goes away, and the cleanup of
//! a stale lab (state file left by a crash, namespaces with the lab's prefix, a dead daemon).

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use palisade_model::Cluster;
use serde::Serialize;

use crate::control::{self, Request};
use crate::daemon::SYNC_TIMEOUT;
use crate::error::{LabError, Result};
use crate::names::LabNames;
use crate::plan;
use crate::state::{is_agent, is_daemon_of, LabState};
use crate::topology;

/// How long `up` waits for the daemon to listen (its servers up, the cluster loaded).
const DAEMON_START: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct UpOptions {
    /// `--nodes`: with Node manifests absent or their count; without, `n1..nN` (default 2).
    pub nodes: Option<usize>,
    /// `iptables` or `nftables`.
    pub dataplane: String,
    /// `embedded:` or `etcd://...`.
    pub datastore: String,
    /// Start agents (false: topology and servers only, nothing enforced).
    pub agents: bool,
    /// Who wires the pods.
    pub cni: crate::wiring::Cni,
    /// The families IPAM hands out.
    pub ip_family: crate::wiring::IpFamily,
    /// How the agents recognize local pods (`None`: the CNI's default, see
    /// [`crate::wiring`]).
    pub endpoint_match: Option<crate::wiring::EndpointMatch>,
    /// `--established revoke`: the agents cut established connections new rules deny.
    pub revoke: bool,
    /// `--nft-layout` for the agents (`None`: their default).
    pub nft_layout: Option<String>,
}

/// What `down` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DownReport {
    pub was_up: bool,
    pub daemon_stopped: bool,
    pub agents_stopped: usize,
    /// Pods whose CNI DEL failed (the message of each); their namespaces are removed anyway.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cni_errors: Vec<String>,
    pub namespaces_removed: Vec<String>,
}

/// Whether the lab's daemon runs.
pub fn daemon_alive(names: &LabNames, state: &LabState) -> bool {
    state
        .daemon_pid
        .is_some_and(|pid| topology::alive(pid) && is_daemon_of(pid, &names.name))
}

/// The state of a lab that is up (its daemon alive), or an error saying what to do.
pub fn running(names: &LabNames) -> Result<LabState> {
    let state = LabState::load(names)?.ok_or_else(|| LabError::State {
        path: names.state_file(),
        reason: format!("lab {:?} is not up (palisade lab up -f ...)", names.name),
    })?;
    if !daemon_alive(names, &state) {
        return Err(LabError::Daemon(format!(
            "the daemon of lab {:?} is not running (see {}); run `palisade lab down` to clean up",
            names.name,
            names.log_file().display()
        )));
    }
    Ok(state)
}

/// Creates the lab: cleans a stale one of the same name, plans, builds the topology, starts
/// the daemon and waits until every agent is in sync. On failure everything made is removed.
pub fn up(names: &LabNames, options: &UpOptions, mut cluster: Cluster) -> Result<LabState> {
    if let Some(old) = LabState::load(names).ok().flatten() {
        if daemon_alive(names, &old) {
            return Err(LabError::AlreadyUp {
                name: names.name.clone(),
            });
        }
    }
    let stale = down(names)?;
    if stale.was_up {
        eprintln!(
            "note: cleaned up a stale lab {:?} ({} namespaces)",
            names.name,
            stale.namespaces_removed.len()
        );
    }
    let wiring = plan::Wiring {
        cni: options.cni,
        family: options.ip_family,
    };
    let plan = plan::plan(names, &mut cluster, options.nodes, wiring)?;
    let mut state = LabState {
        name: names.name.clone(),
        id: names.id.clone(),
        dataplane: options.dataplane.clone(),
        datastore: options.datastore.clone(),
        agents: options.agents,
        cni: options.cni,
        ip_family: options.ip_family,
        endpoint_match: crate::wiring::EndpointMatch::for_cni(options.endpoint_match, options.cni),
        revoke: options.revoke,
        nft_layout: options.nft_layout.clone(),
        plan,
        netns: Vec::new(),
        daemon_pid: None,
        agent_pids: Vec::new(),
        cluster,
    };
    state.save(names)?;
    match start(names, &mut state) {
        Ok(()) => Ok(state),
        Err(e) => {
            let _ = state.save(names);
            let _ = down(names);
            Err(e)
        }
    }
}

fn start(names: &LabNames, state: &mut LabState) -> Result<()> {
    let mut created = Vec::new();
    let wiring = plan::Wiring {
        cni: state.cni,
        family: state.ip_family,
    };
    let built = topology::build(names, wiring, &mut state.plan, &mut created);
    state.netns = created;
    // The addresses IPAM gave are what the datastore gets.
    for pod in &state.plan.pods {
        if let Some(ep) = state.cluster.endpoints.iter_mut().find(|e| e.id == pod.id) {
            ep.ips = pod.ips.clone();
        }
    }
    state.save(names)?;
    built?;

    let exe = std::env::current_exe().map_err(|e| LabError::io("cannot find own binary", e))?;
    let log_path = names.log_file();
    let log = std::fs::File::create(&log_path)
        .map_err(|e| LabError::io(format!("cannot create {}", log_path.display()), e))?;
    let err = log
        .try_clone()
        .map_err(|e| LabError::io("cannot duplicate the log file", e))?;
    let child = Command::new(&exe)
        .args(["lab", "daemon", "--name", &names.name])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| LabError::Spawn {
            command: format!("{} lab daemon", exe.display()),
            source: e,
        })?;
    let pid = child.id();
    state.daemon_pid = Some(pid);
    // The daemon may already be writing its agents' pids: merge, do not overwrite.
    *state = state.update(names, |s| s.daemon_pid = Some(pid))?;
    // The daemon outlives this process; its exit is reaped by init.
    drop(child);

    let socket = names.socket();
    let deadline = Instant::now() + DAEMON_START;
    loop {
        if socket.exists() && control::call(&socket, &Request::Ping, Duration::from_secs(5)).is_ok()
        {
            break;
        }
        if !topology::alive(pid) {
            return Err(LabError::Daemon(format!(
                "the daemon exited while starting:\n{}",
                log_tail(names)
            )));
        }
        if Instant::now() > deadline {
            return Err(LabError::Daemon(format!(
                "the daemon did not start within {}s:\n{}",
                DAEMON_START.as_secs(),
                log_tail(names)
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    control::call(
        &socket,
        &Request::Ready,
        SYNC_TIMEOUT + Duration::from_secs(5),
    )?;
    // The daemon wrote the agents' pids; keep them.
    if let Some(saved) = LabState::load(names)? {
        state.agent_pids = saved.agent_pids;
    }
    Ok(())
}

/// The last lines of the daemon's log, for error messages.
pub fn log_tail(names: &LabNames) -> String {
    let text = std::fs::read_to_string(names.log_file()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Removes everything of lab `names`: stops the daemon and agents, deletes every namespace of
/// the state file and every one with the lab's prefix, removes the state directory. Safe to
/// run on a lab that is not up (reports `was_up: false`).
pub fn down(names: &LabNames) -> Result<DownReport> {
    let mut report = DownReport::default();
    let state = match LabState::load(names) {
        Ok(s) => s,
        Err(_) => Some(LabState::default()), // unreadable: still clean by prefix
    };
    // DEL of every pod first, while its namespace still exists.
    report.cni_errors = crate::cni::del_all(names);
    if let Some(state) = &state {
        report.was_up = true;
        if let Some(pid) = state.daemon_pid {
            if topology::alive(pid) && is_daemon_of(pid, &names.name) {
                let _ = control::call(&names.socket(), &Request::Shutdown, Duration::from_secs(10));
                let deadline = Instant::now() + Duration::from_secs(5);
                while topology::alive(pid) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if is_daemon_of(pid, &names.name) {
                    topology::stop_process(pid, Duration::from_secs(2));
                }
                report.daemon_stopped = true;
            }
        }
        for &pid in &state.agent_pids {
            if topology::alive(pid) && is_agent(pid) {
                topology::stop_process(pid, Duration::from_secs(3));
                report.agents_stopped += 1;
            }
        }
    }
    let mut all: Vec<String> = state.map(|s| s.netns).unwrap_or_default();
    for n in topology::scan(&names.prefix())? {
        if !all.contains(&n) {
            all.push(n);
        }
    }
    if !all.is_empty() {
        report.was_up = true;
    }
    for n in &all {
        topology::remove_netns(n)?;
    }
    report.namespaces_removed = all;
    let dir = names.state_dir();
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| LabError::io(format!("cannot remove {}", dir.display()), e))?;
    }
    Ok(report)
}
