//! `palisade lab probe --probe 80/TCP [--probe ...] [-o table|json] [--timeout-ms 500]`:
//! real traffic between every ordered pair of the lab's pods, next to the engine's matrix for
//! the lab's current state. Exit code 1 if they differ anywhere.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use palisade_engine::Probe;
use palisade_lab::control::{self, Request};
use palisade_lab::probe::{probe_matrix, Target};
use palisade_lab::LabNames;
use palisade_model::{Cluster, NamedPort};
use serde::Serialize;

use super::{require_root, Output};
use crate::cmd::matrix::{to_json, JsonMatrix, JsonProbe};

#[derive(clap::Args)]
#[command(after_help = "\
Families: each pair goes over the family of the source's first address that the destination
also has (ICMPv6 for `icmp` over IPv6); --family ipv4|ipv6 probes that family only.

JSON: the `palisade matrix` shape (pods sorted, probes with allowed[from][to]) of what the
packets did, plus \"expected\" (the engine's matrix, same shape) and \"mismatches\"
([from, to, port, protocol] for every pair where they differ). A pod probing itself is
always reached: that traffic never leaves the pod's namespace. Every pod serves every probed
port (besides its declared container ports), so a probe measures policy, not whether a server
listens. Each probe is a new flow: connection tracking in the lab's node namespaces is cleared
first, since an established flow outlives a policy change (as in every Kubernetes dataplane).

Example:
  palisade lab probe --probe 80/TCP --probe 53/UDP --probe icmp -o json")]
pub struct ProbeArgs {
    /// PORT[/PROTO] (TCP, UDP, SCTP; TCP when omitted) or `icmp`. Repeat for several.
    #[arg(long = "probe", value_name = "PORT/PROTO", required = true)]
    pub probes: Vec<Probe>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// How long one probe waits for an answer.
    #[arg(long, default_value_t = 500)]
    pub timeout_ms: u64,
    /// Probe over this family only (pods without an address of it are left out). Default:
    /// each pair over the family of the source's first address the destination also has.
    #[arg(long, value_parser = ["ipv4", "ipv6"])]
    pub family: Option<String>,
}

#[derive(Serialize)]
struct ProbeReport {
    pods: Vec<String>,
    probes: Vec<JsonProbe>,
    expected: JsonMatrix,
    mismatches: Vec<(String, String, u16, &'static str)>,
}

/// The lab's current cluster, from its daemon.
pub fn lab_cluster(names: &LabNames) -> Result<Cluster> {
    let value = control::call(&names.socket(), &Request::Cluster, Duration::from_secs(10))?;
    serde_json::from_value(value).context("the daemon sent an unreadable cluster")
}

pub fn run(names: &LabNames, args: ProbeArgs) -> Result<ExitCode> {
    require_root()?;
    let state = palisade_lab::lifecycle::running(names)?;
    let mut cluster = lab_cluster(names)?;
    let family = args.family.as_deref().map(|f| f == "ipv6");
    if let Some(v6) = family {
        // The engine judges the flows of that family: pods keep only its addresses, and pods
        // without one are not probed.
        cluster.endpoints.retain_mut(|ep| {
            ep.ips.retain(|ip| ip.is_ipv6() == v6);
            !ep.ips.is_empty()
        });
    }
    let expected = palisade_engine::matrix(&cluster, &args.probes);
    let mut targets = Vec::new();
    for id in &expected.pods {
        let pod = state
            .plan
            .pod(id)
            .with_context(|| format!("pod {id} has no namespace in the lab"))?;
        targets.push(Target {
            netns: pod.netns.clone(),
            ips: pod.ips.clone(),
            bind: pod.host_network,
        });
    }
    let ports: Vec<NamedPort> = args
        .probes
        .iter()
        .filter(|p| p.protocol.has_ports())
        .map(|p| NamedPort {
            name: String::new(),
            protocol: p.protocol,
            port: p.port,
        })
        .collect();
    control::call(
        &names.socket(),
        &Request::Serve { ports },
        Duration::from_secs(10),
    )
    .context("cannot start servers for the probed ports")?;
    // Every probe must be a new flow: an established one outlives a policy change (as in
    // every Kubernetes dataplane), and a UDP or ICMP probe that happens to reuse the source
    // port or id of an earlier one would be let through by connection tracking.
    for node in &state.plan.nodes {
        let flushed = palisade_lab::cmd::flush_conntrack(&node.netns)
            .with_context(|| format!("cannot clear connection tracking on node {}", node.name))?;
        if !flushed {
            eprintln!(
                "warning: the conntrack tool is missing (scripts/setup installs it): flows \
                 established before the last policy change may still be reached"
            );
            break;
        }
    }
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let seen = probe_matrix(&targets, &args.probes, family, timeout);

    let pods: Vec<String> = expected.pods.iter().map(ToString::to_string).collect();
    let mut mismatches = Vec::new();
    for (k, probe) in args.probes.iter().enumerate() {
        for (i, from) in pods.iter().enumerate() {
            for (j, to) in pods.iter().enumerate() {
                if seen[k][i][j] != expected.probes[k].allowed(i, j) {
                    mismatches.push((
                        from.clone(),
                        to.clone(),
                        probe.port,
                        probe.protocol.as_str(),
                    ));
                }
            }
        }
    }
    let report = ProbeReport {
        pods: pods.clone(),
        probes: args
            .probes
            .iter()
            .zip(&seen)
            .map(|(p, grid)| JsonProbe {
                port: p.port,
                protocol: p.protocol.as_str(),
                allowed: grid.clone(),
            })
            .collect(),
        expected: to_json(&expected),
        mismatches,
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => print!("{}", table(&report, &args.probes)),
    }
    Ok(if report.mismatches.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One grid per probe: `✓` reached, `·` not reached, as the engine expects; `!` reached but
/// the engine denies it, `x` not reached but the engine allows it.
fn table(r: &ProbeReport, probes: &[Probe]) -> String {
    let mut out = String::new();
    let w = r.pods.iter().map(|p| p.len()).max().unwrap_or(0);
    for (k, probe) in probes.iter().enumerate() {
        let reached: usize = r.probes[k].allowed.iter().flatten().filter(|b| **b).count();
        out.push_str(&format!(
            "probe {probe}: {reached} of {} pairs reached (from = rows, to = columns; ✓ reached, · blocked, ! reached but denied by policy, x blocked but allowed)\n",
            r.pods.len() * r.pods.len()
        ));
        out.push_str(&format!("{:w$} ", ""));
        for j in 0..r.pods.len() {
            out.push_str(&format!("{:>3}", j));
        }
        out.push('\n');
        for (i, from) in r.pods.iter().enumerate() {
            out.push_str(&format!("{from:w$} "));
            for j in 0..r.pods.len() {
                let seen = r.probes[k].allowed[i][j];
                let want = r.expected.probes[k].allowed[i][j];
                let mark = match (seen, want) {
                    (true, true) => "✓",
                    (false, false) => "·",
                    (true, false) => "!",
                    (false, true) => "x",
                };
                out.push_str(&format!("{mark:>3}"));
            }
            out.push_str(&format!("  {i}\n"));
        }
        out.push('\n');
    }
    if r.mismatches.is_empty() {
        out.push_str("every probe matches the engine\n");
    } else {
        out.push_str(&format!("{} mismatches:\n", r.mismatches.len()));
        for (from, to, port, proto) in &r.mismatches {
            out.push_str(&format!("  {from} -> {to} {port}/{proto}\n"));
        }
    }
    out
}
