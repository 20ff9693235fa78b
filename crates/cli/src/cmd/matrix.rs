//! `palisade matrix`: which pod can reach which, for a set of probes, computed by the engine
//! from manifests or from what the datastore holds (no packets).

use std::path::PathBuf;
use std::process::ExitCode;

use palisade_engine::{BitSet, Matrix, Probe, ProbeMatrix};
use palisade_model::EndpointId;
use serde::Serialize;

use super::whatif;
use crate::source::SourceArgs;

#[derive(clap::Args)]
#[command(after_help = "\
Rows are sources (from), columns destinations (to); a pod can always reach itself.
With --datastore the matrix is computed from what the datastore holds: the state the agents
enforce. -n only restricts the pods shown: the policies of every namespace still apply.

Examples:
  palisade matrix -f examples/seed --probe 80/TCP
  palisade matrix -f ns.yaml pods.yaml policies/ --probe 80 --probe 53/udp --probe icmp -o json
  palisade matrix --datastore etcd://127.0.0.1:2379 -n default --probe 80
  palisade matrix -f examples/seed --probe 80 --probe 53/udp -o html > reach.html
  palisade matrix --datastore etcd://127.0.0.1:2379 --probe 80 --staged   # staged policies enforced

What-if (only the pairs whose verdict would change, with the policy and rule that cause it):
  palisade matrix --datastore etcd://127.0.0.1:2379 --what-if -f new-policy.yaml --probe 80
  palisade matrix --datastore etcd://127.0.0.1:2379 --what-if --delete networkpolicy default/web-deny-all --probe 80
  palisade matrix -f current/ --what-if-f new-policy.yaml --probe 80 -o json")]
pub struct Args {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Show only the pods of this namespace, as sources and as destinations (repeatable).
    #[arg(short = 'n', long = "namespace", value_name = "NS")]
    pub namespaces: Vec<String>,
    /// What to test, as PORT[/PROTO] (protocol TCP, UDP or SCTP in any case, TCP when
    /// omitted), or `icmp`. Repeat for several probes.
    #[arg(long = "probe", value_name = "PORT/PROTO", required = true)]
    pub probes: Vec<Probe>,
    /// Output format: `table` (a grid per probe), `json`
    /// (`{"pods": [...], "probes": [{"port", "protocol", "allowed": [[bool]]}]}`) or `html`
    /// (one self-contained page: a grid per probe, each cell's explain trace on click).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// What-if against the datastore: the -f files are the change (new or replaced objects),
    /// --delete names what it removes; prints only the pairs whose verdict would change.
    #[arg(long = "what-if", conflicts_with = "what_if_files")]
    pub what_if: bool,
    /// What-if from files: manifests laid over the -f ones (same kind, namespace and name replaces,
    /// others are added); prints only the pairs whose verdict would change
    /// (`-o json`: `{"changes":[{"from","to","port","protocol","now","then","because"}]}`).
    #[arg(long = "what-if-f", value_name = "PATH", num_args = 1..)]
    pub what_if_files: Vec<PathBuf>,
    /// What-if: an object the change deletes, as `palisade delete` names it
    /// (`--delete networkpolicy NS/NAME`, `--delete pod NS/NAME`, `--delete namespace NAME`).
    /// Repeat for several.
    #[arg(long = "delete", value_names = ["KIND", "NAME"], num_args = 2, action = clap::ArgAction::Append)]
    pub delete: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
    Html,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.what_if || !args.what_if_files.is_empty() || !args.delete.is_empty() {
        return run_what_if(&args);
    }
    let cluster = args.source.load()?;
    for ns in &args.namespaces {
        if !cluster.endpoints.iter().any(|e| e.id.namespace == *ns) {
            eprintln!("warning: no pods in namespace {ns:?}");
        }
    }
    let m = restrict(
        palisade_engine::matrix(&cluster, &args.probes),
        &args.namespaces,
    );
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&to_json(&m))?),
        Output::Table => print!("{}", table(&m)),
        Output::Html => print!("{}", super::matrix_html::page(&cluster, &m)),
    }
    Ok(ExitCode::SUCCESS)
}

