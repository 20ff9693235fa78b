//! End-to-end tests of `palisade drops` on real network namespaces (root only; each test says
//! why it skips otherwise):
//!
//! * `seed_lab_drops_are_attributed`: the seed lab (nftables, agents in the lab daemon) with
//!   `web-deny-all`; curl from `bob/client` to `default/app-web` is dropped, and `palisade
//!   drops -o json` (asking the lab), `palisade lab drops` and `palisade drops --follow` show
//!   `bob/client → default/app-web 80/TCP ingress` naming `default/web-deny-all`, rule null;
//!   the agent counts it in `policy_drops_total`.
//! * `deny_rule_and_flood_through_etcd`: the seed lab on iptables with etcd and one agent
//!   process per node; an admin-tier policy whose egress rule 1 denies UDP 9999 is written to
//!   the datastore; its drops are named with that rule index by `palisade drops --datastore`;
//!   then a flood of 100,000 such packets: the agent's CPU time and memory stay bounded (both
//!   printed), the kernel's limit bounds what is logged, and `/drops` still answers.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use palisade_model::{Action, Policy, PolicyId, PortMatch, PortSpec, Protocol, Rule, Selector};
use palisade_store::codec::{StoredObject, OWNER_APPLY};
use palisade_store::Datastore as _;
use serde_json::Value;

mod common;

use common::lab::{json_lines, ok, palisade, run, skip_unless_root, LabGuard};

static ONE_LAB_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `lab up` of `examples/seed` with `extra` flags: the lab's JSON status.
fn seed_lab_up(name: &str, extra: &[&str]) -> Value {
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed");
    let seed = seed.display().to_string();
    let mut args = vec!["lab", "--name", name, "up", "-f", &seed, "-o", "json"];
    args.extend(extra);
    serde_json::from_str(&ok(&args)).expect("lab up JSON")
}

