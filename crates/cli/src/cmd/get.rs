//! `palisade get networkpolicies|clusternetworkpolicies|namespaces|endpoints|nodes|status
//! [-n NS] [-o table|wide|json|yaml]`: what the datastore holds, as a table (the default) or as
//! the stored objects. For policies (NetworkPolicies and ClusterNetworkPolicies), `-o wide` and
//! `-o json|yaml` add the realization: on how many of the nodes that host a selected pod the
//! agents have programmed the policy's current revision.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Result;
use palisade_agent::realization::{realization, Realization};
use palisade_agent::NodeStatus;
use palisade_store::{keys, StoredObject};
use serde::Serialize;

use super::datastore_args::{self as ds, DatastoreArgs, Stored};

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  palisade get networkpolicies -n myns\n  \
    palisade get endpoints -o wide\n  palisade get namespaces -o yaml")]
pub struct Args {
    /// What to list: networkpolicies (networkpolicy, netpol, np), clusternetworkpolicies
    /// (clusternetworkpolicy, cnp), namespaces (ns), endpoints (ep, pods, po,
    /// workloadendpoints; host-networked pods too, marked in the HOSTNETWORK column), nodes
    /// (node, no), status (agent status per node).
    #[arg(value_name = "KIND")]
    pub kind: String,
    /// Only objects of this namespace (default: all namespaces).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(flatten)]
    pub datastore: DatastoreArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Wide,
    Json,
    Yaml,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Policies,
    ClusterPolicies,
    Namespaces,
    Endpoints,
    Nodes,
    Status,
}

fn parse_kind(word: &str) -> Result<Kind> {
    Ok(match super::delete::kind_word(word).as_str() {
        "networkpolicies" | "networkpolicy" | "netpol" | "netpols" | "np" | "policies"
        | "policy" => Kind::Policies,
        "namespaces" | "namespace" | "ns" => Kind::Namespaces,
        "endpoints" | "endpoint" | "ep" | "pods" | "pod" | "po" | "workloadendpoints"
        | "workloadendpoint" | "wep" => Kind::Endpoints,
        "clusternetworkpolicies" | "clusternetworkpolicy" | "cnp" | "cnps" => Kind::ClusterPolicies,
        "nodes" | "node" | "no" => Kind::Nodes,
        "status" | "statuses" => Kind::Status,
        other => anyhow::bail!(
            "unknown kind {other:?}: use networkpolicies, clusternetworkpolicies, namespaces, \
             endpoints, nodes or status"
        ),
    })
}

/// One object as `-o json|yaml` prints it.
#[derive(Serialize)]
struct Item {
    key: String,
    revision: i64,
    owner: String,
    kind: &'static str,
    spec: serde_json::Value,
    /// Policies: on which of the nodes that host a selected pod the agents have programmed
    /// this revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    realization: Option<Realization>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let kind = parse_kind(&args.kind)?;
    ds::runtime()?.block_on(run_async(args, kind))
}

