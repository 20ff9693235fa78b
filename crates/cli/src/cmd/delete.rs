//! `palisade delete -f PATH...` or `palisade delete KIND NAME...`: remove objects that
//! `palisade apply` stored, in one atomic batch. Every object must exist (unless
//! `--ignore-not-found`) and be owned by `palisade apply`, or nothing is deleted.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use palisade_model::manifest::Object;
use palisade_model::{ADMIN_TIER, BASELINE_TIER, DEFAULT_TIER};
use palisade_store::{
    keys, Datastore, KeyValue, Op, Precondition, Record, StoreError, OWNER_APPLY,
};
use serde::Serialize;

use super::datastore_args::{self as ds, DatastoreArgs};
use crate::input;

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  palisade delete -f policies/\n  \
    palisade delete networkpolicy myns/deny-all\n  palisade delete pod -n myns web-0 web-1\n  \
    palisade delete namespace myns\n  palisade delete cnp protect-kube-system")]
pub struct Args {
    /// KIND then one or more names: `networkpolicy NS/NAME`, `pod NS/NAME`, `namespace NAME`,
    /// `clusternetworkpolicy NAME`, `node NAME` (a name without `NS/` is taken in
    /// --namespace). Kinds: networkpolicy (netpol, np), pod (po, endpoint), namespace (ns),
    /// clusternetworkpolicy (cnp), node (no).
    #[arg(value_name = "KIND NAME", num_args = 0.., conflicts_with = "files")]
    pub target: Vec<String>,
    /// Delete the objects named in these manifests instead.
    #[arg(short = 'f', long = "filename", value_name = "PATH", num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Namespace for names given without `NS/`.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Skip objects that are not stored instead of failing.
    #[arg(long)]
    pub ignore_not_found: bool,
    #[command(flatten)]
    pub datastore: DatastoreArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = super::apply::Output::Text)]
    pub output: super::apply::Output,
}

/// An object to delete, as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Namespace(String),
    Pod {
        namespace: String,
        name: String,
    },
    Policy {
        namespace: String,
        name: String,
    },
    /// A ClusterNetworkPolicy, stored in the admin or the baseline tier.
    ClusterPolicy(String),
    Node(String),
}

impl Target {
    fn kind(&self) -> &'static str {
        match self {
            Target::Namespace(_) => "namespace",
            Target::Pod { .. } => "pod",
            Target::Policy { .. } => "networkpolicy",
            Target::ClusterPolicy(_) => "clusternetworkpolicy",
            Target::Node(_) => "node",
        }
    }

    fn name(&self) -> String {
        match self {
            Target::Namespace(n) | Target::ClusterPolicy(n) | Target::Node(n) => n.clone(),
            Target::Pod { namespace, name } | Target::Policy { namespace, name } => {
                format!("{namespace}/{name}")
            }
        }
    }
}

#[derive(Serialize)]
struct Outcome {
    kind: &'static str,
    name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    keys: Vec<String>,
    /// `deleted` or `not found`.
    result: &'static str,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let targets = if args.files.is_empty() {
        targets_from_words(&args.target, &args.namespace)?
    } else {
        targets_from_files(&args.files)?
    };
    ds::runtime()?.block_on(run_async(args, targets))
}

fn targets_from_words(words: &[String], default_ns: &str) -> Result<Vec<Target>> {
    let Some((kind, names)) = words.split_first() else {
        bail!("say what to delete: `palisade delete KIND NAME...` or `palisade delete -f PATH`");
    };
    if names.is_empty() {
        bail!("give at least one name after {kind}");
    }
    let split = |n: &str| match n.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (default_ns.to_string(), n.to_string()),
    };
    names
        .iter()
        .map(|n| {
            Ok(match kind_word(kind).as_str() {
                "networkpolicy" | "networkpolicies" | "netpol" | "netpols" | "np" | "policy"
                | "policies" => {
                    let (namespace, name) = split(n);
                    Target::Policy { namespace, name }
                }
                "pod" | "pods" | "po" | "endpoint" | "endpoints" | "ep" | "workloadendpoint"
                | "workloadendpoints" | "wep" => {
                    let (namespace, name) = split(n);
                    Target::Pod { namespace, name }
                }
                "namespace" | "namespaces" | "ns" => {
                    if n.contains('/') {
                        bail!("a namespace name has no `/`: {n}");
                    }
                    Target::Namespace(n.clone())
                }
                "clusternetworkpolicy" | "clusternetworkpolicies" | "cnp" | "cnps" => {
                    if n.contains('/') {
                        bail!("a ClusterNetworkPolicy is cluster-scoped: its name has no `/`: {n}");
                    }
                    Target::ClusterPolicy(n.clone())
                }
                "node" | "nodes" | "no" => {
                    if n.contains('/') {
                        bail!("a node name has no `/`: {n}");
                    }
                    Target::Node(n.clone())
                }
                other => bail!(
                    "unknown kind {other:?}: use networkpolicy, pod, namespace, \
                     clusternetworkpolicy or node"
                ),
            })
        })
        .collect()
}

/// A kind as the user typed it, lower-cased and without a kubectl-style API group
/// (`networkpolicies.networking.k8s.io` is `networkpolicies`).
pub fn kind_word(word: &str) -> String {
    let lower = word.to_ascii_lowercase();
    match lower.split_once('.') {
        Some((kind, _group)) => kind.to_string(),
        None => lower,
    }
}

