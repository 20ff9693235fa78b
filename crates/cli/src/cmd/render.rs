//! `palisade render`: the complete ruleset one node would get, computed from manifests
//! (calc → render), as ipset + iptables-restore text or as an nftables script; `--check` has
//! the real tools parse it inside a scratch network namespace.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context};
use palisade_calc::{compute_full, CalcConfig, DesiredState, IpSetMember, RulePeer};
use palisade_render::{build, iptables, nft, RenderConfig, Ruleset};
use serde::Serialize;

use super::match_args::{EndpointMatchArg, IfaceNameArg, NftLayoutArg};
use crate::input;

#[derive(clap::Args)]
#[command(after_help = "\
Pods are local to NODE when their spec.nodeName is NODE; pods without status.podIP are in no
set. The iptables output has sections: `ipset restore` input, then `iptables-restore --noflush`
input (and `ip6tables-restore --noflush` when any address is IPv6), each headed by a comment
line. The nftables output is one `nft -f` script that replaces `table inet palisade`.

--check changes nothing on this machine: it creates a scratch network namespace, loads the
sets there and has iptables-restore --test / nft -c parse the rules, then removes it (root).

Exit status: 0 on success, 1 on bad input or when a tool refuses the ruleset.

Examples:
  palisade render -f examples/seed --node node-1 --dataplane iptables
  palisade render -f manifests/ --node worker-2 --dataplane nftables --check
  palisade render -f manifests/ --node worker-2 --dataplane iptables --iface-prefix pal,cali
  palisade render -f manifests/ --node worker-2 --dataplane nftables --endpoint-match interface \
      --iface-name calico
  palisade render -f manifests/ --node worker-2 --dataplane nftables -o json")]
pub struct Args {
    /// Manifest files or directories (searched recursively for *.yaml, *.yml, *.json);
    /// `-` reads standard input.
    #[arg(short = 'f', long = "filename", value_name = "PATH", num_args = 1.., required = true)]
    pub files: Vec<PathBuf>,
    /// The node whose ruleset to render.
    #[arg(long, value_name = "NAME")]
    pub node: String,
    /// Which kernel interface the ruleset is for.
    #[arg(long, value_enum)]
    pub dataplane: Dataplane,
    /// Have the real tools parse the ruleset in a scratch network namespace (needs root).
    #[arg(long)]
    pub check: bool,
    /// Prefixes of the host-side pod interface names (the rest is a hash of namespace/pod),
    /// repeatable or comma separated (e.g. `pal,cali`): each pod is dispatched to its chains
    /// from its interface name under every prefix; the first names the chains.
    #[arg(long, value_name = "PREFIX", default_value = palisade_calc::config::DEFAULT_IFACE_PREFIX)]
    pub iface_prefix: Vec<String>,
    /// How a packet finds its local pod: by its addresses (default; any CNI) or by its
    /// host-side interface name.
    #[arg(long, value_enum, value_name = "MODE", default_value = "address")]
    pub endpoint_match: EndpointMatchArg,
    /// nftables: `flat` lays out each tier whose rules are all Allow as one lookup per tier;
    /// `chains` jumps to each selecting policy's chain (iptables always uses chains).
    #[arg(long, value_enum, value_name = "LAYOUT", default_value = "chains")]
    pub nft_layout: NftLayoutArg,
    /// Interface matching: how the CNI names pod interfaces (`calico`: `cali` + SHA-1 of
    /// `namespace.pod`, as Calico's CNI does).
    #[arg(long, value_enum, value_name = "NAMING", default_value = "palisade")]
    pub iface_name: IfaceNameArg,
    /// NFLOG group for drops (end of each tier, Deny rules), rate-limited as the agent does
    /// (default: drops are not logged; the agent logs them to group 2).
    #[arg(long, value_name = "GROUP")]
    pub log_drops: Option<u16>,
    /// Output format: `text` (the ruleset to feed the tools) or `json` (the typed rule IR and
    /// the text).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dataplane {
    Iptables,
    Nftables,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// The rendered text, by backend.
#[derive(Serialize)]
#[serde(untagged)]
enum Rendered {
    Iptables(iptables::IptablesText),
    Nftables { script: String },
}

#[derive(Serialize)]
struct JsonOut<'a> {
    node: &'a str,
    dataplane: Dataplane,
    ruleset: &'a Ruleset,
    text: &'a Rendered,
}