fn pod_ip(status: &Value, pod: &str) -> String {
    status["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .find(|p| p["pod"] == pod)
        .and_then(|p| p["ip"].as_str())
        .unwrap_or_else(|| panic!("no pod {pod} in {status}"))
        .to_string()
}

fn curl_from_bob(lab: &str, url: &str) {
    let out = run(&[
        "lab",
        "--name",
        lab,
        "exec",
        "bob/client",
        "--",
        "curl",
        "-s",
        "-m",
        "1",
        url,
    ]);
    assert!(!out.status.success(), "web-deny-all must block curl");
}

fn is_the_seed_drop(d: &Value) -> bool {
    d["from"] == "bob/client"
        && d["to"] == "default/app-web"
        && d["port"] == 80
        && d["protocol"] == "TCP"
        && d["direction"] == "ingress"
        && d["tier"] == "default"
        && d["rule"].is_null()
        && d["policy"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p == "default/web-deny-all"))
        && d["node"].is_string()
        && d["time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.contains('T'))
}

#[test]
fn seed_lab_drops_are_attributed() {
    if skip_unless_root("seed_lab_drops_are_attributed") {
        return;
    }
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let name = format!("tdrops-{}", std::process::id());
    let _guard = LabGuard(name.clone());
    let status = seed_lab_up(&name, &[]);
    let url = format!("http://{}/", pod_ip(&status, "default/app-web"));

    // Follow from before the drop: the new line arrives on the stream.
    let mut follower = palisade()
        .args(["drops", "--lab", &name, "--follow", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("palisade drops --follow");
    let stdout = follower.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The follower is connected once the agents' /drops streams are open; curl until the
    // stream shows a drop (each curl is dropped anyway).
    let deadline = Instant::now() + Duration::from_secs(20);
    let followed = loop {
        curl_from_bob(&name, &url);
        if let Ok(line) = rx.recv_timeout(Duration::from_secs(2)) {
            break line;
        }
        assert!(Instant::now() < deadline, "--follow printed nothing");
    };
    let _ = follower.kill();
    let _ = follower.wait();
    let followed: Value = serde_json::from_str(&followed).expect("followed JSON line");
    assert!(is_the_seed_drop(&followed), "followed: {followed}");

    let drops = json_lines(&["drops", "--lab", &name, "-o", "json"]);
    let web = drops
        .iter()
        .find(|d| is_the_seed_drop(d))
        .unwrap_or_else(|| panic!("no attributed drop in {drops:?}"));
    let node = web["node"].as_str().expect("node").to_string();
    let web_node = status["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pod"] == "default/app-web")
        .unwrap()["node"]
        .clone();
    assert_eq!(web_node, node.as_str(), "dropped on app-web's node");

    // Filters, and the lab's own command.
    let lab = json_lines(&[
        "lab",
        "--name",
        &name,
        "drops",
        "--node",
        &node,
        "--namespace",
        "bob",
        "-o",
        "json",
    ]);
    assert!(lab.iter().any(is_the_seed_drop), "lab drops: {lab:?}");
    let none = json_lines(&["drops", "--lab", &name, "--namespace", "myns", "-o", "json"]);
    assert!(none.is_empty(), "myns has no drops: {none:?}");
    let table = ok(&["drops", "--lab", &name]);
    assert!(
        table.lines().next().unwrap_or_default().starts_with("TIME")
            && table.contains("default/web-deny-all"),
        "{table}"
    );

    // The metric, from the agent of that node.
    let agents: Value =
        serde_json::from_str(&ok(&["agent", "status", "--lab", &name, "-o", "json"]))
            .expect("agent status");
    let addr = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["node"] == node.as_str())
        .and_then(|a| a["metricsAddr"].as_str())
        .expect("metrics address")
        .to_string();
    let metrics = http_get(&addr, "/metrics");
    let series = "palisade_agent_policy_drops_total{namespace=\"default\",pod=\"app-web\",direction=\"ingress\"}";
    let count: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{metrics}"));
    assert!(count >= 1);
}

/// The body of `GET path` at `addr` (HTTP/1.0, the agent's plain server).
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the agent");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("agent answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers");
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{head}"
    );
    body.to_string()
}

/// (CPU seconds, resident kB) of process `pid`.
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the
    // 13th of them.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no side effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / ticks;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    (cpu, rss)
}

/// The pid of the `palisade agent` process of `node` whose command line names `url`.
fn agent_pid(node: &str, url: &str) -> u32 {
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let has = |flag: &str, value: &str| args.windows(2).any(|w| w[0] == flag && w[1] == value);
        if args.iter().any(|a| a == "agent") && has("--node", node) && has("--datastore", url) {
            return pid;
        }
    }
    panic!("no agent process of node {node} for {url}");
}

/// Admin tier, every `role=client` pod: rule 0 allows TCP 7, rule 1 denies UDP 9999.
fn flood_deny() -> Policy {
    let port = |protocol, p| PortSpec {
        protocol,
        port: PortMatch::Range { start: p, end: p },
    };
    Policy {
        id: PolicyId {
            tier: "admin".into(),
            namespace: None,
            name: "flood-deny".into(),
        },
        order: 10,
        selector: Selector::parse("role == \"client\"").unwrap(),
        namespace_selector: Selector::All,
        staged: false,
        ingress: None,
        egress: Some(vec![
            Rule {
                action: Action::Allow,
                peers: vec![],
                ports: vec![port(Protocol::Tcp, 7)],
            },
            Rule {
                action: Action::Deny,
                peers: vec![],
                ports: vec![port(Protocol::Udp, 9999)],
            },
        ]),
    }
}