async fn run_async(args: Args, kind: Kind) -> Result<ExitCode> {
    let store = args.datastore.connect().await?;
    let prefixes: &[&str] = match kind {
        Kind::Policies | Kind::ClusterPolicies => &[keys::POLICIES],
        Kind::Namespaces => &[keys::NAMESPACES],
        // Pods: workload endpoints and host-networked pods.
        Kind::Endpoints => &[keys::ENDPOINTS, keys::HOST_ENDPOINTS],
        Kind::Nodes => &[keys::NODES],
        Kind::Status => &[keys::STATUS],
    };
    let mut items = Vec::new();
    for prefix in prefixes {
        items.extend(ds::list_objects(store.as_ref(), prefix).await?);
    }
    // NetworkPolicies and ClusterNetworkPolicies share the policies/ prefix.
    items.retain(|s| match s.record.object.as_policy() {
        Some(p) => {
            let cnp = ds::is_cluster_network_policy(&p.id.tier, p.id.namespace.as_deref());
            cnp == (kind == Kind::ClusterPolicies)
        }
        None => true,
    });
    if let Some(ns) = &args.namespace {
        items.retain(|s| match &s.record.object {
            StoredObject::Policy(p) | StoredObject::NamedPolicy(p, _) => {
                p.id.namespace.as_deref() == Some(ns.as_str())
            }
            StoredObject::Endpoint(e) | StoredObject::HostEndpoint(e) => e.id.namespace == *ns,
            _ => true,
        });
    }
    // Endpoints are keyed by node first; show them by namespace/name.
    items.sort_by_key(|s| (ds::object_name(&s.record.object), s.kv.key.clone()));
    let realized =
        if matches!(kind, Kind::Policies | Kind::ClusterPolicies) && args.output != Output::Table {
            realizations(store.as_ref(), &items).await?
        } else {
            HashMap::new()
        };
    match args.output {
        Output::Json | Output::Yaml => {
            let out: Vec<Item> = items
                .iter()
                .map(|s| item(s, realized.get(&s.kv.key).cloned()))
                .collect::<Result<_>>()?;
            if args.output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print!("{}", serde_yaml::to_string(&out)?);
            }
        }
        Output::Table | Output::Wide => {
            if items.is_empty() {
                eprintln!("no {} found in {}", args.kind, store.describe());
            } else {
                print_table(&table(kind, &items, args.output == Output::Wide, &realized));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The realization of every policy of `items`, by key: the cluster (namespaces and
/// endpoints) and the agents' statuses, read now.
async fn realizations(
    store: &dyn palisade_store::Datastore,
    items: &[Stored],
) -> Result<HashMap<String, Realization>> {
    let cluster = crate::source::load_live(store).await?;
    let listing = store.list(keys::STATUS).await?;
    let statuses: Vec<NodeStatus> = listing
        .items
        .iter()
        .filter_map(|kv| NodeStatus::decode(&kv.key, &kv.value).ok())
        .collect();
    Ok(items
        .iter()
        .filter_map(|s| {
            let p = s.record.object.as_policy()?;
            Some((
                s.kv.key.clone(),
                realization(p, s.kv.mod_revision, &cluster, &statuses),
            ))
        })
        .collect())
}

fn item(s: &Stored, realization: Option<Realization>) -> Result<Item> {
    let spec = match &s.record.object {
        StoredObject::Namespace(o) => serde_json::to_value(o),
        StoredObject::Endpoint(o) | StoredObject::HostEndpoint(o) => serde_json::to_value(o),
        // `staged` always shown (the model leaves it out when false); rule names as stored.
        StoredObject::Policy(o) | StoredObject::NamedPolicy(o, _) => {
            let stored: serde_json::Value = serde_json::from_slice(&s.kv.value)?;
            let mut v = stored["spec"].clone();
            if let Some(obj) = v.as_object_mut() {
                obj.insert("staged".into(), o.staged.into());
            }
            Ok(v)
        }
        StoredObject::Status(o) => serde_json::to_value(o),
        StoredObject::Node(o) => serde_json::to_value(o),
    }?;
    Ok(Item {
        key: s.kv.key.clone(),
        revision: s.kv.mod_revision,
        owner: s.record.owner.clone(),
        kind: s.record.object.kind(),
        spec,
        realization,
    })
}

fn labels(l: &palisade_model::Labels, skip_name_label: bool) -> String {
    let v: Vec<String> = l
        .iter()
        .filter(|(k, _)| !(skip_name_label && k.as_str() == "kubernetes.io/metadata.name"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if v.is_empty() {
        "<none>".into()
    } else {
        v.join(",")
    }
}

fn table(
    kind: Kind,
    items: &[Stored],
    wide: bool,
    realized: &HashMap<String, Realization>,
) -> Vec<Vec<String>> {
    let mut header: Vec<&str> = match kind {
        Kind::Policies => vec!["NAMESPACE", "NAME", "TIER", "ORDER", "TYPES", "STAGED"],
        Kind::ClusterPolicies => vec![
            "NAME",
            "TIER",
            "PRIORITY",
            "INGRESS-RULES",
            "EGRESS-RULES",
            "STAGED",
        ],
        Kind::Namespaces => vec!["NAME", "LABELS"],
        Kind::Endpoints => vec!["NAMESPACE", "NAME", "NODE", "IPS", "HOSTNETWORK"],
        Kind::Nodes => vec!["NAME", "ADDRESSES"],
        Kind::Status => vec!["NODE", "IN-SYNC", "REVISION", "AGE", "LAST-ERROR"],
    };
    if wide {
        header.extend(match kind {
            Kind::Policies => vec!["SELECTOR", "INGRESS-RULES", "EGRESS-RULES", "PROGRAMMED"],
            Kind::ClusterPolicies => vec!["NAMESPACES", "PODS", "PROGRAMMED"],
            Kind::Endpoints => vec!["LABELS", "PORTS"],
            Kind::Nodes => vec!["LABELS"],
            _ => vec![],
        });
        header.extend(["OWNER", "REVISION"]);
        if kind == Kind::Status {
            header.pop(); // REVISION is already a column
        }
    }
    let mut rows = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    for s in items {
        let rules = |r: &Option<Vec<palisade_model::Rule>>| {
            r.as_ref().map_or("-".to_string(), |r| r.len().to_string())
        };
        let mut row: Vec<String> = match &s.record.object {
            StoredObject::Policy(p) | StoredObject::NamedPolicy(p, _)
                if kind == Kind::ClusterPolicies =>
            {
                let tier = match p.id.tier.as_str() {
                    palisade_model::ADMIN_TIER => "Admin".to_string(),
                    palisade_model::BASELINE_TIER => "Baseline".to_string(),
                    other => other.to_string(),
                };
                let mut r = vec![
                    p.id.name.clone(),
                    tier,
                    p.order.to_string(),
                    rules(&p.ingress),
                    rules(&p.egress),
                    p.staged.to_string(),
                ];
                if wide {
                    let programmed = realized
                        .get(&s.kv.key)
                        .map_or("-".to_string(), Realization::ratio);
                    r.extend([
                        p.namespace_selector.to_string(),
                        p.selector.to_string(),
                        programmed,
                    ]);
                }
                r
            }
            StoredObject::Node(n) => {
                let ips: Vec<String> = n.addresses.iter().map(ToString::to_string).collect();
                let mut r = vec![
                    n.name.clone(),
                    if ips.is_empty() {
                        "<none>".into()
                    } else {
                        ips.join(",")
                    },
                ];
                if wide {
                    r.push(labels(&n.labels, false));
                }
                r
            }
            StoredObject::Policy(p) | StoredObject::NamedPolicy(p, _) => {
                let types: Vec<&str> = [
                    (p.ingress.is_some(), "Ingress"),
                    (p.egress.is_some(), "Egress"),
                ]
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, t)| *t)
                .collect();
                let mut r = vec![
                    p.id.namespace.clone().unwrap_or_else(|| "<global>".into()),
                    p.id.name.clone(),
                    p.id.tier.clone(),
                    p.order.to_string(),
                    if types.is_empty() {
                        "<none>".into()
                    } else {
                        types.join(",")
                    },
                    p.staged.to_string(),
                ];
                if wide {
                    let n = |r: &Option<Vec<palisade_model::Rule>>| {
                        r.as_ref().map_or("-".to_string(), |r| r.len().to_string())
                    };
                    let programmed = realized
                        .get(&s.kv.key)
                        .map_or("-".to_string(), Realization::ratio);
                    r.extend([
                        p.selector.to_string(),
                        n(&p.ingress),
                        n(&p.egress),
                        programmed,
                    ]);
                }
                r
            }
            StoredObject::Namespace(n) => vec![n.name.clone(), labels(&n.labels, !wide)],
            StoredObject::Endpoint(e) | StoredObject::HostEndpoint(e) => {
                let ips: Vec<String> = e.ips.iter().map(ToString::to_string).collect();
                let host_network = matches!(s.record.object, StoredObject::HostEndpoint(_));
                let mut r = vec![
                    e.id.namespace.clone(),
                    e.id.name.clone(),
                    e.node.clone().unwrap_or_else(|| "<none>".into()),
                    if ips.is_empty() {
                        "<none>".into()
                    } else {
                        ips.join(",")
                    },
                    host_network.to_string(),
                ];
                if wide {
                    let ports: Vec<String> = e
                        .ports
                        .iter()
                        .map(|p| {
                            let proto = format!("{:?}", p.protocol).to_uppercase();
                            if p.name.is_empty() {
                                format!("{}/{proto}", p.port)
                            } else {
                                format!("{}:{}/{proto}", p.name, p.port)
                            }
                        })
                        .collect();
                    r.extend([
                        labels(&e.labels, false),
                        if ports.is_empty() {
                            "<none>".into()
                        } else {
                            ports.join(",")
                        },
                    ]);
                }
                r
            }
            StoredObject::Status(st) => vec![
                st.node.clone(),
                st.in_sync.to_string(),
                st.revision.to_string(),
                // How long ago the agent wrote it: a stale status is a stopped agent.
                super::agent::age(palisade_agent::status::now_millis().saturating_sub(st.updated)),
                st.last_error.clone().unwrap_or_else(|| "<none>".into()),
            ],
        };
        if wide {
            row.push(s.record.owner.clone());
            if kind != Kind::Status {
                row.push(s.kv.mod_revision.to_string());
            }
        }
        rows.push(row);
    }
    rows
}

fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        println!("{}", line.trim_end());
    }
}