/// ClusterNetworkPolicy `domainNames` peers have no kernel form (enforcement is by address):
/// a rule whose peers are all domain names is left out of the ruleset. Says which, on stderr.
fn warn_unrendered_peers(cluster: &palisade_model::Cluster) {
    use palisade_model::Peer;
    for p in &cluster.policies {
        let rules = p.ingress.iter().chain(&p.egress).flatten();
        if rules
            .flat_map(|r| &r.peers)
            .any(|peer| matches!(peer, Peer::DomainNames(_)))
        {
            eprintln!(
                "warning: {}: domainNames peers are not rendered (enforcement is by address); \
                 rules with only such peers are left out",
                p.id
            );
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cluster = input::load_cluster(&args.files)?;
    if !cluster
        .endpoints
        .iter()
        .any(|e| e.node.as_deref() == Some(args.node.as_str()))
    {
        eprintln!(
            "warning: no pod has spec.nodeName {:?}; the ruleset has no endpoints",
            args.node
        );
    }
    warn_unrendered_peers(&cluster);
    let prefixes =
        palisade_agent::config::parse_prefixes(&args.iface_prefix).context("bad --iface-prefix")?;
    let mut calc = CalcConfig::with_prefixes(args.node.clone(), &prefixes);
    calc.iface_naming = args.iface_name.into();
    let state = compute_full(&calc, &cluster);
    let cfg = RenderConfig {
        drop_log_group: args.log_drops,
        ipv6: has_v6(&state),
        endpoint_match: args.endpoint_match.into(),
        nft_layout: match args.dataplane {
            Dataplane::Nftables => args.nft_layout.into(),
            Dataplane::Iptables => palisade_render::NftLayout::Chains,
        },
        ..RenderConfig::default()
    };
    let ruleset = build(&state, &cfg).context("cannot render the ruleset")?;
    let rendered = match args.dataplane {
        Dataplane::Iptables => Rendered::Iptables(iptables::render(&ruleset, true)),
        Dataplane::Nftables => Rendered::Nftables {
            script: nft::render(&ruleset),
        },
    };
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&JsonOut {
                node: &args.node,
                dataplane: args.dataplane,
                ruleset: &ruleset,
                text: &rendered,
            })?
        ),
        Output::Text => print!("{}", text(&args.node, &rendered)),
    }
    if args.check {
        std::io::stdout().flush().ok();
        if let Err(msg) = check(&rendered)? {
            eprintln!("check failed: {msg}");
            return Ok(ExitCode::FAILURE);
        }
        eprintln!("check: the kernel tools accept the ruleset");
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether anything in the state is IPv6 (then ip6tables gets a table too).
fn has_v6(state: &DesiredState) -> bool {
    let members = state.ip_sets.values().flat_map(|s| s.members.iter());
    let member_v6 = members.clone().any(|m| match m {
        IpSetMember::Net(n) => n.addr().is_ipv6(),
        IpSetMember::NetPort { ip, .. } => ip.is_ipv6(),
    });
    let endpoint_v6 = state
        .endpoints
        .values()
        .any(|e| e.ips.iter().any(|ip| ip.is_ipv6()));
    let cidr_v6 = state
        .policies
        .values()
        .flat_map(|p| p.ingress.iter().chain(p.egress.iter()).flatten())
        .flat_map(|r| r.peers.iter())
        .any(|p| matches!(p, RulePeer::Cidr { cidr, .. } if cidr.addr().is_ipv6()));
    member_v6 || endpoint_v6 || cidr_v6
}

fn text(node: &str, r: &Rendered) -> String {
    match r {
        Rendered::Iptables(t) => {
            let mut s = format!("# palisade render: node {node:?}, dataplane iptables\n");
            s.push_str("# ---- ipset restore ----\n");
            s.push_str(&t.ipset);
            if let Some(v4) = &t.v4 {
                s.push_str("# ---- iptables-restore --noflush (IPv4) ----\n");
                s.push_str(v4);
            }
            if let Some(v6) = &t.v6 {
                s.push_str("# ---- ip6tables-restore --noflush (IPv6) ----\n");
                s.push_str(v6);
            }
            s
        }
        Rendered::Nftables { script } => {
            format!("# palisade render: node {node:?}, dataplane nftables\n{script}")
        }
    }
}

/// A network namespace that exists as long as the value.
struct ScratchNs(String);

impl ScratchNs {
    fn create() -> anyhow::Result<ScratchNs> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("pal-check-{}-{nanos:x}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .context("cannot run `ip` (is iproute2 installed?)")?;
        if !out.status.success() {
            bail!(
                "cannot create scratch network namespace {name} (--check needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(ScratchNs(name))
    }

    /// Runs a tool in the namespace with `input` on stdin: `Ok(Err(message))` when the tool
    /// refuses the input.
    fn feed(&self, cmd: &[&str], input: &str) -> anyhow::Result<Result<(), String>> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", cmd[0]))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .with_context(|| format!("cannot write to {}", cmd[0]))?;
        }
        let out = child
            .wait_with_output()
            .with_context(|| format!("cannot wait for {}", cmd[0]))?;
        Ok(if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}: {}{}",
                cmd.join(" "),
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ))
        })
    }
}

impl Drop for ScratchNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Parses the text with the real tools in a scratch namespace.
fn check(r: &Rendered) -> anyhow::Result<Result<(), String>> {
    let ns = ScratchNs::create()?;
    match r {
        Rendered::Iptables(t) => {
            if let Err(e) = ns.feed(&["ipset", "restore"], &t.ipset)? {
                return Ok(Err(e));
            }
            for (tool, text) in [("iptables-restore", &t.v4), ("ip6tables-restore", &t.v6)] {
                if let Some(text) = text {
                    if let Err(e) = ns.feed(&[tool, "--test", "--noflush"], text)? {
                        return Ok(Err(e));
                    }
                }
            }
            Ok(Ok(()))
        }
        Rendered::Nftables { script } => ns.feed(&["nft", "-c", "-f", "-"], script),
    }
}
