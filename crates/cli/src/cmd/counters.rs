//! `palisade counters --node N [--policy NS/NAME]`: which policies are active on which of the
//! node's endpoints, how many packets and bytes each rule matched, and how many packets were
//! dropped at the end of each endpoint's policies. Read from the node agent's `/counters`
//! (its address comes from the node's status), or with `--netns NAME --dataplane KIND`
//! straight from the kernel.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use palisade_agent::{AgentConfig, CountersReport, DataplaneKind, NodeStatus};
use palisade_dataplane::ProcessRunner;
use palisade_store::keys;

use super::agent::render_table;
use super::datastore_args::{self as ds, DatastoreArgs};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  palisade counters --node n1 --datastore etcd://127.0.0.1:2379\n  \
    palisade counters --node n1 --policy prod/allow-web -o json\n  \
    palisade counters --node n1 --netns lab-n1 --dataplane nftables   (read the kernel directly)\n  \
    palisade counters --node n2 --policy default/web-deny-all   (no datastore: ask the running lab)"
)]
pub struct Args {
    /// The node whose counters to show.
    #[arg(long, value_name = "NAME")]
    node: String,
    /// Only this policy (`namespace/name`, or `tier:namespace/name` outside the default
    /// tier), the endpoints it is active on and their drops.
    #[arg(long, value_name = "NS/NAME")]
    policy: Option<String>,
    /// Read the kernel of this network namespace directly instead of asking the agent
    /// (needs --dataplane and root).
    #[arg(long, value_name = "NAME", requires = "dataplane")]
    netns: Option<String>,
    /// The node's packet filter, for --netns: iptables or nftables.
    #[arg(long, value_name = "KIND")]
    dataplane: Option<String>,
    /// Interface prefixes of the node's pod veths, for --netns: as the agent's
    /// `--iface-prefix` (several allowed, `cali,pal`; the first names the chains).
    #[arg(long, value_name = "PREFIX", default_value = "pal")]
    iface_prefix: Vec<String>,
    /// Seconds to wait for the agent's answer.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    timeout: u64,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = super::agent::Output::Table)]
    output: super::agent::Output,
    /// Without --datastore: the lab whose node agent to ask.
    #[arg(long, value_name = "NAME", default_value = "lab")]
    lab: String,
    #[command(flatten)]
    datastore: DatastoreArgs,
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.datastore.datastore {
        Some(_) => ds::runtime()?.block_on(run_async(args)),
        None => run_of_lab(args),
    }
}

fn run_of_lab(args: Args) -> Result<ExitCode> {
    if args.netns.is_some() {
        bail!("--netns needs --datastore (or PALISADE_DATASTORE): the node's endpoints are read from it");
    }
    super::lab::counters_of_lab(&args.lab, args.node, args.policy, args.output)
}

async fn run_async(args: Args) -> Result<ExitCode> {
    let store = args.datastore.connect().await?;
    let report = match &args.netns {
        Some(ns) => {
            let mut cfg = AgentConfig::new(args.node.clone());
            cfg.netns = Some(ns.clone());
            cfg.dataplane = args
                .dataplane
                .as_deref()
                .unwrap_or_default()
                .parse::<DataplaneKind>()?;
            cfg.iface_prefixes = palisade_agent::config::parse_prefixes(&args.iface_prefix)?;
            cfg.validate()?;
            let runner = Arc::new(ProcessRunner::in_netns(ns.clone()));
            palisade_agent::direct::report(&cfg, store.as_ref(), runner)
                .await
                .with_context(|| format!("cannot read counters in network namespace {ns}"))?
        }
        None => {
            let key = keys::status(&args.node)?;
            let kv = store
                .get(&key)
                .await
                .with_context(|| format!("cannot read {key}"))?
                .with_context(|| {
                    format!(
                        "node {} has no agent status at {key}: is its agent running?",
                        args.node
                    )
                })?;
            let status = NodeStatus::decode(&kv.key, &kv.value)?;
            let Some(addr) = status.metrics_addr.as_deref() else {
                bail!("the agent of node {} serves no metrics address (started with --metrics-addr off?); use --netns NAME --dataplane KIND to read the kernel directly", args.node);
            };
            let addr: SocketAddr = addr.parse().with_context(|| {
                format!(
                    "node {}'s status has a bad metrics address {addr:?}",
                    args.node
                )
            })?;
            let (code, body) = palisade_agent::client::get(
                addr,
                "/counters",
                Duration::from_secs(args.timeout.max(1)),
            )
            .await?;
            if code != 200 {
                bail!(
                    "the agent of node {} at {addr} answered {code}: {}",
                    args.node,
                    body.trim()
                );
            }
            serde_json::from_str::<CountersReport>(&body)
                .with_context(|| format!("bad /counters answer from {addr}"))?
        }
    };
    let report = match &args.policy {
        Some(p) => only_policy(report, p, &args.node),
        None => report,
    };
    match args.output {
        super::agent::Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        super::agent::Output::Table => print!("{}", text(&report)),
    }
    Ok(ExitCode::SUCCESS)
}

