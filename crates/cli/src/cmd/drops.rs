//! `palisade drops [--node N] [--namespace NS] [--follow] [-o table|json]`: the packets policy
//! dropped, as they happen, each attributed to node, pods, protocol and port, direction, tier,
//! policy and rule. Read from every agent's `/drops` (each agent reads its node's NFLOG group
//! itself); the agents' addresses come from their status in the datastore, or, without
//! `--datastore`, from the running lab.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use palisade_agent::drops::DropRecord;
use palisade_agent::revoke::RevocationRecord;
use palisade_agent::NodeStatus;

use super::agent::{render_table, Output};
use super::datastore_args::{self as ds, DatastoreArgs};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Without --datastore (and PALISADE_DATASTORE) the agents of the running \
    lab are asked (`palisade lab up`; --lab names it).\n\nExamples:\n  \
    palisade drops                                  (the lab's latest drops)\n  \
    palisade drops --namespace default --follow     (stream them)\n  \
    palisade drops --node n2 -o json                (JSON lines)\n  \
    palisade drops --datastore etcd://127.0.0.1:2379"
)]
pub struct Args {
    #[command(flatten)]
    pub filter: Filter,
    /// Without a datastore: the lab whose agents to ask.
    #[arg(long, value_name = "NAME", default_value = "lab")]
    pub lab: String,
    #[command(flatten)]
    pub datastore: DatastoreArgs,
}

/// What to show and how: the flags `palisade drops` and `palisade lab drops` share.
#[derive(clap::Args, Debug, Clone)]
pub struct Filter {
    /// Only the drops of this node.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Only drops from or to pods of this namespace.
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Keep running and print new drops as they happen (Ctrl-C ends).
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Output format: a table, or JSON lines (one drop a line).
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Seconds to wait for each agent's answer.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    pub timeout: u64,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let records = match &args.datastore.datastore {
        Some(_) => super::agent::stored_statuses(&args.datastore)?,
        None => super::lab::agent_statuses(&args.lab)?,
    };
    let agents = agents_of(&records)?;
    show(&agents, &args.filter)
}

/// (node, address of its agent's HTTP server) of every decodable status.
pub(crate) fn agents_of(records: &[(String, Vec<u8>)]) -> Result<Vec<(String, SocketAddr)>> {
    let mut out = Vec::new();
    for (key, value) in records {
        let s = match NodeStatus::decode(key, value) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("warning: skipping {key}: {e}");
                continue;
            }
        };
        let Some(addr) = s.metrics_addr.as_deref() else {
            eprintln!(
                "warning: the agent of node {} serves no HTTP address (--metrics-addr off?): its drops cannot be read",
                s.node
            );
            continue;
        };
        let addr: SocketAddr = addr
            .parse()
            .with_context(|| format!("node {}'s status has a bad address {addr:?}", s.node))?;
        out.push((s.node, addr));
    }
    Ok(out)
}

/// Reads `/drops` of `agents` (those `filter` names) and prints them; with `--follow`,
/// streams until Ctrl-C.
pub(crate) fn show(agents: &[(String, SocketAddr)], filter: &Filter) -> Result<ExitCode> {
    let agents: Vec<(String, SocketAddr)> = agents
        .iter()
        .filter(|(n, _)| filter.node.as_ref().is_none_or(|want| want == n))
        .cloned()
        .collect();
    if agents.is_empty() {
        match &filter.node {
            Some(n) => bail!("no agent of node {n} reports an HTTP address"),
            None => bail!("no agent reports an HTTP address"),
        }
    }
    let timeout = Duration::from_secs(filter.timeout.max(1));
    let runtime = ds::runtime()?;
    if filter.follow {
        return runtime.block_on(follow(agents, filter.clone(), timeout));
    }
    let mut drops = Vec::new();
    let mut failed = Vec::new();
    for (node, addr) in &agents {
        let answer = runtime
            .block_on(palisade_agent::client::get(*addr, "/drops", timeout))
            .map_err(|e| e.to_string())
            .and_then(|(code, body)| match code {
                200 => Ok(body),
                _ => Err(format!("{addr} answered {code}: {}", body.trim())),
            });
        let body = match answer {
            Ok(body) => body,
            Err(e) => {
                // The other nodes' drops are still worth showing.
                eprintln!("warning: cannot read the drops of node {node}: {e}");
                failed.push(node.clone());
                continue;
            }
        };
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let d = StreamLine::parse(line)
                .with_context(|| format!("bad /drops line from node {node}: {line}"))?;
            if d.keep(filter) {
                drops.push(d);
            }
        }
    }
    if failed.len() == agents.len() {
        bail!("no agent answered (nodes: {})", failed.join(", "));
    }
    drops.sort_by(|a, b| a.time().cmp(b.time()));
    let text = match filter.output {
        Output::Json => {
            let mut text = String::new();
            for d in &drops {
                text.push_str(&d.to_json()?);
                text.push('\n');
            }
            text
        }
        Output::Table => table(&drops, true),
    };
    // A reader that went away (`| head`) is not an error.
    emit(&text);
    Ok(ExitCode::SUCCESS)
}

