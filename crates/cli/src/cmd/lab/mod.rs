//! `palisade lab`: a real multi-node cluster made of network namespaces on this machine, with
//! one agent per node enforcing policy, servers in every pod and a prober that sends real
//! packets. See docs/lab.md.

mod apply;
mod bench;
mod counters;
mod daemon;
mod drops;
mod exec;
mod probe;
mod status;
mod up;

use std::process::ExitCode;

use anyhow::Result;
use palisade_lab::LabNames;

#[derive(clap::Args)]
#[command(after_help = "\
Example:
  palisade lab up -f examples/seed --nodes 2 --dataplane nftables
  palisade lab probe --probe 80/TCP --probe icmp
  palisade lab apply -f examples/seed/web-deny-all.yaml
  palisade lab exec bob/client -- curl -s http://10.244.1.2/   (app-web on n2)
  palisade lab down

Needs root (network namespaces). Nothing the lab makes touches the host's own interfaces.")]
pub struct Args {
    /// The lab to act on (several labs can run side by side).
    #[arg(long, global = true, default_value = "lab", value_name = "NAME")]
    pub name: String,
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(clap::Subcommand)]
pub enum LabCommand {
    /// Create nodes and pods from manifests, start servers and agents; returns when every agent is in sync.
    Up(up::UpArgs),
    /// Create or replace NetworkPolicies; change labels (and ports) of Namespaces and Pods; create new Pods.
    Apply(apply::ApplyArgs),
    /// Delete a NetworkPolicy, a ClusterNetworkPolicy or a Pod: `lab delete networkpolicy|pod
    /// NS/NAME`, `lab delete clusternetworkpolicy NAME`.
    Delete(apply::DeleteArgs),
    /// Real traffic between every ordered pair of pods, compared with the engine's matrix.
    Probe(probe::ProbeArgs),
    /// Run a command inside a pod's network namespace (exit code passed through).
    Exec(exec::ExecArgs),
    /// Nodes, pods (node, address, namespace, interface) and agents.
    Status(status::StatusArgs),
    /// Remove everything `up` created (also after a crash).
    Down(status::DownArgs),
    /// A node's rule counters and drops, from its agent (works with the embedded datastore).
    Counters(counters::CountersArgs),
    /// Packets policy dropped, attributed (as `palisade drops`, for any lab).
    Drops(drops::DropsArgs),
    /// Connection rate, latency and policy-apply-to-enforcement time on real namespaces.
    Bench(bench::BenchArgs),
    /// The lab's background process (started by `up`).
    #[command(hide = true)]
    Daemon,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let names = LabNames::new(&args.name)?;
    match args.command {
        LabCommand::Up(a) => up::run(&names, a),
        LabCommand::Apply(a) => apply::run_apply(&names, a),
        LabCommand::Delete(a) => apply::run_delete(&names, a),
        LabCommand::Probe(a) => probe::run(&names, a),
        LabCommand::Exec(a) => exec::run(&names, a),
        LabCommand::Status(a) => status::run(&names, a),
        LabCommand::Down(a) => status::down(&names, a),
        LabCommand::Counters(a) => counters::run(&names, a),
        LabCommand::Drops(a) => drops::run(&names, a),
        LabCommand::Bench(a) => bench::run(a),
        LabCommand::Daemon => daemon::run(names),
    }
}

/// Why a command that reads the datastore asks the lab instead, for its error message.
fn no_datastore_context(lab: &str) -> String {
    format!(
        "no --datastore given (nor PALISADE_DATASTORE), so lab {lab:?} was asked, and it cannot answer"
    )
}

/// The agents' status records (key, JSON value) of a running lab: `palisade agent status`
/// without a datastore.
pub fn agent_statuses(lab: &str) -> Result<Vec<(String, Vec<u8>)>> {
    use anyhow::Context;
    let names = LabNames::new(lab)?;
    let ask = || -> Result<serde_json::Value> {
        palisade_lab::lifecycle::running(&names)?;
        Ok(palisade_lab::control::call(
            &names.socket(),
            &palisade_lab::control::Request::AgentStatuses,
            std::time::Duration::from_secs(10),
        )?)
    };
    let answer = ask().with_context(|| no_datastore_context(lab))?;
    #[derive(serde::Deserialize)]
    struct Record {
        key: String,
        value: String,
    }
    let records: Vec<Record> = serde_json::from_value(answer["statuses"].clone())
        .context("the lab daemon's agent statuses are unreadable")?;
    Ok(records
        .into_iter()
        .map(|r| (r.key, r.value.into_bytes()))
        .collect())
}

/// `palisade counters` without a datastore: the lab's agent of that node answers.
pub fn counters_of_lab(
    lab: &str,
    node: String,
    policy: Option<String>,
    output: Output,
) -> Result<ExitCode> {
    use anyhow::Context;
    let names = LabNames::new(lab)?;
    palisade_lab::lifecycle::running(&names).with_context(|| no_datastore_context(lab))?;
    counters::run(
        &names,
        counters::CountersArgs {
            node,
            policy,
            output,
        },
    )
}

/// Labs need root: say so before anything half-happens.
pub(crate) fn require_root() -> Result<()> {
    // SAFETY: geteuid has no side effects.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("the lab needs root (it creates network namespaces); run it with sudo");
    }
    Ok(())
}

/// Output formats of the lab's data-printing commands: those of the other commands.
pub use super::agent::Output;
