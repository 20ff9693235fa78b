//! `palisade validate`: read manifests, check every object against the NetworkPolicy contract
//! (SEMANTICS.md, "Invalid input") and the ClusterNetworkPolicy CRD's rules, and list every
//! error, or summarize what was read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;

use palisade_model::manifest::{Document, ManifestError};
use serde::Serialize;

use crate::input;

#[derive(clap::Args)]
#[command(after_help = "\
Exit status: 0 when every object is valid, 1 when any is invalid or a file cannot be read.

Examples:
  palisade validate -f examples/seed
  palisade validate -f ns.yaml policy.yaml -o json
  kubectl get netpol -A -o yaml | palisade validate -f -")]
pub struct Args {
    /// Manifest files or directories (searched recursively for *.yaml, *.yml, *.json);
    /// `-` reads standard input. Repeat the flag or give several paths after it.
    #[arg(short = 'f', long = "filename", value_name = "PATH", num_args = 1.., required = true)]
    pub files: Vec<PathBuf>,
    /// Output format: `text` (summary on stdout, errors on stderr) or `json` (one object on
    /// stdout).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (manifests, result) = input::check(&args.files)?;
    if args.output == Output::Text {
        input::warn_skipped(&manifests);
    }
    match result {
        Ok(cluster) => {
            let summary = Summary::new(
                &manifests.documents,
                cluster.endpoints.len() - cluster.host_network.len(),
                cluster.host_network.len(),
                &manifests.skipped,
            );
            match args.output {
                Output::Text => println!("{}", summary.text()),
                Output::Json => println!("{}", serde_json::to_string_pretty(&summary)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            match args.output {
                Output::Text => {
                    for e in &errors {
                        eprintln!("error: {e}");
                    }
                    eprintln!("invalid: {} error(s); fix them and run again", errors.len());
                }
                Output::Json => {
                    let report = Invalid {
                        valid: false,
                        errors: errors.iter().map(JsonError::from).collect(),
                    };
                    println!("{}", serde_json::to_string_pretty(&report)?);
                }
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// What a valid batch holds: distinct objects by kind (a later document with the same kind,
/// namespace and name replaces the earlier one).
#[derive(Serialize)]
struct Summary {
    valid: bool,
    namespaces: usize,
    pods: usize,
    networkpolicies: usize,
    clusternetworkpolicies: usize,
    nodes: usize,
    /// Pods that are workload endpoints (not host-networked, finished or being deleted).
    endpoints: usize,
    /// Host-networked pods that are running: flow ends (with their node's address), never
    /// selected by a policy.
    host_network_pods: usize,
    skipped: BTreeMap<String, usize>,
}

impl Summary {
    fn new(
        documents: &[Document],
        endpoints: usize,
        host_network_pods: usize,
        skipped: &BTreeMap<String, usize>,
    ) -> Self {
        let mut seen: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for doc in documents {
            seen.entry(doc.object.kind())
                .or_default()
                .insert(doc.object.describe());
        }
        let count = |kind: &str| seen.get(kind).map_or(0, BTreeSet::len);
        Summary {
            valid: true,
            namespaces: count("Namespace"),
            pods: count("Pod"),
            networkpolicies: count("NetworkPolicy"),
            clusternetworkpolicies: count("ClusterNetworkPolicy"),
            nodes: count("Node"),
            endpoints,
            host_network_pods,
            skipped: skipped.clone(),
        }
    }

    fn text(&self) -> String {
        let mut s = format!(
            "ok: {} namespaces, {} pods, {} networkpolicies",
            self.namespaces, self.pods, self.networkpolicies
        );
        if self.clusternetworkpolicies > 0 {
            s.push_str(&format!(
                ", {} clusternetworkpolicies",
                self.clusternetworkpolicies
            ));
        }
        if self.nodes > 0 {
            s.push_str(&format!(", {} nodes", self.nodes));
        }
        if self.host_network_pods > 0 {
            s.push_str(&format!(
                " ({} host-networked pod(s): flow ends with their node's address, never selected)",
                self.host_network_pods
            ));
        }
        let left_out = self
            .pods
            .saturating_sub(self.endpoints + self.host_network_pods);
        if left_out > 0 {
            s.push_str(&format!(
                " ({left_out} pod(s) left out: finished or being deleted)"
            ));
        }
        s
    }
}

#[derive(Serialize)]
struct Invalid {
    valid: bool,
    errors: Vec<JsonError>,
}

#[derive(Serialize)]
struct JsonError {
    file: String,
    document: usize,
    item: Option<usize>,
    object: Option<String>,
    field: String,
    message: String,
}

impl From<&ManifestError> for JsonError {
    fn from(e: &ManifestError) -> Self {
        JsonError {
            file: e.location.file.clone(),
            document: e.location.document,
            item: e.location.item,
            object: e.object.clone(),
            field: e.field.clone(),
            message: e.message.clone(),
        }
    }
}