async fn follow(
    agents: Vec<(String, SocketAddr)>,
    filter: Filter,
    timeout: Duration,
) -> Result<ExitCode> {
    if filter.output == Output::Table {
        emit(&follow_header());
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (node, addr) in agents {
        let filter = filter.clone();
        tasks.spawn(async move {
            palisade_agent::client::get_lines(addr, "/drops?follow", timeout, |line| {
                match StreamLine::parse(line) {
                    Ok(d) if d.keep(&filter) => emit(&match filter.output {
                        Output::Json => format!("{line}\n"),
                        Output::Table => table(&[d], false),
                    }),
                    _ => true,
                }
            })
            .await
            .with_context(|| format!("cannot follow the drops of node {node}"))
        });
    }
    tokio::select! {
        _ = crate::signals::wait_for_shutdown() => Ok(ExitCode::SUCCESS),
        done = async {
            while let Some(r) = tasks.join_next().await {
                r.context("follow task failed")??;
            }
            Ok::<(), anyhow::Error>(())
        } => done.map(|()| ExitCode::SUCCESS),
    }
}

/// Writes `text` to stdout at once (lines of several followed agents do not interleave);
/// `false` when stdout is closed.
fn emit(text: &str) -> bool {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_ok()
}

/// One line of the stream: a dropped packet, or a revocation of established connections
/// (`--established revoke`).
#[derive(Debug, Clone)]
enum StreamLine {
    Drop(DropRecord),
    Revoked(RevocationRecord),
}

impl StreamLine {
    fn parse(line: &str) -> serde_json::Result<StreamLine> {
        match serde_json::from_str::<DropRecord>(line) {
            Ok(d) => Ok(StreamLine::Drop(d)),
            Err(e) => match serde_json::from_str::<RevocationRecord>(line) {
                Ok(r) if r.revoked => Ok(StreamLine::Revoked(r)),
                _ => Err(e),
            },
        }
    }

    fn time(&self) -> &str {
        match self {
            StreamLine::Drop(d) => &d.time,
            StreamLine::Revoked(r) => &r.time,
        }
    }

    fn to_json(&self) -> serde_json::Result<String> {
        match self {
            StreamLine::Drop(d) => serde_json::to_string(d),
            StreamLine::Revoked(r) => serde_json::to_string(r),
        }
    }

    /// Whether the line passes the namespace filter (from or to a pod of it).
    fn keep(&self, filter: &Filter) -> bool {
        let Some(ns) = &filter.namespace else {
            return true;
        };
        let in_ns = |who: &str| who.split_once('/').is_some_and(|(n, _)| n == ns);
        match self {
            StreamLine::Drop(d) => in_ns(&d.from) || in_ns(&d.to),
            StreamLine::Revoked(r) => r.flows.iter().any(|f| in_ns(&f.from) || in_ns(&f.to)),
        }
    }

    /// Table rows: one per drop, one per revoked flow (direction `revoked`).
    fn rows(&self) -> Vec<[String; 11]> {
        match self {
            StreamLine::Drop(d) => vec![cells(d)],
            StreamLine::Revoked(r) => r
                .flows
                .iter()
                .map(|f| {
                    [
                        r.time.clone(),
                        r.node.clone(),
                        f.from.clone(),
                        f.to.clone(),
                        f.protocol.clone(),
                        f.port.map_or("-".into(), |p| p.to_string()),
                        "revoked".into(),
                        "-".into(),
                        format!("({} of {} tracked flows cut)", r.removed, r.checked),
                        "-".into(),
                        "-".into(),
                    ]
                })
                .collect(),
        }
    }
}

const HEADER: [&str; 11] = [
    "TIME",
    "NODE",
    "FROM",
    "TO",
    "PROTOCOL",
    "PORT",
    "DIRECTION",
    "TIER",
    "POLICY",
    "RULE",
    "STAGED",
];
/// Column widths of `--follow` tables (rows are printed one by one as they come, so they
/// cannot be measured first); longer values push the rest of their row right.
const FOLLOW_WIDTHS: [usize; 11] = [24, 8, 24, 24, 8, 5, 9, 8, 28, 4, 11];

/// `would-drop` (passed; the staged policies would have dropped it), `would-allow` (dropped;
/// the staged policies would have let it through), else `-`.
fn staged_cell(d: &DropRecord) -> String {
    match (d.staged, d.staged_allow) {
        (true, _) => "would-drop".into(),
        (_, true) => "would-allow".into(),
        _ => "-".into(),
    }
}

fn cells(d: &DropRecord) -> [String; 11] {
    [
        d.time.clone(),
        d.node.clone(),
        d.from.clone(),
        d.to.clone(),
        d.protocol.clone(),
        d.port.map_or("-".into(), |p| p.to_string()),
        d.direction.clone(),
        d.tier.clone(),
        d.policy.to_string(),
        d.rule.map_or("-".into(), |r| r.to_string()),
        staged_cell(d),
    ]
}

/// A table of `drops`: measured (with its header) when `header`, else rows of the fixed
/// `--follow` widths (whose header is `table(&[], true)` with `follow`).
fn table(drops: &[StreamLine], header: bool) -> String {
    if header {
        let mut rows = vec![HEADER.map(String::from)];
        rows.extend(drops.iter().flat_map(StreamLine::rows));
        return render_table(&rows);
    }
    drops
        .iter()
        .flat_map(StreamLine::rows)
        .map(|r| fixed(&r))
        .collect()
}

/// One row in the `--follow` widths, three spaces apart.
fn fixed(cells: &[String; 11]) -> String {
    let mut line = String::new();
    for (i, (c, w)) in cells.iter().zip(FOLLOW_WIDTHS).enumerate() {
        if i + 1 == cells.len() {
            line.push_str(c);
        } else {
            line.push_str(&format!("{c:<w$}   "));
        }
    }
    line.truncate(line.trim_end().len());
    line.push('\n');
    line
}

/// The header of a `--follow` table.
fn follow_header() -> String {
    fixed(&HEADER.map(String::from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_agent::drops::PolicyNames;

    fn d(from: &str, to: &str) -> StreamLine {
        StreamLine::Drop(rec(from, to))
    }

    fn rec(from: &str, to: &str) -> DropRecord {
        DropRecord {
            time: "2026-01-01T00:00:00.000Z".into(),
            node: "n2".into(),
            from: from.into(),
            to: to.into(),
            protocol: "TCP".into(),
            port: Some(80),
            direction: "ingress".into(),
            tier: "default".into(),
            policy: PolicyNames::Many(vec!["default/web-deny-all".into()]),
            rule: None,
            endpoint: to.into(),
            staged: false,
            staged_allow: false,
        }
    }

    #[test]
    fn namespace_filter_matches_either_side() {
        let f = Filter {
            node: None,
            namespace: Some("bob".into()),
            follow: false,
            output: Output::Json,
            timeout: 1,
        };
        assert!(d("bob/client", "default/app-web").keep(&f));
        assert!(d("10.0.0.1", "bob/x").keep(&f));
        assert!(!d("bobby/client", "default/app-web").keep(&f));
        assert!(!d("10.0.0.1", "default/app-web").keep(&f));
    }

    #[test]
    fn follow_rows_line_up_with_their_header() {
        let head = follow_header();
        let row = table(&[d("bob/client", "default/app-web")], false);
        let col = |s: &str, name: &str| s.find(name).unwrap();
        assert_eq!(col(&head, "POLICY"), col(&row, "default/web-deny-all"));
        assert_eq!(col(&head, "TO"), col(&row, "default/app-web"));
    }

    #[test]
    fn table_names_the_policy_and_shows_null_fields_as_dashes() {
        let mut x = rec("bob/client", "default/app-web");
        x.port = None;
        x.protocol = "ICMP".into();
        let t = table(&[StreamLine::Drop(x)], true);
        assert!(t.contains("default/web-deny-all"), "{t}");
        assert!(t.lines().nth(1).unwrap().contains("ICMP"));
        assert!(t.lines().nth(1).unwrap().trim_end().ends_with('-'));
    }

    #[test]
    fn revocations_parse_filter_and_show_one_row_per_flow() {
        let line = r#"{"time":"t","node":"n2","revoked":true,"checked":4,"removed":2,"flows":[{"from":"rv/cut","to":"rv/server","protocol":"TCP","port":7100},{"from":"rv/cut","to":"rv/server","protocol":"ICMP","port":null}]}"#;
        let r = StreamLine::parse(line).unwrap();
        assert!(matches!(r, StreamLine::Revoked(_)));
        let t = table(std::slice::from_ref(&r), true);
        assert_eq!(
            t.lines().filter(|l| l.contains("revoked")).count(),
            2,
            "{t}"
        );
        assert!(t.contains("(2 of 4 tracked flows cut)"), "{t}");
        let only = |ns: &str| Filter {
            node: None,
            namespace: Some(ns.into()),
            follow: false,
            output: Output::Json,
            timeout: 1,
        };
        assert!(r.keep(&only("rv")) && !r.keep(&only("other")));
        assert!(StreamLine::parse(r#"{"time":"t","node":"n"}"#).is_err());
    }
}
