//! The reference CNI plugins, called through the lab's invoker exactly as `lab up` calls them
//! (root only; each test prints why it skips otherwise): one test per plugin (`bridge` with
//! `host-local`, `ptp` with `static`, `loopback`), ADD then CHECK then DEL, checking what the
//! plugin made in the namespaces; the environment and stdin a plugin gets; a plugin's own
//! error message.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use palisade_lab::cni::config;
use palisade_lab::cni::invoke::{invoke, CniCommand, Target, PLUGIN_DIR};
use palisade_lab::cni::result::parse_add;
use palisade_lab::plan::NodePlan;
use palisade_lab::{Cni, IpFamily};
use serde_json::Value;

fn skip(test: &str) -> bool {
    // SAFETY: geteuid has no side effects.
    if unsafe { libc::geteuid() } == 0 && Path::new(PLUGIN_DIR).join("bridge").exists() {
        return false;
    }
    eprintln!("skipping {test}: needs root and the reference plugins in {PLUGIN_DIR}");
    true
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A node namespace and a pod namespace (names prefixed `cnilab-<pid>-<tag>`), both without
/// DAD, deleted when dropped.
struct Pair {
    node: String,
    pod: String,
}

impl Pair {
    fn new(tag: &str) -> Pair {
        let base = format!("cnilab-{}-{tag}", std::process::id());
        let pair = Pair {
            node: format!("{base}-n"),
            pod: format!("{base}-p"),
        };
        for ns in [&pair.node, &pair.pod] {
            ip(&["netns", "add", ns]);
            ip(&[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ]);
        }
        pair
    }

    fn target(&self) -> Target<'_> {
        Target {
            plugin_dir: Path::new(PLUGIN_DIR),
            node_netns: &self.node,
            container_id: &self.pod,
            pod_netns: &self.pod,
            ifname: "eth0",
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.pod, &self.node] {
            let _ = Command::new("ip").args(["netns", "delete", ns]).output();
        }
    }
}

fn addrs(netns: &str, dev: &str) -> BTreeSet<IpAddr> {
    ip(&[
        "-n", netns, "-o", "addr", "show", "dev", dev, "scope", "global",
    ])
    .lines()
    .filter_map(|l| l.split_whitespace().nth(3))
    .filter_map(|a| a.split('/').next()?.parse().ok())
    .collect()
}

