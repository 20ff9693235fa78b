//! `palisade agent`: the per-node agent (watch the datastore, program iptables+ipset or
//! nftables, serve metrics, report status); `palisade agent status`: every node's status.
//! The logic lives in `palisade-agent`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use palisade_agent::config::{parse_duration, parse_mark, parse_prefixes, render_marks};
use palisade_agent::{AgentConfig, DataplaneKind, NodeStatus};
use palisade_store::{keys, RelayStore};
use serde::Serialize;

use super::datastore_args::{self as ds, DatastoreArgs};
use super::match_args::{EndpointMatchArg, EstablishedArg, IfaceNameArg, NftLayoutArg};

const AFTER_HELP: &str = "\
The agent lists the datastore, waits until it is in sync, then programs this node's packet
filter: the policies that select its pods (those whose endpoint names this node), with IP
sets for every selector (pods of all nodes). Changes are batched: the first change after a
quiet period is applied at once, under load at most one apply every 50 ms. Only differences
are written; on start the rules already in the kernel are adopted, never flushed.

If the datastore goes away the rules in force stay (fail static) until it is back; then the
agent relists and applies what changed. Every --resync-interval it re-reads its chains and
sets from the kernel and repairs drift.

HTTP on --metrics-addr: /metrics (Prometheus), /healthz, /readyz (in sync and last apply
succeeded), /counters (JSON per-rule counters; see `palisade counters`). Status is written
to /palisade/v1/status/<node> (see `palisade agent status`). Logging: RUST_LOG (default info).

Examples:
  palisade agent --node node-1 --datastore etcd://10.0.0.10:2379 --dataplane nftables
  palisade agent --node n1 --datastore etcd://127.0.0.1:2379 --dataplane iptables \\
      --netns lab-n1 --iface-prefix pal,cali --resync-interval 10s
  palisade agent --node node-1 --datastore etcd://10.0.0.10:2379 --dataplane nftables \\
      --relay 10.0.0.21:5473,10.0.0.22:5473      # read through `palisade relay`s
  palisade agent status --datastore etcd://127.0.0.1:2379";

