//! `palisade apply -f PATH... --datastore URL`: validate every manifest first, then write
//! all objects in one atomic batch, and say per object whether it was created, updated or
//! unchanged. Objects owned by the Kubernetes controller are never touched.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use palisade_model::manifest::{Document, Object};
use palisade_model::{convert, validate::FieldError};
use palisade_store::{
    keys, Datastore, KeyValue, Op, Precondition, Record, StoreError, StoredObject, OWNER_APPLY,
};
use serde::Serialize;

use super::datastore_args::{self as ds, DatastoreArgs};
use super::whatif;
use crate::input;

#[derive(clap::Args)]
pub struct Args {
    /// Manifest files or directories (directories are read recursively for *.yaml, *.yml,
    /// *.json; `-` reads standard input). Namespaces, Pods, NetworkPolicies,
    /// ClusterNetworkPolicies and Nodes are stored; other kinds are skipped with a warning.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub datastore: DatastoreArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Validate and compare with the datastore, but write nothing; also says how many pod
    /// pairs the change would newly deny and newly allow (what-if against the stored state).
    #[arg(long)]
    pub dry_run: bool,
    /// Probes of the dry run's what-if, as PORT[/PROTO] or `icmp` (default: every port the
    /// stored and applied policies name, TCP/80 and ICMP; at most 16).
    #[arg(long = "probe", value_name = "PORT/PROTO", requires = "dry_run")]
    pub probes: Vec<palisade_engine::Probe>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// What happened to one object.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub kind: &'static str,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `created`, `updated`, `unchanged` or `skipped`.
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Serialize)]
struct Report<'a> {
    /// The datastore revision of the write (absent when nothing was written).
    revision: Option<i64>,
    dry_run: bool,
    /// With `--dry-run`: pairs the change would newly deny and allow.
    #[serde(skip_serializing_if = "Option::is_none")]
    what_if: Option<whatif::JsonSummary>,
    objects: &'a [Outcome],
}

pub fn run(args: Args) -> Result<ExitCode> {
    ds::runtime()?.block_on(run_async(args))
}

async fn run_async(args: Args) -> Result<ExitCode> {
    // 1. Everything is read and validated before the datastore is even contacted.
    // Parse and validation errors of every file are listed together.
    let (manifests, checked) = input::check(&args.files)?;
    input::warn_skipped(&manifests);
    if let Err(errors) = checked {
        return Ok(invalid(errors.iter().map(|e| e.to_string())));
    }
    let mut desired = desired_objects(&manifests.documents)?;

    // 2. Compare with what is stored and plan one batch.
    let store = args.datastore.connect().await?;
    let plan = plan(store.as_ref(), &mut desired).await?;
    let what_if = args
        .dry_run
        .then(|| dry_run_what_if(&args, &plan, &desired));

    // 3. Write it, all or nothing.
    let revision = if plan.ops.is_empty() || args.dry_run {
        None
    } else {
        let n = plan.ops.len();
        Some(store.apply_batch(plan.ops).await.map_err(|e| {
            match e {
                StoreError::Conflict { key, .. } | StoreError::AlreadyExists { key } => {
                    anyhow::anyhow!(
                "{} changed in the datastore while applying; nothing was written, run apply again",
                ds::describe_key(&key)
            )
                }
                other => anyhow::Error::new(other)
                    .context(format!("cannot write {n} object(s); nothing was written")),
            }
        })?)
    };
    print(&args, revision, what_if, &plan.outcomes)?;
    Ok(ExitCode::SUCCESS)
}

/// The what-if of a dry run: the stored state against the stored state with the applied
/// objects laid over it.
fn dry_run_what_if(
    args: &Args,
    plan: &Plan,
    desired: &[Desired],
) -> (palisade_engine::WhatIf, Vec<palisade_engine::Probe>) {
    let mut now = palisade_model::Cluster::new();
    whatif::upsert_stored(&mut now, &plan.current);
    let mut then = now.clone();
    whatif::upsert_stored(&mut then, desired.iter().filter_map(|d| d.object.as_ref()));
    let probes = if args.probes.is_empty() {
        whatif::default_probes(&now, &then)
    } else {
        args.probes.clone()
    };
    (palisade_engine::what_if(&now, &then, &probes), probes)
}

