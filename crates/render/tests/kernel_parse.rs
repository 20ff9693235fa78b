//! Root test: the real `ipset`, `iptables-restore`, `ip6tables-restore` and `nft` parse the
//! rendered text, inside a throwaway network namespace (removed by a guard even on failure).
//! Skipped, with the reason printed, when not root or a tool is missing.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::gen::{cluster, NODE};
use palisade_calc::{CalcConfig, Calculator, DesiredState, Update};
use palisade_model::Cluster;
use palisade_render::{build, delta, iptables, nft, RenderConfig};

struct NetNs(String);

impl NetNs {
    fn new() -> Option<NetNs> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("pal-rt-{}-{nanos:x}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(NetNs(name))
    }

    /// Runs `cmd args` in the namespace with `input` on stdin; its stdout, or `Err(stderr)`.
    fn run(&self, cmd: &[&str], input: &str) -> Result<String, String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{cmd:?} failed: {}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ))
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn skip_reason() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root".into());
    }
    for tool in [
        "ip",
        "ipset",
        "iptables-restore",
        "ip6tables-restore",
        "nft",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} not installed"));
        }
    }
    None
}

fn check_text(ns: &NetNs, t: &iptables::IptablesText, script: &str) {
    ns.run(&["ipset", "restore"], &t.ipset).unwrap();
    // `--test` first (what `palisade render --check` does), then for real: the namespace is
    // ours, and a real load also proves every referenced set and chain exists.
    for (tool, text) in [("iptables-restore", &t.v4), ("ip6tables-restore", &t.v6)] {
        if let Some(text) = text {
            ns.run(&[tool, "--test", "--noflush"], text).unwrap();
            ns.run(&[tool, "--noflush"], text).unwrap();
        }
    }
    ns.run(&["nft", "-c", "-f", "-"], script).unwrap();
    ns.run(&["nft", "-f", "-"], script).unwrap();
    // The script is idempotent: a second load replaces the table.
    ns.run(&["nft", "-f", "-"], script).unwrap();
}

fn scenarios() -> Vec<(&'static str, palisade_model::Cluster)> {
    vec![
        ("small", common::cluster_from_yaml(common::SMALL)),
        ("hostile", common::hostile_cluster()),
        ("many-ports", common::cluster_from_yaml(common::MANY_PORTS)),
        (
            "seed",
            common::place(common::example("seed"), &["node-1", "node-2"], true),
        ),
        (
            "three-tier",
            common::place(common::example("three-tier"), &["node-1"], false),
        ),
        (
            "named-ports",
            common::place(common::example("named-ports"), &["node-1", "node-2"], true),
        ),
    ]
}

#[test]
fn real_tools_parse_the_rendered_rulesets() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping kernel_parse: {why}");
        return;
    }
    let cfg = RenderConfig {
        drop_log_group: Some(5),
        ..RenderConfig::default()
    };
    for (name, cluster) in scenarios() {
        let ns = NetNs::new().expect("ip netns add");
        let state = common::state(&cluster, "node-1");
        let rs = build(&state, &cfg).unwrap();
        eprintln!(
            "scenario {name}: {} chains, {} sets",
            rs.chains.len(),
            rs.sets.len()
        );
        check_text(&ns, &iptables::render(&rs, true), &nft::render(&rs));
    }
}

/// Sorted lines of what the kernel holds, counters and volatile bits removed.
fn kernel_view(ns: &NetNs) -> Vec<String> {
    let mut lines = Vec::new();
    for cmd in [
        &["nft", "-s", "list", "table", "inet", "palisade"][..],
        &["iptables-save", "-t", "filter"][..],
        &["ip6tables-save", "-t", "filter"][..],
        &["ipset", "save"][..],
    ] {
        let out = ns.run(cmd, "").unwrap_or_default();
        for l in out.lines() {
            let l = l.trim().trim_end_matches(',');
            if l.starts_with('#') || l.is_empty() {
                continue;
            }
            // Chain lines carry counters: `:name ACCEPT [0:0]`.
            let l = l.split(" [").next().unwrap_or(l);
            // ipset's hash seed differs per set instance.
            let l = l.split(" initval ").next().unwrap_or(l);
            for part in l.split(", ") {
                lines.push(part.to_string());
            }
        }
    }
    lines.sort();
    lines
}