/// Arguments of `palisade agent`.
#[derive(clap::Args, Debug)]
#[command(
    after_long_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// Every node's agent status: in sync, revision applied, last error, age.
    Status(StatusArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// This node's name, as pods' endpoints name it (`spec.nodeName`).
    #[arg(long, value_name = "NAME", required = true)]
    node: Option<String>,
    #[command(flatten)]
    datastore: DatastoreArgs,
    /// Read the datastore through these relays (`palisade relay`; HOST:PORT, comma-separated,
    /// tried in turn from one the node's name picks) instead of watching etcd itself; the
    /// agent's status is still written to --datastore.
    #[arg(long, value_name = "ADDRS", value_delimiter = ',')]
    relay: Vec<String>,
    /// Which packet filter to program: iptables (with ipset) or nftables.
    #[arg(long, value_enum, value_name = "KIND", required = true)]
    dataplane: Option<Kind>,
    /// Program the packet filter inside this network namespace (`ip netns exec NAME`)
    /// instead of the agent's own; for labs and tests.
    #[arg(long, value_name = "NAME")]
    netns: Option<String>,
    /// Interface prefixes of workload (pod) interfaces, repeatable or comma separated
    /// (e.g. `cali,pal`). A pod's host-side interface is `<prefix><hash of namespace/pod>`
    /// (15 characters); its policy applies to traffic on that name under every prefix given,
    /// so pods wired by a CNI using any of them are enforced. The first one is primary: the
    /// pod's chains are named from it.
    #[arg(long, value_name = "PREFIX", default_value = "pal")]
    iface_prefix: Vec<String>,
    /// How a packet finds its local pod: by its addresses (default; works under any CNI:
    /// bridge, ptp, flannel, Calico's, cloud CNIs) or by its host-side interface name.
    #[arg(long, value_enum, value_name = "MODE", default_value = "address")]
    endpoint_match: EndpointMatchArg,
    /// nftables: how the tiers whose rules are all Allow (NetworkPolicy) are laid out: `flat`,
    /// one lookup per tier (a new connection's cost does not grow with the policies that
    /// select its pod), or `chains`, a jump to each selecting policy's chain. iptables always
    /// uses chains.
    #[arg(long, value_enum, value_name = "LAYOUT", default_value = "chains")]
    nft_layout: NftLayoutArg,
    /// Interface matching: how the CNI names pod interfaces (`calico`: `cali` + SHA-1 of
    /// `namespace.pod`, so Palisade enforces on nodes wired by Calico's CNI).
    #[arg(long, value_enum, value_name = "NAMING", default_value = "palisade")]
    iface_name: IfaceNameArg,
    /// Turn on net.bridge.bridge-nf-call-iptables/-ip6tables (loading br_netfilter) where
    /// they are off, so bridged pod-to-pod traffic meets the rules; with `false` the agent
    /// reports not ready while one is off.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    set_bridge_sysctls: bool,
    /// Established connections that a change of policy denies: `keep` lets them go on until
    /// they end (conntrack's default, as Calico does); `revoke` deletes their conntrack
    /// entries after every applied change, so their next packet is judged as new and dropped
    /// (each tracked flow of a local pod is run through the new rules; flows they still admit
    /// are never touched).
    #[arg(long, value_enum, value_name = "MODE", default_value = "keep")]
    established: EstablishedArg,
    /// Packet mark bits Palisade may use; every other bit is left alone.
    #[arg(long, value_name = "BITS", default_value = "0xffff0000")]
    mark_mask: String,
    /// The mark bit a policy sets when an Allow rule matched (one bit inside the mask).
    #[arg(long, value_name = "BIT", default_value = "0x10000")]
    mark_accept: String,
    /// The mark bit a policy sets when a Pass rule matched (one bit inside the mask).
    #[arg(long, value_name = "BIT", default_value = "0x20000")]
    mark_pass: String,
    /// How often the agent re-reads its rules from the kernel and repairs drift
    /// (e.g. 30s, 500ms, 2m).
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    resync_interval: String,
    /// Where to serve /metrics, /healthz, /readyz and /counters; `off` serves nothing.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9095")]
    metrics_addr: String,
    /// Log policy drops (the end of each endpoint's policies, and Deny rules) to this NFLOG
    /// group, which the agent reads itself and serves at /drops (`palisade drops`).
    #[arg(long, value_name = "N", default_value_t = palisade_agent::config::DEFAULT_DROP_LOG_GROUP)]
    nflog_group: u16,
    /// At most this many logged drops per second and drop rule (a kernel rate limit, so a
    /// flood cannot overload the agent); 0: no limit.
    #[arg(long, value_name = "N", default_value_t = palisade_render::config::DEFAULT_DROP_LOG_RATE)]
    drop_log_rate: u32,
    /// Do not log drops (no NFLOG rules, no /drops, no policy_drops_total).
    #[arg(long, conflicts_with = "nflog_group")]
    no_drop_log: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Kind {
    Iptables,
    Nftables,
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Without --datastore (and PALISADE_DATASTORE) the agents of the running lab are \
    shown (`palisade lab up`; --lab names it).\n\nExamples:\n  \
    palisade agent status --datastore etcd://127.0.0.1:2379\n  \
    palisade agent status -o json                  (the agents of the lab)"
)]
struct StatusArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Without a datastore: the lab whose agents to show.
    #[arg(long, value_name = "NAME", default_value = "lab")]
    lab: String,
    #[command(flatten)]
    datastore: DatastoreArgs,
}

/// Output formats of the commands that print data: a table for people, JSON for programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        Some(Sub::Status(s)) => status(s),
        None => run_agent(args.run),
    }
}

fn config(a: &RunArgs) -> Result<AgentConfig> {
    let node = a.node.clone().context("--node is required")?;
    let mut c = AgentConfig::new(node);
    c.dataplane = match a.dataplane.context("--dataplane is required")? {
        Kind::Iptables => DataplaneKind::Iptables,
        Kind::Nftables => DataplaneKind::Nftables,
    };
    c.netns = a.netns.clone();
    c.iface_prefixes = parse_prefixes(&a.iface_prefix)?;
    let mask = parse_mark("--mark-mask", &a.mark_mask)?;
    let accept = parse_mark("--mark-accept", &a.mark_accept)?;
    let pass = parse_mark("--mark-pass", &a.mark_pass)?;
    c.render = render_marks(mask, accept, pass)?;
    c.render.drop_log_group = (!a.no_drop_log).then_some(a.nflog_group);
    c.render.drop_log_rate = a.drop_log_rate;
    c.render.endpoint_match = a.endpoint_match.into();
    if c.dataplane == DataplaneKind::Nftables {
        c.render.nft_layout = a.nft_layout.into();
    }
    c.iface_naming = a.iface_name.into();
    c.set_bridge_sysctls = a.set_bridge_sysctls;
    c.established = a.established.into();
    c.resync_interval = parse_duration(&a.resync_interval)?;
    c.metrics_addr = match a.metrics_addr.trim() {
        "off" | "" => None,
        s => Some(s.parse::<SocketAddr>().with_context(|| {
            format!("bad --metrics-addr {s:?}: expected HOST:PORT such as 127.0.0.1:9095")
        })?),
    };
    c.validate()?;
    Ok(c)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn run_agent(a: RunArgs) -> Result<ExitCode> {
    let config = config(&a)?;
    let datastore = a.datastore;
    datastore.url()?;
    let relays = a.relay;
    init_logging();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(async move {
        let mut store = datastore.connect().await?;
        if !relays.is_empty() {
            // Spread the nodes over the relays: each starts from the one its name picks.
            let first = config
                .node
                .bytes()
                .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
            store = Arc::new(RelayStore::new(relays, first).with_writes(store));
        }
        palisade_agent::run::run_agent(config, store, crate::signals::wait_for_shutdown())
            .await
            .context("the agent stopped")?;
        Ok(ExitCode::SUCCESS)
    });
    // Nothing left to finish: the loop waited for its last apply before returning.
    rt.shutdown_timeout(std::time::Duration::from_millis(500));
    result
}

/// One row of `agent status`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    node: String,
    in_sync: bool,
    revision: i64,
    last_error: Option<String>,
    /// Milliseconds since the status was written.
    age_ms: u64,
    dataplane: String,
    metrics_addr: Option<String>,
    endpoints: usize,
    /// `address`, or `interface` (with the naming: `interface/calico`).
    endpoint_match: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    iface_naming: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_ready: Option<String>,
}