/// The report narrowed to one policy: its rules, the endpoints it is active on, and their
/// drops in the directions where it is active (the drops it caused, for a policy that
/// allows nothing). Says on stderr when the policy is active on no endpoint of the node.
pub(crate) fn only_policy(report: CountersReport, policy: &str, node: &str) -> CountersReport {
    let mut r = report.only_policy(policy);
    let active_in = |endpoint: &Option<String>, direction: &str| {
        r.endpoints.iter().any(|e| {
            Some(&e.endpoint) == endpoint.as_ref()
                && match direction {
                    "ingress" => e.ingress.iter().any(|p| p == policy),
                    "egress" => e.egress.iter().any(|p| p == policy),
                    _ => true,
                }
        })
    };
    let drops: Vec<_> = r
        .drops
        .iter()
        .filter(|d| active_in(&d.endpoint, &d.direction))
        .cloned()
        .collect();
    r.drops = drops;
    if r.endpoints.is_empty() && r.rules.is_empty() {
        let hint = if policy.contains('/') {
            ""
        } else {
            " (name it as NAMESPACE/NAME)"
        };
        eprintln!("warning: policy {policy} is active on no endpoint of node {node}{hint}");
    }
    r
}

/// The policies active on `endpoint` in `direction`, as the drop table attributes them.
fn policies_of(r: &CountersReport, endpoint: Option<&str>, direction: &str) -> String {
    let Some(e) = r
        .endpoints
        .iter()
        .find(|e| Some(e.endpoint.as_str()) == endpoint)
    else {
        return "-".into();
    };
    let (names, n) = match direction {
        "ingress" => (&e.ingress, e.ingress_count),
        "egress" => (&e.egress, e.egress_count),
        _ => return "-".into(),
    };
    if n == 0 {
        "-".into()
    } else if n > names.len() {
        format!("{} (+{} more)", names.join(","), n - names.len())
    } else {
        names.join(",")
    }
}

/// The report as tables: endpoints and their policies, rule counters, drops.
pub(crate) fn text(r: &CountersReport) -> String {
    let mut out = format!(
        "node {} ({}, revision {})\n\n",
        r.node, r.dataplane, r.revision
    );
    let mut eps = vec![[
        "ENDPOINT".to_string(),
        "INGRESS POLICIES".into(),
        "EGRESS POLICIES".into(),
    ]];
    let list = |names: &[String], n: usize| {
        if n == 0 {
            "- (open)".to_string()
        } else if n > names.len() {
            format!("{} (+{} more)", names.join(","), n - names.len())
        } else {
            names.join(",")
        }
    };
    for e in &r.endpoints {
        eps.push([
            e.endpoint.clone(),
            list(&e.ingress, e.ingress_count),
            list(&e.egress, e.egress_count),
        ]);
    }
    out.push_str(&render_table(&eps));
    let mut rules = vec![[
        "POLICY".to_string(),
        "DIRECTION".into(),
        "RULE".into(),
        "PACKETS".into(),
        "BYTES".into(),
    ]];
    for c in &r.rules {
        rules.push([
            c.policy.clone().unwrap_or_default(),
            c.direction.clone(),
            c.rule.map(|i| i.to_string()).unwrap_or_default(),
            c.packets.to_string(),
            c.bytes.to_string(),
        ]);
    }
    out.push('\n');
    out.push_str(&render_table(&rules));
    // A drop happens at the end of an endpoint's policies when none of them allowed the
    // packet: it is attributed to those policies.
    let mut drops = vec![[
        "ENDPOINT".to_string(),
        "DIRECTION".into(),
        "DROPPED-PACKETS".into(),
        "BYTES".into(),
        "POLICIES".into(),
    ]];
    for c in &r.drops {
        drops.push([
            c.endpoint.clone().unwrap_or_default(),
            c.direction.clone(),
            c.packets.to_string(),
            c.bytes.to_string(),
            policies_of(r, c.endpoint.as_deref(), &c.direction),
        ]);
    }
    out.push('\n');
    out.push_str(&render_table(&drops));
    out
}
