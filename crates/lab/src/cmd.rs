//! Running `ip` (and friends) with every failure reported as the command and its stderr.

use std::process::{Command, Stdio};

use crate::error::{LabError, Result};

/// Runs `program args...`; its stdout on success.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LabError::Command {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// `ip -n NETNS args...`.
pub fn ip_in(netns: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["-n", netns];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// Sets sysctls inside a namespace (`key=value` each).
pub fn sysctl_in(netns: &str, settings: &[&str]) -> Result<()> {
    let mut all = vec!["netns", "exec", netns, "sysctl", "-qw"];
    all.extend_from_slice(settings);
    run("ip", &all).map(|_| ())
}

/// Forgets every tracked connection in a namespace (`conntrack -F`), so that the next packets
/// of any flow are judged as new. `Ok(false)` when the `conntrack` tool is not installed.
pub fn flush_conntrack(netns: &str) -> Result<bool> {
    match run("ip", &["netns", "exec", netns, "conntrack", "-F"]) {
        Ok(_) => Ok(true),
        Err(LabError::Command { stderr, .. })
            if stderr.contains("No such file") || stderr.contains("not found") =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}