fn load_full(ns: &NetNs, state: &DesiredState, cfg: &RenderConfig) {
    let rs = build(state, cfg).unwrap();
    let t = iptables::render(&rs, true);
    ns.run(&["ipset", "restore"], &t.ipset).unwrap();
    for (tool, text) in [("iptables-restore", &t.v4), ("ip6tables-restore", &t.v6)] {
        if let Some(text) = text {
            ns.run(&[tool, "--noflush"], text).unwrap();
        }
    }
    ns.run(&["nft", "-f", "-"], &nft::render(&rs)).unwrap();
}

fn updates_to(c: &Cluster, old: &Cluster) -> Vec<Update> {
    let mut u: Vec<Update> = c
        .namespaces
        .values()
        .cloned()
        .map(Update::NamespaceUpsert)
        .collect();
    u.extend(c.endpoints.iter().cloned().map(Update::EndpointUpsert));
    u.extend(c.policies.iter().cloned().map(Update::PolicyUpsert));
    u.extend(
        old.endpoints
            .iter()
            .filter(|e| c.endpoint(&e.id).is_none())
            .map(|e| Update::EndpointRemove(e.id.clone())),
    );
    u.extend(
        old.policies
            .iter()
            .filter(|p| !c.policies.iter().any(|q| q.id == p.id))
            .map(|p| Update::PolicyRemove(p.id.clone())),
    );
    u
}

/// Full(prev) + delta text in one namespace equals full(next) in another, for both backends.
#[test]
fn deltas_applied_by_the_real_tools_reach_the_full_state() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping kernel delta test: {why}");
        return;
    }
    let cfg = RenderConfig::default();
    for (a, b) in [
        (11u64, 12u64),
        (13, 14),
        (15, 16),
        (17, 18),
        (19, 20),
        (21, 22),
    ] {
        let (ca, cb) = (cluster(a * 7919), cluster(b * 7919));
        let mut calc = Calculator::new(CalcConfig::new(NODE));
        calc.apply_all(updates_to(&ca, &Cluster::new()));
        let prev = calc.state().clone();
        let deltas = calc.apply_all(updates_to(&cb, &ca));
        let next = calc.state().clone();

        let incremental = NetNs::new().expect("ip netns add");
        load_full(&incremental, &prev, &cfg);
        let d = delta::iptables(&prev, &next, &deltas, &cfg).unwrap();
        let script = delta::nft(&prev, &next, &deltas, &cfg).unwrap();
        let ctx = format!("seeds {a}->{b}, deltas {deltas:?}\n{d:#?}\n{script}");
        incremental
            .run(&["ipset", "restore"], &d.ipset_pre)
            .unwrap_or_else(|e| panic!("{e}\n{ctx}"));
        for (tool, text) in [("iptables-restore", &d.v4), ("ip6tables-restore", &d.v6)] {
            if let Some(text) = text {
                incremental
                    .run(&[tool, "--noflush"], text)
                    .unwrap_or_else(|e| panic!("{e}\n{ctx}"));
            }
        }
        incremental
            .run(&["ipset", "restore"], &d.ipset_post)
            .unwrap_or_else(|e| panic!("{e}\n{ctx}"));
        if !script.is_empty() {
            incremental
                .run(&["nft", "-f", "-"], &script)
                .unwrap_or_else(|e| panic!("{e}\n{ctx}"));
        }
        let fresh = NetNs::new().expect("ip netns add");
        load_full(&fresh, &next, &cfg);
        let (got, want) = (kernel_view(&incremental), kernel_view(&fresh));
        let extra: Vec<&String> = got.iter().filter(|l| !want.contains(l)).collect();
        let missing: Vec<&String> = want.iter().filter(|l| !got.contains(l)).collect();
        assert!(
            got == want,
            "seeds {a}->{b}: incremental kernel state differs\nextra {extra:#?}\nmissing {missing:#?}"
        );
    }
}