fn status(a: StatusArgs) -> Result<ExitCode> {
    let records = match &a.datastore.datastore {
        Some(_) => stored_statuses(&a.datastore)?,
        None => super::lab::agent_statuses(&a.lab)?,
    };
    let rows = rows(&records, palisade_agent::status::now_millis());
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Output::Table => print!("{}", table(&rows)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Every node's status record (key, value) in the datastore.
pub(crate) fn stored_statuses(datastore: &DatastoreArgs) -> Result<Vec<(String, Vec<u8>)>> {
    ds::runtime()?.block_on(async move {
        let store = datastore.connect().await?;
        let listing = store
            .list(keys::STATUS)
            .await
            .with_context(|| format!("cannot list agent status in {}", store.describe()))?;
        Ok(listing
            .items
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect())
    })
}

/// The rows of the decodable records; the others are reported on stderr.
fn rows(records: &[(String, Vec<u8>)], now_ms: u64) -> Vec<Row> {
    let mut rows = Vec::new();
    for (key, value) in records {
        match NodeStatus::decode(key, value) {
            Ok(s) => rows.push(Row {
                age_ms: now_ms.saturating_sub(s.updated),
                node: s.node,
                in_sync: s.in_sync,
                revision: s.revision,
                last_error: s.last_error,
                dataplane: s.dataplane,
                metrics_addr: s.metrics_addr,
                endpoints: s.endpoints.len(),
                endpoint_match: s.endpoint_match,
                iface_naming: s.iface_naming,
                not_ready: s.not_ready,
            }),
            Err(e) => eprintln!("warning: skipping {key}: {e}"),
        }
    }
    rows
}

fn table(rows: &[Row]) -> String {
    let mut lines = vec![[
        "NODE".to_string(),
        "IN-SYNC".into(),
        "REVISION".into(),
        "DATAPLANE".into(),
        "MATCH".into(),
        "ENDPOINTS".into(),
        "AGE".into(),
        "LAST-ERROR".into(),
    ]];
    for r in rows {
        lines.push([
            r.node.clone(),
            r.in_sync.to_string(),
            r.revision.to_string(),
            r.dataplane.clone(),
            match (&r.endpoint_match, &r.iface_naming) {
                (m, _) if m.is_empty() => "-".into(),
                (m, Some(n)) => format!("{m}/{n}"),
                (m, None) => m.clone(),
            },
            r.endpoints.to_string(),
            age(r.age_ms),
            r.not_ready
                .clone()
                .or_else(|| r.last_error.clone())
                .unwrap_or_else(|| "-".into())
                .replace('\n', " "),
        ]);
    }
    render_table(&lines)
}

/// `45s`, `3m`, `2h`, `4d`.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Left-aligned columns separated by three spaces (the last column is not padded).
pub fn render_table<const N: usize>(lines: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for l in lines {
        for (i, c) in l.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for l in lines {
        let mut line = String::new();
        for (i, c) in l.iter().enumerate() {
            if i + 1 == N {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Cmd,
    }

    #[derive(clap::Subcommand)]
    enum Cmd {
        Agent(Args),
    }

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        let mut all = vec!["palisade", "agent"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|c| match c.command {
            Cmd::Agent(a) => a,
        })
    }

    const BASE: [&str; 6] = [
        "--node",
        "n1",
        "--datastore",
        "etcd://127.0.0.1:2379",
        "--dataplane",
        "nftables",
    ];

    #[test]
    fn flags_become_the_agent_config() {
        let mut args = BASE.to_vec();
        args.extend([
            "--iface-prefix",
            "cali,pal",
            "--iface-prefix",
            "tap",
            "--mark-mask",
            "0xff00",
            "--mark-accept",
            "0x100",
            "--mark-pass",
            "0x200",
            "--resync-interval",
            "1m 30s",
            "--metrics-addr",
            "off",
            "--nflog-group",
            "7",
            "--netns",
            "lab-n1",
        ]);
        let a = parse(&args).unwrap();
        let c = config(&a.run).unwrap();
        assert_eq!(c.node, "n1");
        assert_eq!(c.dataplane, DataplaneKind::Nftables);
        assert_eq!(c.iface_prefixes, vec!["cali", "pal", "tap"]);
        assert_eq!(c.calc_config().iface_prefix, "cali");
        assert_eq!(c.calc_config().extra_iface_prefixes, vec!["pal", "tap"]);
        assert_eq!(
            (c.render.mark_mask, c.render.accept_mark, c.render.pass_mark),
            (0xff00, 0x100, 0x200)
        );
        assert_eq!(c.render.drop_log_group, Some(7));
        assert_eq!(c.resync_interval, std::time::Duration::from_secs(90));
        assert_eq!(c.metrics_addr, None);
        assert_eq!(c.netns.as_deref(), Some("lab-n1"));
    }

    #[test]
    fn matching_flags_reach_the_config() {
        let mut args = BASE.to_vec();
        args.extend([
            "--endpoint-match",
            "interface",
            "--iface-name",
            "calico",
            "--set-bridge-sysctls=false",
        ]);
        let c = config(&parse(&args).unwrap().run).unwrap();
        assert_eq!(
            c.render.endpoint_match,
            palisade_agent::config::EndpointMatch::Interface
        );
        assert_eq!(
            c.calc_config().iface_naming,
            palisade_calc::IfaceNaming::Calico
        );
        assert!(!c.set_bridge_sysctls);
        let d = config(&parse(&BASE).unwrap().run).unwrap();
        assert_eq!(
            d.render.endpoint_match,
            palisade_agent::config::EndpointMatch::Address
        );
        assert!(d.set_bridge_sysctls);
        let mut bad = BASE.to_vec();
        bad.extend(["--endpoint-match", "mac"]);
        assert!(parse(&bad).is_err());
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = config(&parse(&BASE).unwrap().run).unwrap();
        assert_eq!(c.iface_prefixes, vec!["pal"]);
        assert_eq!(
            c.render,
            palisade_render::RenderConfig {
                drop_log_group: Some(2),
                ..palisade_render::RenderConfig::default()
            }
        );
        assert_eq!(c.render.drop_log_rate, 100);
        assert_eq!(c.resync_interval, std::time::Duration::from_secs(30));
        assert_eq!(c.metrics_addr, Some("127.0.0.1:9095".parse().unwrap()));
    }

    #[test]
    fn drop_logging_can_be_turned_off_or_tuned() {
        let mut args = BASE.to_vec();
        args.push("--no-drop-log");
        assert_eq!(
            config(&parse(&args).unwrap().run)
                .unwrap()
                .render
                .drop_log_group,
            None
        );
        let mut args = BASE.to_vec();
        args.extend(["--drop-log-rate", "5"]);
        assert_eq!(
            config(&parse(&args).unwrap().run)
                .unwrap()
                .render
                .drop_log_rate,
            5
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        for (flag, value, needle) in [
            ("--mark-accept", "0x1", "outside"),
            ("--mark-mask", "zz", "--mark-mask"),
            ("--resync-interval", "soon", "soon"),
            ("--metrics-addr", "localhost", "--metrics-addr"),
            ("--iface-prefix", "a b", "interface prefix"),
        ] {
            let mut args = BASE.to_vec();
            args.extend([flag, value]);
            let err = config(&parse(&args).unwrap().run).unwrap_err();
            assert!(
                format!("{err:#}").contains(needle),
                "{flag} {value}: {err:#}"
            );
        }
        assert!(
            parse(&["--node", "n1"]).is_err(),
            "--dataplane and --datastore are required"
        );
        let status = |args: &[&str]| match parse(args).unwrap().command {
            Some(Sub::Status(s)) => s,
            None => panic!("{args:?} is not `agent status`"),
        };
        let with_store = status(&["status", "--datastore", "etcd://127.0.0.1:2379"]);
        assert_eq!(
            with_store.datastore.datastore.as_deref(),
            Some("etcd://127.0.0.1:2379")
        );
        if std::env::var_os("PALISADE_DATASTORE").is_none() {
            let of_lab = status(&["status", "--lab", "lab2"]);
            assert!(
                of_lab.datastore.datastore.is_none(),
                "no datastore: the lab is asked"
            );
            assert_eq!(of_lab.lab, "lab2");
        }
    }

    #[test]
    fn ages_read_well() {
        assert_eq!(age(4_000), "4s");
        assert_eq!(age(600_000), "10m");
        assert_eq!(age(3 * 3_600_000), "3h");
        assert_eq!(age(3 * 86_400_000), "3d");
    }
}