fn targets_from_files(files: &[PathBuf]) -> Result<Vec<Target>> {
    let manifests = match input::read_manifests(files)? {
        Ok(m) => m,
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            bail!(
                "{} error(s) in the manifests; nothing was deleted",
                errors.len()
            );
        }
    };
    input::warn_skipped(&manifests);
    manifests
        .documents
        .iter()
        // A Pod that is no workload endpoint (finished, being deleted) was never stored by
        // `apply`: there is nothing to delete for it. A host-networked pod was (as a host
        // endpoint).
        .filter(|doc| match &doc.object {
            Object::Pod(p) if p.spec.host_network == Some(true) => {
                !matches!(palisade_model::convert::host_network_pod(p), Ok(None))
            }
            Object::Pod(p) => !matches!(palisade_model::convert::pod(p), Ok(None)),
            _ => true,
        })
        .map(|doc| {
            let meta = match &doc.object {
                Object::Namespace(n) => &n.metadata,
                Object::Pod(p) => &p.metadata,
                Object::NetworkPolicy(p) => &p.metadata,
                Object::ClusterNetworkPolicy(p) => &p.metadata,
                Object::Node(n) => &n.metadata,
            };
            let name = meta.name.clone().with_context(|| {
                format!("{}: {} has no metadata.name", doc.source, doc.object.kind())
            })?;
            let namespace = meta
                .namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".into());
            Ok(match &doc.object {
                Object::Namespace(_) => Target::Namespace(name),
                Object::Pod(_) => Target::Pod { namespace, name },
                Object::NetworkPolicy(_) => Target::Policy { namespace, name },
                Object::ClusterNetworkPolicy(_) => Target::ClusterPolicy(name),
                Object::Node(_) => Target::Node(name),
            })
        })
        .collect()
}

/// The stored keys of a target (a pod may be stored under more than one node).
async fn resolve(
    store: &dyn Datastore,
    endpoints: &[KeyValue],
    t: &Target,
) -> Result<Vec<KeyValue>> {
    let key = match t {
        Target::Pod { namespace, name } => {
            return Ok(ds::endpoint_keys_of(endpoints, namespace, name))
        }
        Target::Namespace(n) => keys::namespace(n)?,
        Target::Policy { namespace, name } => keys::policy(DEFAULT_TIER, Some(namespace), name)?,
        Target::Node(name) => keys::node(name)?,
        Target::ClusterPolicy(name) => {
            let mut found = Vec::new();
            for tier in [ADMIN_TIER, BASELINE_TIER] {
                let key = keys::policy(tier, None, name)?;
                let kv = store
                    .get(&key)
                    .await
                    .with_context(|| format!("cannot read {key}"))?;
                found.extend(kv);
            }
            return Ok(found);
        }
    };
    Ok(store
        .get(&key)
        .await
        .with_context(|| format!("cannot read {key}"))?
        .into_iter()
        .collect())
}

async fn run_async(args: Args, targets: Vec<Target>) -> Result<ExitCode> {
    let store = args.datastore.connect().await?;
    let endpoints = if targets.iter().any(|t| matches!(t, Target::Pod { .. })) {
        ds::list_endpoint_keys(store.as_ref()).await?
    } else {
        Vec::new()
    };
    let mut ops = Vec::new();
    let mut outcomes = Vec::new();
    let mut missing = Vec::new();
    for t in &targets {
        let found = resolve(store.as_ref(), &endpoints, t).await?;
        if found.is_empty() {
            missing.push(format!("{} {}", t.kind(), t.name()));
            outcomes.push(Outcome {
                kind: t.kind(),
                name: t.name(),
                keys: vec![],
                result: "not found",
            });
            continue;
        }
        for kv in &found {
            if let Ok(rec) = Record::decode(&kv.key, &kv.value) {
                if rec.owner != OWNER_APPLY {
                    bail!(
                        "{} {} is owned by {}; palisade delete does not remove it (nothing was deleted)",
                        t.kind(),
                        t.name(),
                        rec.owner
                    );
                }
            }
            if !ops.iter().any(|o: &Op| o.key() == kv.key) {
                ops.push(
                    Op::delete(kv.key.clone()).when(Precondition::ModRevision(kv.mod_revision)),
                );
            }
        }
        outcomes.push(Outcome {
            kind: t.kind(),
            name: t.name(),
            keys: found.into_iter().map(|kv| kv.key).collect(),
            result: "deleted",
        });
    }
    if !missing.is_empty() && !args.ignore_not_found {
        for m in &missing {
            eprintln!("error: {m} not found in {}", store.describe());
        }
        eprintln!("error: nothing was deleted (use --ignore-not-found to delete the rest)");
        return Ok(ExitCode::FAILURE);
    }
    let revision = if ops.is_empty() {
        None
    } else {
        Some(store.apply_batch(ops).await.map_err(|e| match e {
            StoreError::Conflict { key, .. } | StoreError::NotFound { key } => anyhow::anyhow!(
                "{} changed in the datastore while deleting; nothing was deleted, run delete again",
                ds::describe_key(&key)
            ),
            other => anyhow::Error::new(other).context("nothing was deleted"),
        })?)
    };
    match args.output {
        super::apply::Output::Json => {
            let v = serde_json::json!({ "revision": revision, "objects": outcomes });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        super::apply::Output::Text => {
            for o in &outcomes {
                println!("{} {} {}", o.kind, o.name, o.result);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
