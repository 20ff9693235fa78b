//! `palisade lab up -f PATH... [--nodes N] [--dataplane D] [--datastore URL] [--cni C]
//! [--ip-family F] [--endpoint-match M] [--name NAME]`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use palisade_lab::{LabNames, UpOptions};

use super::{require_root, status, Output};
use crate::input;
use crate::source::UsageError;

#[derive(clap::Args)]
pub struct UpArgs {
    /// Manifests (files or directories): Namespaces, Nodes (each becomes a lab node with the
    /// addresses of its status.addresses), Pods (each becomes a pod namespace with servers on
    /// its container ports; a hostNetwork pod serves in its node's namespace, on the node's
    /// addresses), NetworkPolicies and ClusterNetworkPolicies.
    #[arg(short = 'f', long = "filename", value_name = "PATH", num_args = 1.., required = true)]
    pub files: Vec<PathBuf>,
    /// Without Node manifests: nodes n1..nN (default 2); pods without spec.nodeName are spread
    /// over them round-robin (a nodeName outside n1..nN becomes one more node). With Node
    /// manifests: may be left out; if given, it must be their number.
    #[arg(long)]
    pub nodes: Option<usize>,
    /// The packet filter the agents program: iptables or nftables.
    #[arg(long, default_value = "nftables", value_parser = ["iptables", "nftables"])]
    pub dataplane: String,
    /// `embedded` (one store inside the lab daemon, agents in process) or `etcd://host:port`
    /// (one `palisade agent` process per node).
    #[arg(long, default_value = "embedded")]
    pub datastore: String,
    /// Topology and servers only: start no agents (nothing is enforced).
    #[arg(long)]
    pub no_agents: bool,
    /// Who wires the pods: the reference CNI plugin `bridge` or `ptp` (from /usr/lib/cni,
    /// called as a container runtime does), or `palisade` (the lab's own veths).
    #[arg(long, default_value = "bridge", value_parser = ["bridge", "ptp", "palisade"])]
    pub cni: String,
    /// The families IPAM gives pods without addresses in their manifest: ipv4, ipv6 or dual.
    #[arg(long, default_value = "ipv4", value_parser = ["ipv4", "ipv6", "dual"])]
    pub ip_family: String,
    /// How the agents recognize local pods: by their addresses or by their node-side
    /// interface names. Default: address, except interface under --cni palisade.
    #[arg(long, value_parser = ["address", "interface"])]
    pub endpoint_match: Option<String>,
    /// Established connections that a change of policy denies: `keep` (they go on) or
    /// `revoke` (the agents delete their conntrack entries after each change).
    #[arg(long, default_value = "keep", value_parser = ["keep", "revoke"])]
    pub established: String,
    /// How the nftables agents lay out the NetworkPolicy tiers: `flat` (one lookup per tier:
    /// a new connection's cost does not grow with the policies selecting the pod) or `chains`
    /// (a jump per policy). Default: the agent's.
    #[arg(long, value_parser = ["flat", "chains"])]
    pub nft_layout: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

pub fn run(names: &LabNames, args: UpArgs) -> Result<ExitCode> {
    require_root()?;
    let cluster = input::load_cluster(&args.files)?;
    if !cluster.nodes.is_empty() {
        palisade_lab::plan::check_node_count(cluster.nodes.len(), args.nodes)
            .map_err(|e| UsageError(e.to_string()))?;
    }
    let datastore = match args.datastore.as_str() {
        "embedded" | "embedded:" | "embedded://" => "embedded:".to_string(),
        url => {
            url.parse::<palisade_store::DatastoreUrl>()
                .with_context(|| format!("--datastore {url}"))?;
            url.to_string()
        }
    };
    let options = UpOptions {
        nodes: args.nodes,
        dataplane: args.dataplane,
        datastore,
        agents: !args.no_agents,
        cni: args.cni.parse().map_err(anyhow::Error::msg)?,
        ip_family: args.ip_family.parse().map_err(anyhow::Error::msg)?,
        endpoint_match: args
            .endpoint_match
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(anyhow::Error::msg)?,
        revoke: args.established == "revoke",
        nft_layout: args.nft_layout,
    };
    let state = match palisade_lab::up(names, &options, cluster) {
        Ok(s) => s,
        Err(e @ palisade_lab::LabError::AlreadyUp { .. }) => return Err(e.into()),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "lab {} did not come up; nothing of it is left",
                names.name
            )))
        }
    };
    status::print(names, &state, args.output)?;
    Ok(ExitCode::SUCCESS)
}
