//! `palisade explain`: the verdict for one flow and, in plain words, the tiers, policies and
//! rules behind it, computed by the engine from manifests or from what the datastore holds.

use std::process::ExitCode;

use anyhow::Context;
use palisade_engine::{Flow, FlowEnd, Probe};

use crate::source::SourceArgs;

#[derive(clap::Args)]
#[command(after_help = "\
With --datastore the flow is judged on what the datastore holds: the state the agents enforce.

Exit status: 0 when the flow was judged (allowed or denied), 1 on bad input or an unknown pod,
2 on a usage error (neither or both of -f and --datastore).

Examples:
  palisade explain -f examples/seed --from default/client --to myns/backend --port 6379/TCP
  palisade explain -f manifests/ --from 192.0.2.10 --to web/frontend-0 --port 443 -o json
  palisade explain --datastore etcd://127.0.0.1:2379 -n bob --from client --to default/app-web --port 80
  palisade explain --datastore etcd://127.0.0.1:2379 --staged --from bob/client --to default/app-web --port 80

Without --staged, when enforcing the staged policies would change the verdict, the text ends
with a `staged:` line and the JSON has `\"staged\": {\"allowed\", \"policies\"}`.")]
pub struct Args {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Source: NAMESPACE/POD, POD (in the namespace of -n), or an IP address (a pod's own
    /// address stands for the pod).
    #[arg(long, value_name = "NS/POD|IP")]
    pub from: String,
    /// Destination: NAMESPACE/POD, POD (in the namespace of -n), or an IP address (a pod's
    /// own address stands for the pod).
    #[arg(long, value_name = "NS/POD|IP")]
    pub to: String,
    /// The namespace of a --from or --to given as a bare pod name.
    #[arg(short = 'n', long = "namespace", value_name = "NS")]
    pub namespace: Option<String>,
    /// Destination port and protocol: PORT[/PROTO] (TCP when omitted), or `icmp`.
    #[arg(long, value_name = "PORT/PROTO")]
    pub port: Probe,
    /// Output format: `text` (the verdict and the trace in words) or `json` (the trace as data).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let src = flow_end(&args.from, args.namespace.as_deref()).context("--from")?;
    let dst = flow_end(&args.to, args.namespace.as_deref()).context("--to")?;
    let stored = args.source.load_as_stored()?;
    let cluster = args.source.staged_view(stored.clone());
    let src = as_pod(&cluster, src, "--from");
    let dst = as_pod(&cluster, dst, "--to");
    let flow = Flow::new(src, dst, args.port.protocol, args.port.port);
    let verdict = palisade_engine::verdict(&cluster, &flow).context("cannot judge the flow")?;
    // Without --staged, and staged policies present: would enforcing them change the verdict?
    let staged = if !args.source.staged && stored.has_staged() {
        let all = stored.with_staged_enforced();
        let v = palisade_engine::verdict(&all, &flow).context("cannot judge the flow")?;
        (v.allowed != verdict.allowed).then(|| staged_note(&cluster, &v))
    } else {
        None
    };
    match args.output {
        Output::Json => {
            let mut json = serde_json::to_value(&verdict)?;
            if let (Some((allowed, policies)), Some(obj)) = (&staged, json.as_object_mut()) {
                obj.insert(
                    "staged".into(),
                    serde_json::json!({"allowed": allowed, "policies": policies}),
                );
            }
            println!("{}", serde_json::to_string_pretty(&json)?)
        }
        Output::Text => {
            print!("{}", palisade_engine::explain_text(&cluster, &verdict));
            if let Some((allowed, policies)) = &staged {
                println!(
                    "staged: with the staged policies enforced (--staged) this flow would be {} \
                     (staged: {})",
                    if *allowed { "ALLOWED" } else { "DENIED" },
                    policies.join(", ")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The verdict with staged policies enforced, and the staged policies that select either end
/// of the flow (the ones that change it).
fn staged_note(
    enforced: &palisade_model::Cluster,
    v: &palisade_engine::Verdict,
) -> (bool, Vec<String>) {
    let sides = [v.egress.as_ref(), v.ingress.as_ref()];
    let mut names: Vec<String> = sides
        .into_iter()
        .flatten()
        .flat_map(|s| s.tiers.iter())
        .flat_map(|t| t.policies.iter())
        .filter(|id| enforced.policies.iter().any(|p| p.id == **id && p.staged))
        .map(ToString::to_string)
        .collect();
    names.dedup();
    (v.allowed, names)
}

/// A flow end as written; a bare pod name is in `namespace`, when one is given.
fn flow_end(text: &str, namespace: Option<&str>) -> Result<FlowEnd, palisade_engine::EngineError> {
    match namespace {
        Some(ns) if !text.contains('/') && text.parse::<std::net::IpAddr>().is_err() => {
            format!("{ns}/{text}").parse()
        }
        _ => text.parse(),
    }
}

/// An address that belongs to a pod of the manifests is that pod: packets from or to it are
/// the pod's, and the pod's policies and selectors apply (as they do in the kernel, where the
/// address is in the pod's IP sets). Says so on stderr.
fn as_pod(cluster: &palisade_model::Cluster, end: FlowEnd, flag: &str) -> FlowEnd {
    let FlowEnd::Ip(ip) = end else {
        return end;
    };
    let mut owners = cluster.endpoints.iter().filter(|e| e.ips.contains(&ip));
    match (owners.next(), owners.next()) {
        (Some(pod), None) => {
            eprintln!(
                "note: {flag} {ip} is the address of pod {}: explaining it as that pod",
                pod.id
            );
            FlowEnd::Pod(pod.id.clone())
        }
        _ => FlowEnd::Ip(ip),
    }
}