/// Prints every error and the "nothing written" summary; exit code 1.
fn invalid(errors: impl Iterator<Item = String>) -> ExitCode {
    let mut n = 0;
    for e in errors {
        eprintln!("error: {e}");
        n += 1;
    }
    eprintln!("error: {n} error(s) in the manifests; nothing was written");
    ExitCode::FAILURE
}

/// One document's object, or why it has none.
struct Desired {
    describe: String,
    source: String,
    object: Option<StoredObject>,
}

fn field_errors(describe: &str, errors: Vec<FieldError>) -> anyhow::Error {
    let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
    anyhow::anyhow!("{describe}: {}", list.join("; "))
}

/// The objects `apply` would store for these documents (pods that are no workload endpoint
/// left out), for what-if.
pub fn stored_objects(documents: &[Document]) -> Result<Vec<StoredObject>> {
    Ok(desired_objects(documents)?
        .into_iter()
        .filter_map(|d| d.object)
        .collect())
}

fn desired_objects(documents: &[Document]) -> Result<Vec<Desired>> {
    let mut out = Vec::with_capacity(documents.len());
    for doc in documents {
        let describe = doc.object.describe();
        let object = match &doc.object {
            Object::Namespace(n) => Some(StoredObject::Namespace(
                convert::namespace(n).map_err(|e| field_errors(&describe, e))?,
            )),
            Object::Pod(p) if p.spec.host_network == Some(true) => convert::host_network_pod(p)
                .map_err(|e| field_errors(&describe, e))?
                .map(StoredObject::HostEndpoint),
            Object::Pod(p) => convert::pod(p)
                .map_err(|e| field_errors(&describe, e))?
                .map(StoredObject::Endpoint),
            Object::NetworkPolicy(np) => Some(StoredObject::Policy(
                convert::network_policy(np).map_err(|e| field_errors(&describe, e))?,
            )),
            Object::ClusterNetworkPolicy(cnp) => {
                let (policy, names) =
                    convert::cluster_network_policy(cnp).map_err(|e| field_errors(&describe, e))?;
                Some(StoredObject::policy(policy, names))
            }
            Object::Node(n) => Some(StoredObject::Node(
                convert::node(n).map_err(|e| field_errors(&describe, e))?,
            )),
        };
        out.push(Desired {
            describe,
            source: doc.source.to_string(),
            object,
        });
    }
    Ok(out)
}

/// Host-networked pods have their node's addresses (`convert::node_addresses_for_pod`):
/// the node of the same apply, else the stored one; without either they keep their own.
fn give_host_endpoints_node_addresses(desired: &mut [Desired], stored: &HashMap<String, KeyValue>) {
    let mut nodes: HashMap<String, palisade_model::Node> = stored
        .values()
        .filter_map(|kv| match StoredObject::decode(&kv.key, &kv.value) {
            Ok(StoredObject::Node(n)) => Some((n.name.clone(), n)),
            _ => None,
        })
        .collect();
    for d in desired.iter() {
        if let Some(StoredObject::Node(n)) = &d.object {
            nodes.insert(n.name.clone(), n.clone());
        }
    }
    for d in desired.iter_mut() {
        if let Some(StoredObject::HostEndpoint(ep)) = &mut d.object {
            let node = ep.node.as_ref().and_then(|n| nodes.get(n));
            let addresses = node
                .map(convert::node_addresses_for_pod)
                .unwrap_or_default();
            if !addresses.is_empty() {
                ep.ips = addresses;
            }
        }
    }
}

