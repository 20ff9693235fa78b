//! `palisade lab status [-o json]` and `palisade lab down`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use palisade_lab::control::{self, AgentState, Request};
use palisade_lab::lifecycle::daemon_alive;
use palisade_lab::{LabNames, LabState};
use serde::Serialize;

use super::{require_root, Output};

#[derive(clap::Args)]
pub struct StatusArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(clap::Args)]
pub struct DownArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Serialize)]
struct StatusJson {
    name: String,
    id: String,
    dataplane: String,
    datastore: String,
    cni: String,
    ip_family: String,
    endpoint_match: String,
    agents_enabled: bool,
    daemon: DaemonJson,
    nodes: Vec<NodeJson>,
    pods: Vec<PodJson>,
}

#[derive(Serialize)]
struct DaemonJson {
    pid: Option<u32>,
    running: bool,
    log: String,
}

#[derive(Serialize)]
struct NodeJson {
    name: String,
    netns: String,
    /// The addresses of its Node manifest (none for n1..nN).
    addresses: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<AgentState>,
}

#[derive(Serialize)]
struct PodJson {
    pod: String,
    node: String,
    /// The pod's first address.
    ip: String,
    /// Every address of the pod.
    ips: Vec<String>,
    netns: String,
    interface: String,
    ports: Vec<String>,
    /// Runs in its node's namespace with the node's addresses.
    host_network: bool,
}

fn build(names: &LabNames, state: &LabState) -> StatusJson {
    let running = daemon_alive(names, state);
    let agents: Vec<AgentState> = if running && state.agents {
        control::call(&names.socket(), &Request::Status, Duration::from_secs(10))
            .ok()
            .and_then(|v| serde_json::from_value(v["agents"].clone()).ok())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    StatusJson {
        name: state.name.clone(),
        id: state.id.clone(),
        dataplane: state.dataplane.clone(),
        datastore: state.datastore.clone(),
        cni: state.cni.to_string(),
        ip_family: state.ip_family.to_string(),
        endpoint_match: state.endpoint_match.to_string(),
        agents_enabled: state.agents,
        daemon: DaemonJson {
            pid: state.daemon_pid,
            running,
            log: names.log_file().display().to_string(),
        },
        nodes: state
            .plan
            .nodes
            .iter()
            .map(|n| NodeJson {
                name: n.name.clone(),
                netns: n.netns.clone(),
                addresses: n.addresses.iter().map(ToString::to_string).collect(),
                agent: agents.iter().find(|a| a.node == n.name).cloned(),
            })
            .collect(),
        pods: state
            .plan
            .pods
            .iter()
            .map(|p| PodJson {
                pod: p.id.to_string(),
                node: p.node.clone(),
                ip: p.ip().map(|ip| ip.to_string()).unwrap_or_default(),
                ips: p.ips.iter().map(ToString::to_string).collect(),
                netns: p.netns.clone(),
                interface: p.interface.clone(),
                ports: p
                    .ports
                    .iter()
                    .map(|port| format!("{}/{}", port.port, port.protocol))
                    .collect(),
                host_network: p.host_network,
            })
            .collect(),
    }
}

/// Prints the lab's status as a table or JSON.
pub fn print(names: &LabNames, state: &LabState, output: Output) -> Result<()> {
    let s = build(names, state);
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!(
        "lab {} ({}): {} nodes, {} pods, cni {}, endpoint match {}, ip family {}, dataplane {}, datastore {}, daemon {}",
        s.name,
        s.id,
        s.nodes.len(),
        s.pods.len(),
        s.cni,
        s.endpoint_match,
        s.ip_family,
        s.dataplane,
        s.datastore,
        if s.daemon.running {
            "running"
        } else {
            "NOT running"
        }
    );
    let node_width = s
        .nodes
        .iter()
        .map(|n| n.name.len())
        .max()
        .unwrap_or(0)
        .max(8);
    println!(
        "{:<node_width$} {:<28} {:<20} AGENT",
        "NODE", "NETNS", "ADDRESSES"
    );
    for n in &s.nodes {
        let agent = match (&n.agent, s.agents_enabled) {
            (_, false) => "none (--no-agents)".to_string(),
            (Some(a), _) if a.in_sync => format!("in sync at revision {}", a.revision),
            (Some(a), _) => format!(
                "NOT in sync (revision {}{})",
                a.revision,
                a.last_error
                    .as_ref()
                    .map(|e| format!(", {e}"))
                    .unwrap_or_default()
            ),
            (None, _) => "unknown".to_string(),
        };
        let addresses = if n.addresses.is_empty() {
            "-".to_string()
        } else {
            n.addresses.join(",")
        };
        println!(
            "{:<node_width$} {:<28} {:<20} {agent}",
            n.name, n.netns, addresses
        );
    }
    println!(
        "{:<24} {:<node_width$} {:<15} {:<16} {:<26} PORTS",
        "POD", "NODE", "IPS", "INTERFACE", "NETNS"
    );
    for p in &s.pods {
        let interface = if p.host_network {
            "(hostNetwork)"
        } else {
            p.interface.as_str()
        };
        println!(
            "{:<24} {:<node_width$} {:<15} {:<16} {:<26} {}",
            p.pod,
            p.node,
            p.ips.join(","),
            interface,
            p.netns,
            p.ports.join(",")
        );
    }
    Ok(())
}

pub fn run(names: &LabNames, args: StatusArgs) -> Result<ExitCode> {
    let Some(state) = LabState::load(names)? else {
        anyhow::bail!("lab {:?} is not up (palisade lab up -f ...)", names.name);
    };
    print(names, &state, args.output)?;
    Ok(if daemon_alive(names, &state) {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "error: the lab's daemon is not running (log: {}); `palisade lab down` cleans up",
            names.log_file().display()
        );
        ExitCode::FAILURE
    })
}

pub fn down(names: &LabNames, args: DownArgs) -> Result<ExitCode> {
    require_root()?;
    let report = palisade_lab::down(names)?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table if report.was_up => {
            for e in &report.cni_errors {
                eprintln!("warning: CNI DEL: {e}");
            }
            println!(
                "lab {} is down: {} namespaces removed{}{}",
                names.name,
                report.namespaces_removed.len(),
                if report.daemon_stopped {
                    ", daemon stopped"
                } else {
                    ""
                },
                if report.agents_stopped > 0 {
                    format!(", {} agent processes stopped", report.agents_stopped)
                } else {
                    String::new()
                }
            )
        }
        Output::Table => println!("lab {} was not up: nothing to remove", names.name),
    }
    Ok(ExitCode::SUCCESS)
}