/// What-if: `--datastore URL --what-if [-f CHANGES…] [--delete KIND NAME]…`, or
/// `-f CURRENT… --what-if-f NEW… [--delete KIND NAME]…`: the pairs whose verdict flips.
fn run_what_if(args: &Args) -> anyhow::Result<ExitCode> {
    let deletions = whatif::deletions(&args.delete)?;
    let (now, then) = if args.what_if {
        let crate::source::Choice::Datastore(ds_args) = args.source.live_choice()? else {
            unreachable!("live_choice gives the datastore")
        };
        let changes = if args.source.files.is_empty() {
            Vec::new()
        } else {
            whatif::read_changes(&args.source.files)?.documents
        };
        let objects = super::apply::stored_objects(&changes)?;
        let now = super::datastore_args::runtime()?.block_on(async {
            let store = ds_args.connect().await?;
            crate::source::load_live(store.as_ref()).await
        })?;
        let mut then = now.clone();
        whatif::delete_from(&mut then, &deletions)?;
        whatif::upsert_stored(&mut then, &objects);
        (now, then)
    } else {
        let crate::source::Choice::Files(files) = args.source.choice()? else {
            anyhow::bail!(crate::source::UsageError(
                "--what-if-f compares manifests: give the current ones with -f, or use \
                 --datastore URL --what-if -f CHANGES"
                    .into()
            ));
        };
        let (manifests, checked) = crate::input::check(files)?;
        crate::input::warn_skipped(&manifests);
        let now =
            checked.map_err(|errors| crate::input::report_in(&errors, "the current manifests"))?;
        let changes = if args.what_if_files.is_empty() {
            Vec::new()
        } else {
            whatif::read_changes(&args.what_if_files)?.documents
        };
        let documents = whatif::overlay(&manifests.documents, &changes, &deletions)?;
        let then = whatif::cluster_of(&documents, "the manifests after the change")?;
        (now, then)
    };
    let (now, then) = (args.source.staged_view(now), args.source.staged_view(then));
    let mut w = palisade_engine::what_if(&now, &then, &args.probes);
    if !args.namespaces.is_empty() {
        let shown = |id: &EndpointId| args.namespaces.contains(&id.namespace);
        w.changes.retain(|c| shown(&c.from) && shown(&c.to));
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&whatif::to_json(&w))?),
        Output::Table => print!("{}", whatif::table(&w, &args.probes)),
        Output::Html => anyhow::bail!(crate::source::UsageError(
            "what-if prints a list of changes: use -o table or -o json".into()
        )),
    }
    Ok(ExitCode::SUCCESS)
}

