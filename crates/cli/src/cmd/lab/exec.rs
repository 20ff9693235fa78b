//! `palisade lab exec NS/POD -- CMD...`: runs a command inside the pod's network namespace
//! (`ip netns exec`), with its exit code passed through.

use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use palisade_lab::{LabNames, LabState};

use super::require_root;

#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  palisade lab exec bob/client -- curl -s http://10.244.1.2/   (app-web on n2)"
)]
pub struct ExecArgs {
    /// The pod, as NAMESPACE/NAME (NAME alone means namespace default).
    pub pod: String,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

pub fn run(names: &LabNames, args: ExecArgs) -> Result<ExitCode> {
    require_root()?;
    let Some(state) = LabState::load(names)? else {
        anyhow::bail!("lab {:?} is not up (palisade lab up -f ...)", names.name);
    };
    let pod = state.plan.pod_by_text(&args.pod).with_context(|| {
        format!(
            "pod {} is not in lab {} (palisade lab status lists the pods)",
            args.pod, names.name
        )
    })?;
    let status = Command::new("ip")
        .args(["netns", "exec", &pod.netns])
        .args(&args.command)
        .status()
        .with_context(|| format!("cannot run {:?} in {}", args.command, pod.netns))?;
    Ok(match status.code() {
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