/// Host-networked pods stored by an earlier apply on a node this apply changes take the
/// node's new addresses (readers would take them anyway; this keeps `get pods` true).
fn follow_node_addresses(
    desired: &[Desired],
    stored_pods: &[KeyValue],
    ops: &mut Vec<Op>,
    outcomes: &mut Vec<Outcome>,
) {
    // Keys this apply writes or deletes already.
    let written: std::collections::HashSet<String> =
        ops.iter().map(|op| op.key().to_string()).collect();
    let nodes: HashMap<&str, Vec<std::net::IpAddr>> = desired
        .iter()
        .filter_map(|d| match &d.object {
            Some(StoredObject::Node(n)) => {
                Some((n.name.as_str(), convert::node_addresses_for_pod(n)))
            }
            _ => None,
        })
        .filter(|(_, addresses)| !addresses.is_empty())
        .collect();
    if nodes.is_empty() {
        return;
    }
    for kv in stored_pods {
        if written.contains(&kv.key) {
            continue;
        }
        let Ok(Record {
            owner,
            object: StoredObject::HostEndpoint(mut ep),
        }) = Record::decode(&kv.key, &kv.value)
        else {
            continue;
        };
        let Some(addresses) = ep.node.as_deref().and_then(|n| nodes.get(n)) else {
            continue;
        };
        if owner != OWNER_APPLY || ep.ips == *addresses {
            continue;
        }
        ep.ips = addresses.clone();
        let object = StoredObject::HostEndpoint(ep);
        let Ok(value) = object.encode(OWNER_APPLY) else {
            continue;
        };
        ops.push(Op::put(kv.key.clone(), value).when(Precondition::ModRevision(kv.mod_revision)));
        outcomes.push(Outcome {
            kind: ds::kind_word(&object),
            name: ds::object_name(&object),
            key: Some(kv.key.clone()),
            result: "updated",
            note: Some("hostNetwork: its node's new address".into()),
        });
    }
}

struct Plan {
    ops: Vec<Op>,
    outcomes: Vec<Outcome>,
    /// What the datastore holds now (namespaces, endpoints, policies), for the dry run.
    current: Vec<StoredObject>,
}

async fn list_raw(store: &dyn Datastore, prefix: &str) -> Result<HashMap<String, KeyValue>> {
    Ok(store
        .list(prefix)
        .await
        .with_context(|| format!("cannot list {prefix} in {}", store.describe()))?
        .items
        .into_iter()
        .map(|kv| (kv.key.clone(), kv))
        .collect())
}

/// Refuses to change an object someone else owns.
fn check_owner(kv: &KeyValue) -> Result<Option<Record>> {
    match Record::decode(&kv.key, &kv.value) {
        Ok(rec) if rec.owner != OWNER_APPLY => bail!(
            "{} is owned by {}; palisade apply does not change it (nothing was written)",
            ds::describe_key(&kv.key),
            rec.owner
        ),
        Ok(rec) => Ok(Some(rec)),
        // An unreadable value under our key is replaced.
        Err(_) => Ok(None),
    }
}