#[test]
fn deny_rule_and_flood_through_etcd() {
    if skip_unless_root("deny_rule_and_flood_through_etcd") {
        return;
    }
    if !palisade_store::testing::etcd_available() {
        eprintln!("skipping deny_rule_and_flood_through_etcd: no etcd binary");
        return;
    }
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let etcd = palisade_store::testing::EtcdServer::start().expect("etcd");
    let url = format!("etcd://{}", etcd.endpoint());
    let name = format!("tdrflood-{}", std::process::id());
    let _guard = LabGuard(name.clone());
    let status = seed_lab_up(&name, &["--dataplane", "iptables", "--datastore", &url]);
    let web = pod_ip(&status, "default/app-web");

    // A model policy with a Deny rule, straight into the datastore (no manifest kind has
    // Deny rules before ClusterNetworkPolicy).
    let policy = flood_deny();
    let key = palisade_store::keys::policy(
        &policy.id.tier,
        policy.id.namespace.as_deref(),
        &policy.id.name,
    )
    .expect("policy key");
    let value = StoredObject::Policy(policy)
        .encode(OWNER_APPLY)
        .expect("encode");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = palisade_store::EtcdStore::connect(palisade_store::EtcdConfig::new([etcd
            .endpoint()
            .to_string()]))
        .await
        .expect("connect");
        store.put(&key, value).await.expect("put");
    });

    let send = |n: u32| {
        ok(&[
            "lab",
            "--name",
            &name,
            "exec",
            "bob/client",
            "--",
            "python3",
            "-c",
            &format!(
                "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
                 for i in range({n}):\n  s.sendto(b'x'*16,('{web}',9999))\n"
            ),
        ])
    };
    let drops = || {
        json_lines(&[
            "drops",
            "--datastore",
            &url,
            "--namespace",
            "bob",
            "-o",
            "json",
        ])
    };
    let is_deny = |d: &Value| {
        d["from"] == "bob/client"
            && d["to"] == "default/app-web"
            && d["protocol"] == "UDP"
            && d["port"] == 9999
            && d["direction"] == "egress"
            && d["tier"] == "admin"
            && d["policy"] == "admin:flood-deny"
            && d["rule"] == 1
    };
    // Until the agents have programmed the policy, the packets are not dropped by it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        send(1);
        let got = drops();
        if let Some(d) = got.iter().find(|d| is_deny(d)) {
            let bob_node = status["pods"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["pod"] == "bob/client")
                .unwrap()["node"]
                .clone();
            assert_eq!(d["node"], bob_node, "dropped on the sender's node");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no egress drop named with rule 1: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // The flood.
    let bob_node = status["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pod"] == "bob/client")
        .and_then(|p| p["node"].as_str())
        .unwrap()
        .to_string();
    let pid = agent_pid(&bob_node, &url);
    let logged_before = drops().iter().filter(|d| is_deny(d)).count();
    let (cpu0, rss0) = usage(pid);
    let started = Instant::now();
    send(100_000);
    let flood_secs = started.elapsed().as_secs_f64();
    let answered = Instant::now();
    let after = drops();
    let answer_ms = answered.elapsed().as_millis();
    let (cpu1, rss1) = usage(pid);
    let logged = after.iter().filter(|d| is_deny(d)).count();
    eprintln!(
        "flood of 100000 packets in {flood_secs:.2}s: agent CPU {:.3}s, RSS {rss0} kB -> {rss1} kB, \
         /drops answered in {answer_ms} ms with {logged} of its drops (before: {logged_before})",
        cpu1 - cpu0
    );
    // 100 logged per second and rule, burst 100: whatever the flood, the agent reads a few
    // hundred records at most.
    assert!(logged > logged_before, "the flood was not logged");
    assert!(
        (logged - logged_before) as f64 <= 100.0 + 100.0 * (flood_secs + 2.0),
        "the kernel's limit let {} through",
        logged - logged_before
    );
    assert!(
        cpu1 - cpu0 < 2.0,
        "agent CPU {:.3}s during the flood",
        cpu1 - cpu0
    );
    assert!(
        rss1 < rss0 + 20 * 1024,
        "agent RSS grew {rss0} kB -> {rss1} kB"
    );
    assert!(answer_ms < 5000, "/drops took {answer_ms} ms");
}
