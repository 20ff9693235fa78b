//! Running a CNI plugin as a container runtime does (CNI spec 1.0): the plugin binary from
//! the plugin directory, `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME` and
//! `CNI_PATH` in its environment, the network configuration on stdin, its result (or error
//! object) on stdout. The node's network namespace plays the host: the plugin runs inside it
//! (`ip netns exec <node>`), so whatever it makes on the "host" side lands in the node.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::result::error_message;

/// Where the reference plugins are (Debian's `containernetworking-plugins`).
pub const PLUGIN_DIR: &str = "/usr/lib/cni";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniCommand {
    Add,
    Del,
    Check,
}

impl CniCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
            CniCommand::Check => "CHECK",
        }
    }
}

/// One pod's side of an invocation.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub plugin_dir: &'a Path,
    /// The node's network namespace (the "host").
    pub node_netns: &'a str,
    pub container_id: &'a str,
    /// The pod's network namespace name (`CNI_NETNS` is its path under `/run/netns`).
    pub pod_netns: &'a str,
    pub ifname: &'a str,
}

/// Runs the plugin named by `config["type"]`; its JSON result (`Null` when it prints
/// nothing, as DEL and CHECK do), or the plugin's own message.
pub fn invoke(target: &Target, command: CniCommand, config: &Value) -> Result<Value, String> {
    let plugin = config["type"]
        .as_str()
        .ok_or_else(|| "the network configuration has no type".to_string())?;
    let binary = target.plugin_dir.join(plugin);
    if !binary.exists() {
        return Err(format!(
            "{} is missing (install containernetworking-plugins: scripts/setup)",
            binary.display()
        ));
    }
    let mut child = Command::new("ip")
        .args(["netns", "exec", target.node_netns])
        .arg(&binary)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("CNI_COMMAND", command.as_str())
        .env("CNI_CONTAINERID", target.container_id)
        .env("CNI_NETNS", format!("/run/netns/{}", target.pod_netns))
        .env("CNI_IFNAME", target.ifname)
        .env("CNI_PATH", target.plugin_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let input = serde_json::to_vec(config).map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&input)
            .map_err(|e| format!("cannot write the configuration to {plugin}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{plugin} did not finish: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(error_message(&stdout).unwrap_or_else(|| {
            let text = format!("{} {}", stdout.trim(), stderr.trim());
            format!("exited with {}: {}", out.status, text.trim())
        }));
    }
    if stdout.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&stdout).map_err(|e| format!("unreadable result ({e}): {stdout}"))
}
