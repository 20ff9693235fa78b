//! `--established revoke` on a real lab (root only; it prints why it skips otherwise): two
//! clients hold TCP connections to one server and send a byte every 50 ms, over IPv4 and over
//! IPv6 (a dual-stack lab on the bridge CNI). A policy then admits only the second client.
//! With `revoke` the first client's connections stop delivering within a second of the write
//! while the second's go on; with `keep` both go on (conntrack lets established flows pass).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use palisade_lab::held::Held;
use serde_json::Value;

fn palisade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .output()
        .expect("run palisade")
}

fn ok(args: &[&str]) -> String {
    let out = palisade(args);
    assert!(
        out.status.success(),
        "palisade {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Takes the lab down when the test ends, also when it fails.
struct LabGuard(String);

impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = palisade(&["lab", "--name", &self.0, "down"]);
    }
}

fn pod<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .find(|p| p["pod"] == name)
        .unwrap_or_else(|| panic!("no pod {name} in {status}"))
}

fn addr(p: &Value, v6: bool) -> IpAddr {
    p["ips"]
        .as_array()
        .expect("ips")
        .iter()
        .filter_map(|i| i.as_str()?.parse::<IpAddr>().ok())
        .find(|ip| ip.is_ipv6() == v6)
        .unwrap_or_else(|| panic!("no {} address: {p}", if v6 { "IPv6" } else { "IPv4" }))
}

/// One lab per mode: (time from the write until the cut connections stopped delivering,
/// per family), or `None` for a family whose connection was not cut.
fn run(mode: &str) -> Vec<Option<Duration>> {
    let name = format!("trv{}-{}", &mode[..3], std::process::id());
    let _guard = LabGuard(name.clone());
    // The manifests of `examples/revoke`, which `palisade bench revoke` uses too.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/revoke");
    let pods = example.join("pods.yaml").display().to_string();
    let policy = example.join("server-from-kept.yaml");
    ok(&[
        "lab",
        "--name",
        &name,
        "up",
        "-f",
        &pods,
        "--nodes",
        "2",
        "--dataplane",
        "nftables",
        "--cni",
        "bridge",
        "--ip-family",
        "dual",
        "--established",
        mode,
    ]);
    let status: Value =
        serde_json::from_str(&ok(&["lab", "--name", &name, "status", "-o", "json"])).expect("json");
    let (server, cut, kept) = (
        pod(&status, "rv/server"),
        pod(&status, "rv/cut"),
        pod(&status, "rv/kept"),
    );
    let netns = |p: &Value| p["netns"].as_str().expect("netns").to_string();

    let mut held = Held::serve(&netns(server), 7100).expect("server");
    let mut clients = Vec::new();
    for v6 in [false, true] {
        for who in [cut, kept] {
            let to = SocketAddr::new(addr(server, v6), 7100);
            let local = held
                .connect(&netns(who), to, Duration::from_millis(50))
                .expect("connect");
            clients.push((v6, who["pod"] == "rv/cut", local));
        }
    }
    let all: Vec<SocketAddr> = clients.iter().map(|c| c.2).collect();
    let started = Instant::now();
    assert!(
        held.wait_delivering(&all, started, Duration::from_secs(5)),
        "connections did not start"
    );

    let written = Instant::now();
    ok(&[
        "lab",
        "--name",
        &name,
        "apply",
        "-f",
        &policy.display().to_string(),
    ]);
    std::thread::sleep(Duration::from_secs(3));
    let now = Instant::now();
    let mut out = Vec::new();
    for v6 in [false, true] {
        let family = if v6 { "IPv6" } else { "IPv4" };
        for (_, is_cut, local) in clients.iter().filter(|c| c.0 == v6) {
            let last = held.last_delivery(*local).expect("delivered");
            if *is_cut {
                out.push(
                    (now - last > Duration::from_secs(1))
                        .then(|| last.saturating_duration_since(written)),
                );
            } else {
                assert!(
                    now - last < Duration::from_millis(500),
                    "{mode}: the allowed connection over {family} stopped"
                );
            }
        }
    }
    drop(held);
    if mode == "revoke" {
        // The revocation is in the drop stream.
        let drops = ok(&["lab", "--name", &name, "drops", "-o", "json"]);
        assert!(
            drops.lines().any(|l| l.contains("\"revoked\":true")),
            "{drops}"
        );
    }
    out
}

fn skip() -> bool {
    // SAFETY: geteuid has no side effects.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/usr/lib/cni/bridge").exists() {
        eprintln!("skipped: needs root and the reference CNI plugins (scripts/setup)");
        return true;
    }
    false
}

#[test]
fn revoke_cuts_denied_connections_and_keep_does_not() {
    if skip() {
        return;
    }
    for (family, cut_after) in ["IPv4", "IPv6"].iter().zip(run("revoke")) {
        let after =
            cut_after.unwrap_or_else(|| panic!("revoke: the denied {family} connection went on"));
        eprintln!("revoke: denied {family} connection cut {after:?} after the write");
        assert!(
            after < Duration::from_secs(2),
            "{family}: cut only after {after:?}"
        );
    }
    for (family, cut_after) in ["IPv4", "IPv6"].iter().zip(run("keep")) {
        assert_eq!(cut_after, None, "keep: the {family} connection was cut");
    }
}
