//! Agents of a lab: in process in the daemon (embedded datastore), through an
//! [`AgentLauncher`] the binary passes in, so this crate does not depend on the agent's
//! internals; or one `palisade agent` process per node (etcd).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use palisade_store::Datastore;

use crate::error::{LabError, Result};

/// What an in-process agent needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSpec {
    pub node: String,
    /// The node's network namespace, which the agent programs.
    pub netns: String,
    /// `iptables` or `nftables`.
    pub dataplane: String,
    /// How the agent recognizes local pods.
    pub endpoint_match: crate::wiring::EndpointMatch,
    /// Delete the conntrack entries of established flows that new rules deny
    /// (`--established revoke`).
    pub revoke: bool,
    /// `--nft-layout` for the agents (`flat` or `chains`; `None`: the agent's default).
    pub nft_layout: Option<String>,
    /// Where the agent's log lines go.
    pub log_file: std::path::PathBuf,
}

/// Starts agents inside the daemon (embedded datastore).
pub trait AgentLauncher: Send + Sync {
    fn start(
        &self,
        spec: &AgentSpec,
        store: Arc<dyn Datastore>,
        runtime: &tokio::runtime::Handle,
    ) -> std::result::Result<Box<dyn RunningAgent>, String>;
}

/// A running in-process agent.
pub trait RunningAgent: Send {
    fn stop(self: Box<Self>);
}

pub(crate) enum AgentHandle {
    InProcess(Box<dyn RunningAgent>),
    Process(Child),
}

/// `palisade agent --node N --datastore URL --dataplane X --netns NS --endpoint-match M`,
/// logging to a file.
pub(crate) fn spawn_agent(spec: &AgentSpec, url: &str) -> Result<Child> {
    let exe = std::env::current_exe().map_err(|e| LabError::io("cannot find own binary", e))?;
    let log = std::fs::File::create(&spec.log_file)
        .map_err(|e| LabError::io(format!("cannot create {}", spec.log_file.display()), e))?;
    let err = log
        .try_clone()
        .map_err(|e| LabError::io("cannot duplicate the log file", e))?;
    let layout = spec
        .nft_layout
        .iter()
        .flat_map(|l| ["--nft-layout".to_string(), l.clone()]);
    Command::new(&exe)
        .args([
            "agent",
            "--node",
            &spec.node,
            "--datastore",
            url,
            "--dataplane",
            &spec.dataplane,
            "--netns",
            &spec.netns,
            "--endpoint-match",
            spec.endpoint_match.as_str(),
            "--metrics-addr",
            "127.0.0.1:0",
            "--established",
            if spec.revoke { "revoke" } else { "keep" },
        ])
        .args(layout)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|e| LabError::Spawn {
            command: format!("{} agent --node {}", exe.display(), spec.node),
            source: e,
        })
}