async fn plan(store: &dyn Datastore, desired: &mut [Desired]) -> Result<Plan> {
    let mut existing = list_raw(store, keys::NAMESPACES).await?;
    existing.extend(list_raw(store, keys::POLICIES).await?);
    existing.extend(list_raw(store, keys::NODES).await?);
    let endpoints: Vec<KeyValue> = ds::list_endpoint_keys(store).await?;
    existing.extend(endpoints.iter().map(|kv| (kv.key.clone(), kv.clone())));
    give_host_endpoints_node_addresses(desired, &existing);
    let desired = &*desired;

    let mut seen: HashMap<String, &str> = HashMap::new();
    let mut ops = Vec::new();
    let mut outcomes = Vec::new();
    for d in desired {
        let Some(object) = &d.object else {
            let (kind, name) = d.describe.split_once(' ').unwrap_or(("Pod", &d.describe));
            outcomes.push(Outcome {
                kind: if kind == "Pod" { "pod" } else { "object" },
                name: name.to_string(),
                key: None,
                result: "skipped",
                note: Some("not a workload endpoint (finished or being deleted)".into()),
            });
            continue;
        };
        let key = object
            .key()
            .with_context(|| format!("{} ({}) cannot be stored", d.describe, d.source))?;
        if let Some(first) = seen.insert(key.clone(), &d.source) {
            bail!(
                "{} is given twice ({first} and {}); nothing was written",
                d.describe,
                d.source
            );
        }
        let mut note = None;
        // A pod that moved to another node leaves its old key behind: delete it. So does a
        // pod that became host-networked or stopped being (endpoints/ ↔ hostendpoints/).
        let mut moved = false;
        if let StoredObject::Endpoint(ep) | StoredObject::HostEndpoint(ep) = object {
            for old in ds::endpoint_keys_of(&endpoints, &ep.id.namespace, &ep.id.name) {
                if old.key != key {
                    check_owner(&old)?;
                    note = Some(format!("moved from {}", old.key));
                    ops.push(
                        Op::delete(old.key.clone())
                            .when(Precondition::ModRevision(old.mod_revision)),
                    );
                    moved = true;
                }
            }
        }
        // A ClusterNetworkPolicy that changed tier leaves its old key behind: delete it.
        if let Some(p) = object.as_policy() {
            if ds::is_cluster_network_policy(&p.id.tier, p.id.namespace.as_deref()) {
                for tier in [palisade_model::ADMIN_TIER, palisade_model::BASELINE_TIER] {
                    let old_key = keys::policy(tier, None, &p.id.name)?;
                    if let (true, Some(old)) = (old_key != key, existing.get(&old_key)) {
                        check_owner(old)?;
                        note = Some(format!("moved from tier {tier}"));
                        ops.push(
                            Op::delete(old.key.clone())
                                .when(Precondition::ModRevision(old.mod_revision)),
                        );
                        moved = true;
                    }
                }
            }
        }
        let value = object.encode(OWNER_APPLY)?;
        let result = match existing.get(&key) {
            None => {
                ops.push(Op::put(key.clone(), value).when(Precondition::Absent));
                if moved {
                    "updated"
                } else {
                    "created"
                }
            }
            Some(kv) => match check_owner(kv)? {
                Some(rec) if rec.object == *object => "unchanged",
                _ => {
                    ops.push(
                        Op::put(key.clone(), value)
                            .when(Precondition::ModRevision(kv.mod_revision)),
                    );
                    "updated"
                }
            },
        };
        let host_network = matches!(object, StoredObject::HostEndpoint(_));
        outcomes.push(Outcome {
            kind: ds::kind_word(object),
            name: ds::object_name(object),
            key: Some(key),
            result,
            note: note.or_else(|| host_network.then(|| "hostNetwork".to_string())),
        });
    }
    follow_node_addresses(desired, &endpoints, &mut ops, &mut outcomes);
    let current = existing
        .values()
        .filter_map(|kv| StoredObject::decode(&kv.key, &kv.value).ok())
        .collect();
    Ok(Plan {
        ops,
        outcomes,
        current,
    })
}

fn print(
    args: &Args,
    revision: Option<i64>,
    what_if: Option<(palisade_engine::WhatIf, Vec<palisade_engine::Probe>)>,
    outcomes: &[Outcome],
) -> Result<()> {
    match args.output {
        Output::Json => {
            let report = Report {
                revision,
                dry_run: args.dry_run,
                what_if: what_if.as_ref().map(|(w, p)| whatif::json_summary(w, p)),
                objects: outcomes,
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Output::Text => {
            if let Some((w, probes)) = &what_if {
                println!("{} (dry run)", whatif::summary(w, probes));
            }
            let suffix = if args.dry_run { " (dry run)" } else { "" };
            for o in outcomes {
                match &o.note {
                    Some(n) => println!("{} {} {}{suffix} ({n})", o.kind, o.name, o.result),
                    None => println!("{} {} {}{suffix}", o.kind, o.name, o.result),
                }
            }
        }
    }
    Ok(())
}
