//! `palisade lab apply -f PATH...`, `palisade lab delete networkpolicy NS/NAME` and
//! `palisade lab delete clusternetworkpolicy NAME`: change a live lab through its daemon,
//! which writes the datastore and returns once every agent has programmed the change.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use palisade_lab::control::{self, Request};
use palisade_lab::daemon::SYNC_TIMEOUT;
use palisade_lab::LabNames;
use palisade_model::manifest::Object;
use palisade_model::{convert, EndpointId, PolicyId, DEFAULT_TIER};

use super::Output;
use crate::input;

#[derive(clap::Args)]
pub struct ApplyArgs {
    /// Manifests: NetworkPolicies and ClusterNetworkPolicies are created or replaced (Nodes are
    /// skipped: the lab has its own); a Namespace or Pod that exists has
    /// its labels (and a Pod its container ports) replaced; a new Pod is created on its
    /// spec.nodeName (a node of the lab) or the node with the fewest pods.
    #[arg(short = 'f', long = "filename", value_name = "PATH", num_args = 1.., required = true)]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  palisade lab delete networkpolicy default/web-deny-all\n  \
    palisade lab delete clusternetworkpolicy protect-kube-system"
)]
pub struct DeleteArgs {
    /// The kind: networkpolicy (also networkpolicies, netpol, np), clusternetworkpolicy
    /// (clusternetworkpolicies, cnp) or pod (pods, po).
    pub kind: String,
    /// NAMESPACE/NAME (NAME alone means namespace default); a ClusterNetworkPolicy's NAME.
    pub target: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

fn timeout() -> Duration {
    SYNC_TIMEOUT + Duration::from_secs(5)
}

pub fn run_apply(names: &LabNames, args: ApplyArgs) -> Result<ExitCode> {
    palisade_lab::lifecycle::running(names)?;
    let manifests = match input::read_manifests(&args.files)? {
        Ok(m) => m,
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            bail!(
                "{} error(s) in the manifests; nothing was applied",
                errors.len()
            );
        }
    };
    input::warn_skipped(&manifests);
    let (mut namespaces, mut pods, mut policies) = (Vec::new(), Vec::new(), Vec::new());
    let mut rule_names = Vec::new();
    let mut done = Vec::new();
    for doc in &manifests.documents {
        let what = doc.object.describe();
        let fail = |e: Vec<palisade_model::validate::FieldError>| {
            let list: Vec<String> = e.iter().map(ToString::to_string).collect();
            anyhow::anyhow!(
                "{} ({what}): {}; nothing was applied",
                doc.source,
                list.join("; ")
            )
        };
        match &doc.object {
            Object::Namespace(n) => namespaces.push(convert::namespace(n).map_err(fail)?),
            Object::Pod(p) => match convert::pod(p).map_err(fail)? {
                Some(ep) => pods.push(ep),
                None => {
                    eprintln!("warning: {what} is not a workload endpoint; skipped");
                    continue;
                }
            },
            Object::NetworkPolicy(np) => policies.push(convert::network_policy(np).map_err(fail)?),
            Object::ClusterNetworkPolicy(cnp) => {
                let (policy, names) = convert::cluster_network_policy(cnp).map_err(fail)?;
                rule_names.push((policy.id.clone(), names));
                policies.push(policy);
            }
            Object::Node(_) => {
                eprintln!("warning: {what}: the lab has its own nodes; skipped");
                continue;
            }
        }
        done.push(what);
    }
    let answer = control::call(
        &names.socket(),
        &Request::Apply {
            namespaces,
            pods,
            policies,
            rule_names,
        },
        timeout(),
    )?;
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({ "revision": answer["revision"], "applied": done })
        ),
        Output::Table => {
            for d in &done {
                println!("{d} configured");
            }
            println!("agents in sync at revision {}", answer["revision"]);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_delete(names: &LabNames, args: DeleteArgs) -> Result<ExitCode> {
    palisade_lab::lifecycle::running(names)?;
    let kind = crate::cmd::delete::kind_word(&args.kind);
    let (request, what) = match kind.as_str() {
        "networkpolicy" | "networkpolicies" | "netpol" | "netpols" | "np" => {
            let (ns, name) = namespaced(&args.target)?;
            let id = PolicyId {
                tier: DEFAULT_TIER.to_string(),
                namespace: Some(ns.to_string()),
                name: name.to_string(),
            };
            (
                Request::DeletePolicy { id },
                format!("NetworkPolicy {ns}/{name}"),
            )
        }
        "clusternetworkpolicy" | "clusternetworkpolicies" | "cnp" | "cnps" => {
            let id = cluster_policy_id(names, &args.target)?;
            let what = format!("ClusterNetworkPolicy {}", id.name);
            (Request::DeletePolicy { id }, what)
        }
        "pod" | "pods" | "po" => {
            let (ns, name) = namespaced(&args.target)?;
            let id = EndpointId::new(ns, name);
            (Request::DeletePod { id }, format!("Pod {ns}/{name}"))
        }
        _ => bail!(
            "lab delete handles networkpolicy, clusternetworkpolicy and pod (got {:?}); \
             namespaces live as long as the lab",
            args.kind
        ),
    };
    let answer = control::call(&names.socket(), &request, timeout())
        .with_context(|| format!("cannot delete {what}"))?;
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({ "revision": answer["revision"], "deleted": what })
        ),
        Output::Table => println!(
            "{what} deleted; agents in sync at revision {}",
            answer["revision"]
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// The id of the lab's ClusterNetworkPolicy `name` (in the admin or the baseline tier).
fn cluster_policy_id(names: &LabNames, name: &str) -> Result<PolicyId> {
    if name.contains('/') {
        bail!("a ClusterNetworkPolicy is cluster-scoped: expected NAME, got {name:?}");
    }
    let value = control::call(&names.socket(), &Request::Cluster, timeout())
        .context("cannot read the lab's policies")?;
    let cluster: palisade_model::Cluster =
        serde_json::from_value(value).context("the lab daemon sent no cluster")?;
    cluster
        .policies
        .iter()
        .map(|p| &p.id)
        .find(|id| {
            id.namespace.is_none()
                && id.name == name
                && (id.tier == palisade_model::ADMIN_TIER
                    || id.tier == palisade_model::BASELINE_TIER)
        })
        .cloned()
        .with_context(|| format!("the lab has no ClusterNetworkPolicy {name}"))
}

/// `NAMESPACE/NAME` (`NAME` alone: namespace `default`).
fn namespaced(target: &str) -> Result<(&str, &str)> {
    let (ns, name) = target.split_once('/').unwrap_or(("default", target));
    if ns.is_empty() || name.is_empty() {
        bail!("expected NAMESPACE/NAME, got {target:?}");
    }
    Ok((ns, name))
}
