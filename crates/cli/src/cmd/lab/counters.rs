//! `palisade lab counters --node N [--policy NS/NAME] [-o json]`: the node agent's rule
//! counters and end-of-chain drops, for any lab (with the embedded datastore, `palisade
//! counters` cannot reach the store inside the lab daemon; this asks the daemon for the
//! agent's `/counters` address instead).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use palisade_agent::CountersReport;
use palisade_lab::control::{self, AgentState, Request};
use palisade_lab::LabNames;

use super::Output;

#[derive(clap::Args)]
#[command(after_help = "Example:\n  palisade lab counters --node n2 --policy default/web-deny-all")]
pub struct CountersArgs {
    /// The node (n1, n2, ...).
    #[arg(long, value_name = "NAME")]
    pub node: String,
    /// Only this policy (`namespace/name`), the endpoints it is active on and their drops.
    #[arg(long, value_name = "NS/NAME")]
    pub policy: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

pub fn run(names: &LabNames, args: CountersArgs) -> Result<ExitCode> {
    palisade_lab::lifecycle::running(names)?;
    let status = control::call(&names.socket(), &Request::Status, Duration::from_secs(10))?;
    let agents: Vec<AgentState> =
        serde_json::from_value(status["agents"].clone()).context("unreadable agent status")?;
    let Some(agent) = agents.iter().find(|a| a.node == args.node) else {
        bail!("lab {} has no node {}", names.name, args.node);
    };
    let Some(addr) = agent.metrics_addr.as_deref() else {
        bail!(
            "the agent of node {} has not reported a /counters address yet",
            args.node
        );
    };
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("bad /counters address {addr:?}"))?;
    let runtime = super::super::datastore_args::runtime()?;
    let (code, body) = runtime.block_on(palisade_agent::client::get(
        addr,
        "/counters",
        Duration::from_secs(5),
    ))?;
    if code != 200 {
        bail!(
            "the agent of node {} answered {code}: {}",
            args.node,
            body.trim()
        );
    }
    let mut report: CountersReport =
        serde_json::from_str(&body).with_context(|| format!("bad /counters answer from {addr}"))?;
    if let Some(p) = &args.policy {
        report = crate::cmd::counters::only_policy(report, p, &args.node);
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => print!("{}", crate::cmd::counters::text(&report)),
    }
    Ok(ExitCode::SUCCESS)
}
