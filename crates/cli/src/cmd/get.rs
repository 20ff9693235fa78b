//! `palisade get networkpolicies|namespaces|endpoints|status [-n NS] [-o table|wide|json|yaml]`:
//! what the datastore holds, as a table (the default) or as the stored objects.

use std::process::ExitCode;

use anyhow::Result;
use palisade_store::{keys, StoredObject};
use serde::Serialize;

use super::datastore_args::{self as ds, DatastoreArgs, Stored};

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  palisade get networkpolicies -n myns\n  \
    palisade get endpoints -o wide\n  palisade get namespaces -o yaml")]
pub struct Args {
    /// What to list: networkpolicies (networkpolicy, netpol, np), namespaces (ns),
    /// endpoints (ep, pods, po, workloadendpoints), status (agent status per node).
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
    Namespaces,
    Endpoints,
    Status,
}

fn parse_kind(word: &str) -> Result<Kind> {
    Ok(match super::delete::kind_word(word).as_str() {
        "networkpolicies" | "networkpolicy" | "netpol" | "netpols" | "np" | "policies"
        | "policy" => Kind::Policies,
        "namespaces" | "namespace" | "ns" => Kind::Namespaces,
        "endpoints" | "endpoint" | "ep" | "pods" | "pod" | "po" | "workloadendpoints"
        | "workloadendpoint" | "wep" => Kind::Endpoints,
        "status" | "statuses" => Kind::Status,
        other => anyhow::bail!(
            "unknown kind {other:?}: use networkpolicies, namespaces, endpoints or status"
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
}

pub fn run(args: Args) -> Result<ExitCode> {
    let kind = parse_kind(&args.kind)?;
    ds::runtime()?.block_on(run_async(args, kind))
}

async fn run_async(args: Args, kind: Kind) -> Result<ExitCode> {
    let store = args.datastore.connect().await?;
    let prefix = match kind {
        Kind::Policies => keys::POLICIES,
        Kind::Namespaces => keys::NAMESPACES,
        Kind::Endpoints => keys::ENDPOINTS,
        Kind::Status => keys::STATUS,
    };
    let mut items = ds::list_objects(store.as_ref(), prefix).await?;
    if let Some(ns) = &args.namespace {
        items.retain(|s| match &s.record.object {
            StoredObject::Policy(p) => p.id.namespace.as_deref() == Some(ns.as_str()),
            StoredObject::Endpoint(e) => e.id.namespace == *ns,
            _ => true,
        });
    }
    // Endpoints are keyed by node first; show them by namespace/name.
    items.sort_by_key(|s| (ds::object_name(&s.record.object), s.kv.key.clone()));
    match args.output {
        Output::Json | Output::Yaml => {
            let out: Vec<Item> = items.iter().map(item).collect::<Result<_>>()?;
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
                print_table(&table(kind, &items, args.output == Output::Wide));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn item(s: &Stored) -> Result<Item> {
    let spec = match &s.record.object {
        StoredObject::Namespace(o) => serde_json::to_value(o),
        StoredObject::Endpoint(o) => serde_json::to_value(o),
        // `staged` always shown (the model leaves it out when false).
        StoredObject::Policy(o) => serde_json::to_value(o).map(|mut v| {
            if let Some(obj) = v.as_object_mut() {
                obj.insert("staged".into(), o.staged.into());
            }
            v
        }),
        StoredObject::Status(o) => serde_json::to_value(o),
    }?;
    Ok(Item {
        key: s.kv.key.clone(),
        revision: s.kv.mod_revision,
        owner: s.record.owner.clone(),
        kind: s.record.object.kind(),
        spec,
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

fn table(kind: Kind, items: &[Stored], wide: bool) -> Vec<Vec<String>> {
    let mut header: Vec<&str> = match kind {
        Kind::Policies => vec!["NAMESPACE", "NAME", "TIER", "ORDER", "TYPES", "STAGED"],
        Kind::Namespaces => vec!["NAME", "LABELS"],
        Kind::Endpoints => vec!["NAMESPACE", "NAME", "NODE", "IPS"],
        Kind::Status => vec!["NODE", "IN-SYNC", "REVISION", "AGE", "LAST-ERROR"],
    };
    if wide {
        header.extend(match kind {
            Kind::Policies => vec!["SELECTOR", "INGRESS-RULES", "EGRESS-RULES"],
            Kind::Endpoints => vec!["LABELS", "PORTS"],
            _ => vec![],
        });
        header.extend(["OWNER", "REVISION"]);
        if kind == Kind::Status {
            header.pop(); // REVISION is already a column
        }
    }
    let mut rows = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    for s in items {
        let mut row: Vec<String> = match &s.record.object {
            StoredObject::Policy(p) => {
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
                    r.extend([p.selector.to_string(), n(&p.ingress), n(&p.egress)]);
                }
                r
            }
            StoredObject::Namespace(n) => vec![n.name.clone(), labels(&n.labels, !wide)],
            StoredObject::Endpoint(e) => {
                let ips: Vec<String> = e.ips.iter().map(ToString::to_string).collect();
                let mut r = vec![
                    e.id.namespace.clone(),
                    e.id.name.clone(),
                    e.node.clone().unwrap_or_else(|| "<none>".into()),
                    if ips.is_empty() {
                        "<none>".into()
                    } else {
                        ips.join(",")
                    },
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