/// The matrix between the pods of `namespaces` only (all pods when none is given).
pub fn restrict(m: Matrix, namespaces: &[String]) -> Matrix {
    if namespaces.is_empty() {
        return m;
    }
    let keep: Vec<usize> = (0..m.pods.len())
        .filter(|&i| namespaces.contains(&m.pods[i].namespace))
        .collect();
    Matrix {
        pods: keep.iter().map(|&i| m.pods[i].clone()).collect(),
        probes: m
            .probes
            .iter()
            .map(|p| ProbeMatrix {
                probe: p.probe,
                rows: keep
                    .iter()
                    .map(|&i| {
                        let mut row = BitSet::new(keep.len());
                        for (j, &to) in keep.iter().enumerate() {
                            if p.allowed(i, to) {
                                row.insert(j);
                            }
                        }
                        row
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The JSON shape other tools read (`lab probe` prints it too, with more fields).
#[derive(Serialize)]
pub struct JsonMatrix {
    pub pods: Vec<String>,
    pub probes: Vec<JsonProbe>,
}

#[derive(Serialize)]
pub struct JsonProbe {
    pub port: u16,
    pub protocol: &'static str,
    pub allowed: Vec<Vec<bool>>,
}

pub fn to_json(m: &Matrix) -> JsonMatrix {
    JsonMatrix {
        pods: m.pods.iter().map(|p| p.to_string()).collect(),
        probes: m
            .probes
            .iter()
            .map(|p| JsonProbe {
                port: p.probe.port,
                protocol: p.probe.protocol.as_str(),
                allowed: p.to_bools(),
            })
            .collect(),
    }
}

/// Consecutive pods of one namespace: `(namespace, first index, count)`.
fn groups(pods: &[EndpointId]) -> Vec<(&str, usize, usize)> {
    let mut out: Vec<(&str, usize, usize)> = Vec::new();
    for (i, p) in pods.iter().enumerate() {
        match out.last_mut() {
            Some((ns, _, n)) if *ns == p.namespace => *n += 1,
            _ => out.push((&p.namespace, i, 1)),
        }
    }
    out
}

/// Every probe as a grid: pods numbered, grouped by namespace, ✓ allowed and · denied.
fn table(m: &Matrix) -> String {
    let mut out = String::new();
    if m.pods.is_empty() {
        out.push_str("no pods: the matrix is empty\n");
        return out;
    }
    for (k, p) in m.probes.iter().enumerate() {
        if k > 0 {
            out.push('\n');
        }
        out.push_str(&probe_table(&m.pods, p));
    }
    out
}

fn probe_table(pods: &[EndpointId], p: &ProbeMatrix) -> String {
    let n = pods.len();
    let w = (n.saturating_sub(1)).to_string().len();
    let cell = w + 1;
    let gs = groups(pods);
    let label_w = pods
        .iter()
        .map(|id| 2 + w + 1 + id.name.chars().count())
        .chain(gs.iter().map(|(ns, _, _)| ns.chars().count()))
        .max()
        .unwrap_or(0)
        + 1;
    let mut out = format!(
        "probe {}: {} of {} pairs allowed (from = rows, to = columns; ✓ allowed, · denied)\n",
        p.probe,
        p.count(),
        n * n
    );
    // Each namespace block is wide enough for its cells and its name.
    let widths: Vec<usize> = gs
        .iter()
        .map(|(ns, _, count)| (count * cell + 1).max(ns.chars().count() + 2))
        .collect();
    // Header: namespace names over their column blocks, then pod numbers.
    let mut l1 = format!("{:label_w$}", "");
    let mut l2 = l1.clone();
    let mut sep = "─".repeat(label_w);
    for ((ns, start, count), width) in gs.iter().zip(&widths) {
        l1.push_str(&format!("│ {ns:<0$}", width - 1));
        let nums: String = (*start..start + count)
            .map(|j| format!(" {j:>w$}"))
            .collect();
        l2.push_str(&format!("│{nums:<width$}"));
        sep.push('┼');
        sep.push_str(&"─".repeat(*width));
    }
    for line in [l1, l2, sep] {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for (ns, start, count) in &gs {
        let mut line = format!("{ns:label_w$}");
        for width in &widths {
            line.push_str(&format!("│{:width$}", ""));
        }
        out.push_str(line.trim_end());
        out.push('\n');
        for (i, pod) in pods.iter().enumerate().skip(*start).take(*count) {
            let mut line = format!("{:label_w$}", format!("  {i:>w$} {}", pod.name));
            for ((_, s2, c2), width) in gs.iter().zip(&widths) {
                let cells: String = (*s2..s2 + c2)
                    .map(|j| {
                        let mark = if p.allowed(i, j) { "✓" } else { "·" };
                        format!(" {mark:>w$}")
                    })
                    .collect();
                line.push_str(&format!("│{cells:<width$}"));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_model::Protocol;

    #[test]
    fn table_layout() {
        let pods = vec![
            EndpointId::new("a", "web"),
            EndpointId::new("a", "db"),
            EndpointId::new("b", "client"),
        ];
        let mut rows = vec![BitSet::new(3); 3];
        for (i, j) in [(0, 0), (1, 1), (2, 2), (2, 0)] {
            rows[i].insert(j);
        }
        let m = Matrix {
            pods,
            probes: vec![ProbeMatrix {
                probe: Probe::new(Protocol::Tcp, 80),
                rows,
            }],
        };
        let t = table(&m);
        let want = "\
probe 80/TCP: 4 of 9 pairs allowed (from = rows, to = columns; ✓ allowed, · denied)
           │ a   │ b
           │ 0 1 │ 2
───────────┼─────┼───
a          │     │
  0 web    │ ✓ · │ ·
  1 db     │ · ✓ │ ·
b          │     │
  2 client │ ✓ · │ ✓
";
        assert_eq!(t, want, "got:\n{t}");
        let j = serde_json::to_value(to_json(&m)).unwrap();
        assert_eq!(j["pods"][2], "b/client");
        assert_eq!(j["probes"][0]["protocol"], "TCP");
        assert_eq!(j["probes"][0]["allowed"][2][0], true);
    }
}
