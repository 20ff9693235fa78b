//! `palisade lab drops [--node N] [--namespace NS] [--follow] [-o table|json]`: the lab's
//! attributed drops, read from each node agent's `/drops` (addresses from the daemon).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use palisade_lab::control::{self, AgentState, Request};
use palisade_lab::LabNames;

use crate::cmd::drops::{show, Filter};

#[derive(clap::Args)]
#[command(after_help = "Example:\n  palisade lab drops --namespace default -o json")]
pub struct DropsArgs {
    #[command(flatten)]
    pub filter: Filter,
}

pub fn run(names: &LabNames, args: DropsArgs) -> Result<ExitCode> {
    palisade_lab::lifecycle::running(names)?;
    let status = control::call(&names.socket(), &Request::Status, Duration::from_secs(10))?;
    let agents: Vec<AgentState> =
        serde_json::from_value(status["agents"].clone()).context("unreadable agent status")?;
    let mut addrs: Vec<(String, SocketAddr)> = Vec::new();
    for a in agents {
        let Some(addr) = a.metrics_addr.as_deref() else {
            eprintln!(
                "warning: the agent of node {} has not reported its address yet",
                a.node
            );
            continue;
        };
        let addr = addr
            .parse()
            .with_context(|| format!("bad agent address {addr:?} of node {}", a.node))?;
        addrs.push((a.node, addr));
    }
    show(&addrs, &args.filter)
}