fn has_link(netns: &str, dev: &str) -> bool {
    Command::new("ip")
        .args(["-n", netns, "link", "show", dev])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn bridge_with_host_local_add_check_del() {
    if skip("bridge_with_host_local_add_check_del") {
        return;
    }
    let pair = Pair::new("br");
    let node = NodePlan {
        name: "n1".into(),
        index: 1,
        netns: pair.node.clone(),
        link_addr: "169.254.255.1".parse().unwrap(),
        addresses: Vec::new(),
    };
    palisade_lab::cni::prepare_node(Cni::Bridge, &node, &Default::default()).expect("bridge");
    let leases = tempfile::tempdir().expect("tempdir");
    let ipam = config::host_local(1, IpFamily::Dual, leases.path(), &BTreeSet::new());
    let mut conf = config::network(Cni::Bridge, "cnilab-test", ipam).expect("config");

    let result = invoke(&pair.target(), CniCommand::Add, &conf).expect("ADD");
    let added = parse_add(&result).expect("result");
    let want: Vec<IpAddr> = vec![
        "10.244.0.2".parse().unwrap(),
        "fd00:10:244::2".parse().unwrap(),
    ];
    assert_eq!(added.ips, want, "{result}");
    assert_eq!(addrs(&pair.pod, "eth0"), want.iter().copied().collect());
    let veth = added.host_interface.expect("host veth");
    let link = ip(&["-n", &pair.node, "-o", "link", "show", &veth]);
    assert!(link.contains("master cni0"), "{link}");
    let lease = leases.path().join("cnilab-test").join("10.244.0.2");
    assert!(lease.exists(), "host-local lease in the lab's directory");
    let routes = ip(&["-n", &pair.pod, "route", "show", "default"]);
    assert!(routes.contains("via 10.244.0.1"), "{routes}");

    conf["prevResult"] = result;
    invoke(&pair.target(), CniCommand::Check, &conf).expect("CHECK");
    invoke(&pair.target(), CniCommand::Del, &conf).expect("DEL");
    assert!(!has_link(&pair.pod, "eth0"), "eth0 left after DEL");
    assert!(!has_link(&pair.node, &veth), "{veth} left after DEL");
    assert!(!lease.exists(), "lease left after DEL");
}

#[test]
fn ptp_with_static_add_check_del() {
    if skip("ptp_with_static_add_check_del") {
        return;
    }
    let pair = Pair::new("ptp");
    let ips: Vec<IpAddr> = vec![
        "10.0.1.1".parse().unwrap(),
        "fd00::a00:101".parse().unwrap(),
    ];
    let ipam = config::static_ipam(Cni::Ptp, &ips, &ips.iter().copied().collect()).expect("ipam");
    let mut conf = config::network(Cni::Ptp, "cnilab-test", ipam.ipam).expect("config");
    let result = invoke(&pair.target(), CniCommand::Add, &conf).expect("ADD");
    let added = parse_add(&result).expect("result");
    assert_eq!(added.ips, ips, "the manifest's addresses are kept");
    let veth = added.host_interface.expect("host veth");
    for a in &ips {
        let route = ip(&["-n", &pair.node, "route", "get", &a.to_string()]);
        assert!(route.contains(&format!("dev {veth}")), "{route}");
    }
    // ptp puts each gateway on the host side of the pod's veth.
    let host = addrs(&pair.node, &veth);
    for (gw, _) in &ipam.gateways {
        assert!(host.contains(gw), "{gw} not on {veth}: {host:?}");
    }
    conf["prevResult"] = result;
    invoke(&pair.target(), CniCommand::Check, &conf).expect("CHECK");
    invoke(&pair.target(), CniCommand::Del, &conf).expect("DEL");
    assert!(!has_link(&pair.node, &veth), "{veth} left after DEL");
}

#[test]
fn loopback_brings_lo_up() {
    if skip("loopback_brings_lo_up") {
        return;
    }
    let pair = Pair::new("lo");
    let conf = config::loopback("cnilab-test");
    let mut target = pair.target();
    target.ifname = "lo";
    assert!(!ip(&["-n", &pair.pod, "link", "show", "lo"]).contains(",UP"));
    invoke(&target, CniCommand::Add, &conf).expect("ADD");
    assert!(ip(&["-n", &pair.pod, "link", "show", "lo"]).contains(",UP"));
    invoke(&target, CniCommand::Del, &conf).expect("DEL");
}

#[test]
fn a_plugin_gets_the_runtime_environment_and_the_config_on_stdin() {
    if skip("a_plugin_gets_the_runtime_environment_and_the_config_on_stdin") {
        return;
    }
    let pair = Pair::new("env");
    let dir = tempfile::tempdir().expect("tempdir");
    let dump = dir.path().join("dump");
    let plugin = dir.path().join("envdump");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\nenv | grep ^CNI_ | sort > {d}.env\ncat > {d}.stdin\necho '{{\"cniVersion\":\"1.0.0\"}}'\n",
            d = dump.display()
        ),
    )
    .expect("write plugin");
    Command::new("chmod")
        .args(["+x", &plugin.display().to_string()])
        .status()
        .expect("chmod");
    let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "envdump"});
    let mut target = pair.target();
    target.plugin_dir = dir.path();
    let out = invoke(&target, CniCommand::Check, &conf).expect("runs");
    assert_eq!(out["cniVersion"], "1.0.0");
    let env = std::fs::read_to_string(dump.with_extension("env")).expect("env");
    let want = format!(
        "CNI_COMMAND=CHECK\nCNI_CONTAINERID={p}\nCNI_IFNAME=eth0\nCNI_NETNS=/run/netns/{p}\nCNI_PATH={d}\n",
        p = pair.pod,
        d = dir.path().display()
    );
    assert_eq!(env, want);
    let stdin: Value =
        serde_json::from_slice(&std::fs::read(dump.with_extension("stdin")).expect("stdin"))
            .expect("JSON on stdin");
    assert_eq!(stdin, conf);
}

#[test]
fn a_plugin_failure_carries_the_plugins_message() {
    if skip("a_plugin_failure_carries_the_plugins_message") {
        return;
    }
    let pair = Pair::new("err");
    let ips: Vec<IpAddr> = vec!["224.0.0.5".parse().unwrap()];
    let ipam = config::static_ipam(Cni::Ptp, &ips, &BTreeSet::new()).expect("ipam");
    let conf = config::network(Cni::Ptp, "cnilab-test", ipam.ipam).expect("config");
    let err = invoke(&pair.target(), CniCommand::Add, &conf).unwrap_err();
    assert!(err.contains("network is unreachable"), "{err}");
    assert!(err.contains("CNI error"), "{err}");
    let _ = invoke(&pair.target(), CniCommand::Del, &conf);
    let mut missing = pair.target();
    missing.plugin_dir = Path::new("/nonexistent");
    let err = invoke(&missing, CniCommand::Add, &conf).unwrap_err();
    assert!(err.contains("containernetworking-plugins"), "{err}");
}
