//! Root tests against the real kernel, each in its own throwaway network namespaces (removed
//! by a drop guard, also on failure). Without root they print why and pass.

mod common;

use std::sync::Arc;

use common::*;
use palisade_calc::{DesiredState, IpSetId};
use palisade_dataplane::netns::{is_root, NetnsGuard};
use palisade_dataplane::{
    iptables_dataplane, nft_dataplane, CounterKind, Dataplane, RetryPolicy, ThreadSleeper,
};
use palisade_model::{Direction, EndpointId};
use palisade_render::RenderConfig;

fn skip() -> bool {
    if !is_root() {
        eprintln!("skipped: needs root to create network namespaces");
        return true;
    }
    for tool in ["ip", "iptables-save", "ip6tables-restore", "ipset", "nft"] {
        if std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipped: {tool} is not installed");
            return true;
        }
    }
    false
}

/// The packet test also needs netcat-openbsd and ss.
fn skip_packets() -> bool {
    for tool in ["nc", "ss"] {
        if std::process::Command::new(tool).arg("-h").output().is_err() {
            eprintln!("skipped: {tool} is not installed");
            return true;
        }
    }
    false
}

fn sh(ns: &NetnsGuard, program: &str, args: &[&str]) -> String {
    let out = ns.run(program, args, None).unwrap();
    assert!(
        out.success(),
        "{program} {args:?} in {}: {}",
        ns.name(),
        out.stderr
    );
    out.stdout
}

fn dataplanes(ns: &NetnsGuard) -> Vec<Box<dyn Dataplane>> {
    let runner = Arc::new(ns.runner());
    vec![
        Box::new(iptables_dataplane(
            RenderConfig::default(),
            runner.clone(),
            Arc::new(ThreadSleeper),
            RetryPolicy::default(),
        )),
        Box::new(nft_dataplane(
            RenderConfig::default(),
            runner,
            Arc::new(ThreadSleeper),
            RetryPolicy::default(),
        )),
    ]
}

#[test]
fn both_backends_program_and_read_back_what_was_desired() {
    if skip() {
        return;
    }
    let ns = NetnsGuard::new("dpk").unwrap();
    for mut dp in dataplanes(&ns) {
        let r = dp.apply_state(&state()).unwrap();
        assert!(!r.wrote_nothing());
        // Reading the kernel back finds exactly what was written: nothing to do.
        let r = dp.resync().unwrap();
        assert!(
            r.wrote_nothing(),
            "{}: resync after apply wrote {r:?}",
            dp.backend_name()
        );
    }
    let save = sh(&ns, "iptables-save", &["-t", "filter"]);
    let fwd: Vec<&str> = save
        .lines()
        .filter(|l| l.starts_with("-A FORWARD"))
        .collect();
    assert_eq!(fwd.len(), 1);
    assert!(fwd[0].ends_with("-j pal-FORWARD") && fwd[0].contains("pal:"));
    let sets = sh(&ns, "ipset", &["list", "-n"]);
    assert!(
        sets.lines().any(|l| l.starts_with("pal4-"))
            && sets.lines().any(|l| l.starts_with("pal6-"))
    );
    let nft = sh(&ns, "nft", &["list", "table", "inet", "palisade"]);
    assert!(nft.contains("hook forward"));
}

#[test]
fn drift_is_repaired_and_foreign_rules_survive() {
    if skip() {
        return;
    }
    let ns = NetnsGuard::new("dpd").unwrap();
    sh(
        &ns,
        "iptables",
        &["-A", "FORWARD", "-s", "192.0.2.1/32", "-j", "DROP"],
    );
    sh(&ns, "ipset", &["create", "foreign", "hash:ip"]);
    let mut dps = dataplanes(&ns);
    for dp in dps.iter_mut() {
        dp.apply_state(&state()).unwrap();
    }
    let healthy_ipt = sh(&ns, "iptables-save", &["-t", "filter"]);
    let healthy_nft = sh(&ns, "nft", &["list", "table", "inet", "palisade"]);

    // iptables: flush our chain, delete the jump, remove a set member.
    let web4 =
        palisade_render::names::set_name(palisade_render::ir::Family::V4, &IpSetId("web".into()));
    sh(&ns, "iptables", &["-F", "pal-FORWARD"]);
    sh(&ns, "iptables", &["-D", "FORWARD", "1"]);
    sh(&ns, "ipset", &["del", &web4, "10.0.1.2"]);
    let r = dps[0].resync().unwrap();
    assert_eq!(r.jumps_written, vec!["FORWARD"]);
    assert_eq!(r.chains_rewritten, vec!["pal-FORWARD"]);
    assert_eq!(r.members_added, 1);
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        strip(&sh(&ns, "iptables-save", &["-t", "filter"])),
        strip(&healthy_ipt)
    );
    assert!(sh(&ns, "ipset", &["save", &web4]).contains("10.0.1.2"));

    // A duplicated jump at the end and a foreign rule above ours: one jump, first, again.
    let jump = healthy_ipt
        .lines()
        .find(|l| l.starts_with("-A FORWARD -m comment"))
        .unwrap()
        .to_string();
    let dup: Vec<&str> = jump
        .split_whitespace()
        .map(|w| w.trim_matches('"'))
        .collect();
    sh(&ns, "iptables", &dup);
    sh(
        &ns,
        "iptables",
        &["-I", "FORWARD", "1", "-s", "192.0.2.2/32", "-j", "DROP"],
    );
    let r = dps[0].resync().unwrap();
    assert_eq!(r.jumps_written, vec!["FORWARD"]);
    let save = sh(&ns, "iptables-save", &["-t", "filter"]);
    let fwd: Vec<&str> = save
        .lines()
        .filter(|l| l.starts_with("-A FORWARD"))
        .collect();
    assert_eq!(fwd.len(), 3, "{fwd:?}");
    assert_eq!(fwd[0], jump);
    assert!(fwd[1].contains("192.0.2.2") && fwd[2].contains("192.0.2.1"));

    // nft: delete one rule by handle.
    let tw = palisade_render::names::endpoint_chain(Direction::Ingress, "pala0000000001");
    let listing = sh(
        &ns,
        "nft",
        &["-a", "list", "chain", "inet", "palisade", &tw],
    );
    let handle = listing
        .lines()
        .filter_map(|l| {
            l.rsplit_once("# handle ")
                .map(|(_, h)| h.trim().to_string())
        })
        .nth(1)
        .unwrap();
    sh(
        &ns,
        "nft",
        &["delete", "rule", "inet", "palisade", &tw, "handle", &handle],
    );
    let r = dps[1].resync().unwrap();
    assert_eq!(r.chains_rewritten, vec![tw]);
    assert_eq!(
        sh(&ns, "nft", &["list", "table", "inet", "palisade"]),
        healthy_nft
    );
    for dp in dps.iter_mut() {
        assert!(dp.resync().unwrap().wrote_nothing());
    }

    // Removing everything leaves the foreign rule and set.
    for dp in dps.iter_mut() {
        dp.remove_all().unwrap();
    }
    let save = sh(&ns, "iptables-save", &["-t", "filter"]);
    assert!(save.contains("-A FORWARD -s 192.0.2.1/32 -j DROP"));
    assert!(!save.contains("pal"));
    assert_eq!(sh(&ns, "ipset", &["list", "-n"]).trim(), "foreign");
}

#[test]
fn hostile_names_reach_the_kernel_only_as_hashes() {
    if skip() {
        return;
    }
    let ns = NetnsGuard::new("dph").unwrap();
    let hostile_ns = "evil\"; iptables -F; \"";
    let mut s = state();
    let mut p = allow_web();
    p.id = pid(hostile_ns, "$(reboot) flush ruleset");
    s.policies.insert(p.id.clone(), p.clone());
    let ep = endpoint(
        hostile_ns,
        "`rm -rf /`",
        "pala0000000003",
        "10.0.0.3",
        &[p.id.clone()],
    );
    s.endpoints.insert(ep.id.clone(), ep);
    for mut dp in dataplanes(&ns) {
        dp.apply_state(&s).unwrap();
    }
    let all = format!(
        "{}{}{}",
        sh(&ns, "iptables-save", &[]),
        sh(&ns, "ipset", &["save"]),
        sh(&ns, "nft", &["list", "ruleset"])
    );
    for bad in ["iptables -F", "reboot", "rm -rf", "flush ruleset", "evil"] {
        assert!(!all.contains(bad), "{bad:?} is in the kernel");
    }
}

/// A node namespace with two pod namespaces on veths (proxy ARP, /32 routes), Calico style.
struct Lab {
    node: NetnsGuard,
    pods: Vec<(NetnsGuard, String, String)>,
}

impl Lab {
    fn new(pods: &[(&str, &str)]) -> Lab {
        let node = NetnsGuard::new("node").unwrap();
        sh(&node, "sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        let mut out = Vec::new();
        for (iface, addr) in pods {
            let pod = NetnsGuard::new("pod").unwrap();
            let add = std::process::Command::new("ip")
                .args([
                    "link",
                    "add",
                    iface,
                    "netns",
                    node.name(),
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    pod.name(),
                ])
                .output()
                .unwrap();
            assert!(
                add.status.success(),
                "{}",
                String::from_utf8_lossy(&add.stderr)
            );
            sh(&node, "ip", &["link", "set", iface, "up"]);
            sh(
                &node,
                "sysctl",
                &["-qw", &format!("net.ipv4.conf.{iface}.proxy_arp=1")],
            );
            sh(
                &node,
                "ip",
                &["route", "add", &format!("{addr}/32"), "dev", iface],
            );
            sh(
                &pod,
                "ip",
                &["addr", "add", &format!("{addr}/32"), "dev", "eth0"],
            );
            sh(&pod, "ip", &["link", "set", "eth0", "up"]);
            sh(&pod, "ip", &["route", "add", "default", "dev", "eth0"]);
            out.push((pod, iface.to_string(), addr.to_string()));
        }
        Lab { node, pods: out }
    }
}

/// Serves TCP on `port` inside `pod` until dropped.
struct Listener(std::process::Child);

impl Listener {
    fn start(pod: &NetnsGuard, port: u16) -> Listener {
        let mut child = std::process::Command::new("ip")
            .args(["netns", "exec", pod.name(), "nc", "-lk", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the socket listens (a condition, not a sleep).
        for _ in 0..500 {
            let ss = pod
                .run("ss", &["-Hltn", &format!("sport = :{port}")], None)
                .unwrap();
            if !ss.stdout.trim().is_empty() {
                return Listener(child);
            }
            std::thread::yield_now();
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("listener on port {port} did not come up");
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn connects(from: &NetnsGuard, addr: &str, port: u16) -> bool {
    from.run("nc", &["-z", "-w", "1", addr, &port.to_string()], None)
        .unwrap()
        .success()
}

fn traffic_state() -> DesiredState {
    let mut s = state();
    s.policies.remove(&pid("ns1", "deny-block"));
    let web = s.ip_sets.get_mut(&IpSetId("web".into())).unwrap();
    web.members = [net("10.0.0.2/32")].into_iter().collect();
    s.endpoints
        .get_mut(&EndpointId::new("ns1", "a"))
        .unwrap()
        .tiers
        .ingress[0]
        .policies = vec![pid("ns1", "allow-web")];
    s
}

#[test]
fn real_packets_follow_the_policy_and_move_the_counters() {
    if skip() || skip_packets() {
        return;
    }
    for backend in ["iptables", "nftables"] {
        let lab = Lab::new(&[
            ("pala0000000001", "10.0.0.1"),
            ("pala0000000002", "10.0.0.2"),
        ]);
        let (a, b) = (&lab.pods[0].0, &lab.pods[1].0);
        let _l80 = Listener::start(a, 80);
        let _l81 = Listener::start(a, 81);
        let _lb = Listener::start(b, 80);
        let runner = Arc::new(lab.node.runner());
        let mut dp: Box<dyn Dataplane> = if backend == "iptables" {
            Box::new(iptables_dataplane(
                RenderConfig::default(),
                runner,
                Arc::new(ThreadSleeper),
                RetryPolicy::none(),
            ))
        } else {
            Box::new(nft_dataplane(
                RenderConfig::default(),
                runner,
                Arc::new(ThreadSleeper),
                RetryPolicy::none(),
            ))
        };
        // Before any policy everything flows (once the links are up: wait for it).
        assert!(
            (0..10).any(|_| connects(b, "10.0.0.1", 81)),
            "{backend}: open before policy"
        );
        dp.apply_state(&traffic_state()).unwrap();
        assert!(
            connects(b, "10.0.0.1", 80),
            "{backend}: b -> a:80 is allowed by allow-web"
        );
        assert!(
            !connects(b, "10.0.0.1", 81),
            "{backend}: b -> a:81 is not allowed"
        );
        assert!(connects(a, "10.0.0.2", 80), "{backend}: b is not isolated");
        let c = dp.counters().unwrap();
        let allow = c
            .iter()
            .find(|c| c.kind == CounterKind::PolicyRule && c.rule_index == Some(0))
            .unwrap_or_else(|| panic!("{backend}: no allow counter in {c:?}"));
        assert!(
            allow.packets >= 1,
            "{backend}: allow rule counter did not move: {c:?}"
        );
        let drop = c
            .iter()
            .find(|c| {
                c.kind == CounterKind::EndpointDrop
                    && c.endpoint == Some(EndpointId::new("ns1", "a"))
                    && c.direction == Direction::Ingress
            })
            .unwrap_or_else(|| panic!("{backend}: no drop counter in {c:?}"));
        assert!(
            drop.packets >= 1,
            "{backend}: drop counter did not move: {c:?}"
        );
        // Removing b from the set denies it at once.
        let mut s = traffic_state();
        s.ip_sets
            .get_mut(&IpSetId("web".into()))
            .unwrap()
            .members
            .clear();
        dp.apply_state(&s).unwrap();
        assert!(
            !connects(b, "10.0.0.1", 80),
            "{backend}: b left the web set"
        );
    }
}

#[test]
fn nft_element_changes_through_netlink_read_back_exactly() {
    if skip() {
        return;
    }
    use palisade_dataplane::nft::netlink::NetlinkElements;
    use palisade_dataplane::nft::NftBackend;
    use palisade_dataplane::StateDataplane;
    let ns = NetnsGuard::new("dpn").unwrap();
    let backend = NftBackend::with_element_writer(Arc::new(NetlinkElements::new(Some(
        ns.name().to_string(),
    ))));
    let mut dp = StateDataplane::new(
        backend,
        RenderConfig::default(),
        Arc::new(ns.runner()),
        Arc::new(ThreadSleeper),
        RetryPolicy::none(),
    );
    let mut s = state();
    dp.apply_state(&s).unwrap();
    let web = IpSetId("web".into());
    let steps: [fn(&mut DesiredState); 4] = [
        // Adjacent to an existing address, a prefix, and IPv6.
        |s| {
            let m = &mut s.ip_sets.get_mut(&IpSetId("web".into())).unwrap().members;
            m.insert(net("10.0.1.3/32"));
            m.insert(net("10.0.8.0/22"));
            m.insert(net("fd00::1:2/128"));
        },
        // Removing from the middle of adjacent addresses.
        |s| {
            s.ip_sets
                .get_mut(&IpSetId("web".into()))
                .unwrap()
                .members
                .remove(&net("10.0.1.2/32"));
        },
        // Everything out, then back in.
        |s| {
            s.ip_sets
                .get_mut(&IpSetId("web".into()))
                .unwrap()
                .members
                .clear()
        },
        |s| {
            s.ip_sets.get_mut(&IpSetId("web".into())).unwrap().members =
                [net("10.0.1.1/32"), net("10.0.1.2/32"), net("10.0.1.4/32")]
                    .into_iter()
                    .collect();
        },
    ];
    for (i, step) in steps.iter().enumerate() {
        step(&mut s);
        let r = dp.apply_state(&s).unwrap();
        let writes = r.writes();
        assert_eq!(writes.len(), 1, "step {i}: {writes:?}");
        assert_eq!(
            writes[0].program, "netlink",
            "step {i}: element-only change takes the fast path"
        );
        let again = dp.resync().unwrap();
        assert!(
            again.wrote_nothing(),
            "step {i}: kernel differs from desired after netlink write: {again:?}"
        );
    }
    // A change large enough to need several netlink messages in the one batch.
    let m = &mut s.ip_sets.get_mut(&web).unwrap().members;
    for i in 0..1200u32 {
        m.insert(net(&format!("10.50.{}.{}/32", i / 100, i % 100 * 2 + 1)));
    }
    let r = dp.apply_state(&s).unwrap();
    assert_eq!(r.writes()[0].program, "netlink");
    assert_eq!(r.members_added, 1200);
    assert!(dp.resync().unwrap().wrote_nothing());
    let m = &mut s.ip_sets.get_mut(&web).unwrap().members;
    m.retain(|x| !format!("{x:?}").contains("10.50."));
    dp.apply_state(&s).unwrap();
    assert!(dp.resync().unwrap().wrote_nothing());

    let web4 = palisade_render::names::set_name(palisade_render::ir::Family::V4, &web);
    let listing = sh(&ns, "nft", &["list", "set", "inet", "palisade", &web4]);
    assert!(
        listing.contains("10.0.1.4") && !listing.contains("10.0.1.3"),
        "{listing}"
    );
}

#[test]
fn a_synthetic_cluster_reads_back_exactly_on_both_backends() {
    if skip() {
        return;
    }
    use palisade_engine::synth::{generate, SynthConfig};
    // Named ports, ipBlocks with except, IPv6, tiers with Deny and Pass: all kinds of sets.
    let cluster = generate(&SynthConfig {
        namespaces: 6,
        pods: 300,
        policies: 80,
        nodes: 3,
        seed: 7,
    });
    let state = palisade_calc::compute_full(&palisade_calc::CalcConfig::new("node-0"), &cluster);
    assert!(!state.policies.is_empty() && !state.endpoints.is_empty());
    let ns = NetnsGuard::new("dps").unwrap();
    for mut dp in dataplanes(&ns) {
        dp.apply_state(&state).unwrap();
        let r = dp.resync().unwrap();
        assert!(
            r.wrote_nothing(),
            "{}: kernel read back differs from the desired state: {r:?}",
            dp.backend_name()
        );
    }

    // Element changes to every kind of set through netlink read back exactly too.
    let ns = NetnsGuard::new("dpt").unwrap();
    let mut dp = palisade_dataplane::nft_dataplane_netlink(
        RenderConfig::default(),
        Some(ns.name().to_string()),
        Arc::new(ns.runner()),
        Arc::new(ThreadSleeper),
        RetryPolicy::none(),
    );
    dp.apply_state(&state).unwrap();
    let mut changed = state.clone();
    let mut kinds = std::collections::BTreeSet::new();
    for set in changed.ip_sets.values_mut() {
        if let Some(m) = set.members.iter().next().cloned() {
            set.members.remove(&m);
            kinds.insert(format!("{:?}", set.kind));
        }
    }
    assert!(
        kinds.contains("NetPort"),
        "the cluster has named-port sets: {kinds:?}"
    );
    for s in [&changed, &state] {
        let r = dp.apply_state(s).unwrap();
        assert!(
            r.writes().iter().all(|w| w.program == "netlink"),
            "{:?}",
            r.writes()
        );
        assert!(dp.resync().unwrap().wrote_nothing());
    }
}

/// The flat layout on a synthetic cluster: the full apply reads back exactly, and member
/// changes, which refill the flat sets of the endpoints whose rules use the changed sets, go
/// through netlink (concatenated interval elements included) and read back exactly too.
#[test]
fn a_synthetic_cluster_reads_back_exactly_in_the_flat_layout() {
    if skip() {
        return;
    }
    use palisade_engine::synth::{generate, SynthConfig};
    use palisade_render::NftLayout;
    let cluster = generate(&SynthConfig {
        namespaces: 6,
        pods: 300,
        policies: 80,
        nodes: 3,
        seed: 7,
    });
    let state = palisade_calc::compute_full(&palisade_calc::CalcConfig::new("node-0"), &cluster);
    let cfg = RenderConfig {
        nft_layout: NftLayout::Flat,
        ..RenderConfig::default()
    };
    let rs = palisade_render::build(&state, &cfg).unwrap();
    let flat: usize = rs
        .sets
        .iter()
        .filter(|s| s.set.kind == palisade_render::ir::SetKind::Flat)
        .map(|s| s.members.len())
        .sum();
    assert!(flat > 50, "the cluster has flat tiers: {flat} elements");
    let ns = NetnsGuard::new("fnft").unwrap();
    let mut dp = palisade_dataplane::nft_dataplane_netlink(
        cfg,
        Some(ns.name().to_string()),
        Arc::new(ns.runner()),
        Arc::new(ThreadSleeper),
        RetryPolicy::none(),
    );
    dp.apply_state(&state).unwrap();
    let r = dp.resync().unwrap();
    assert!(r.wrote_nothing(), "flat: read back differs: {r:?}");
    let mut changed = state.clone();
    for set in changed.ip_sets.values_mut() {
        if let Some(m) = set.members.iter().next().cloned() {
            set.members.remove(&m);
        }
    }
    for s in [&changed, &state] {
        let r = dp.apply_state(s).unwrap();
        assert!(
            r.writes().iter().all(|w| w.program == "netlink"),
            "{:?}",
            r.writes()
        );
        assert!(r.members_added + r.members_removed > 0);
        let again = dp.resync().unwrap();
        assert!(again.wrote_nothing(), "flat: read back differs: {again:?}");
    }
}

/// A random cluster on one node (synthetic NetworkPolicies, with ClusterNetworkPolicies of
/// the Admin and Baseline tiers besides, which keep their per-rule walk), its pods IPv4-only
/// on veths. Every (client pod, server pod, TCP port) flow is probed with a real connection,
/// first under the chains layout and then under the flat one, both written by the nftables
/// dataplane into the same node: the kernel's verdicts are the same flow for flow, and both
/// are the engine's.
#[test]
fn real_packets_get_the_same_verdicts_in_the_flat_and_chains_layouts() {
    if skip() || skip_packets() {
        return;
    }
    use palisade_engine::synth::{cluster_network_policies, generate, SynthConfig};
    use palisade_engine::{verdict, Flow, FlowEnd};
    use palisade_model::Protocol;
    use palisade_render::NftLayout;
    const PORTS: [u16; 5] = [80, 443, 8080, 8050, 9090];
    let mut cluster = generate(&SynthConfig {
        namespaces: 3,
        pods: 14,
        policies: 24,
        nodes: 1,
        seed: 11,
    });
    for p in cluster_network_policies(2, 2, 11) {
        cluster.upsert_policy(p);
    }
    // IPv4 only (the veths carry IPv4); pods without an IPv4 address leave.
    cluster.endpoints.retain_mut(|e| {
        e.ips.retain(std::net::IpAddr::is_ipv4);
        !e.ips.is_empty()
    });
    let pods: Vec<(EndpointId, String)> = cluster
        .endpoints
        .iter()
        .map(|e| (e.id.clone(), e.ips[0].to_string()))
        .collect();
    assert!(pods.len() >= 8, "{} pods", pods.len());
    let ifaces: Vec<(String, String)> = pods
        .iter()
        .enumerate()
        .map(|(i, (_, ip))| (format!("fnft{i:010}"), ip.clone()))
        .collect();
    let spec: Vec<(&str, &str)> = ifaces
        .iter()
        .map(|(i, a)| (i.as_str(), a.as_str()))
        .collect();
    let lab = Lab::new(&spec);
    let _listeners: Vec<Listener> = lab
        .pods
        .iter()
        .flat_map(|(ns, ..)| PORTS.map(|p| Listener::start(ns, p)))
        .collect();
    let state = palisade_calc::compute_full(&palisade_calc::CalcConfig::new("node-0"), &cluster);
    let flows: Vec<(usize, usize, u16)> = (0..pods.len())
        .flat_map(|s| (0..pods.len()).map(move |d| (s, d)))
        .filter(|(s, d)| s != d)
        .flat_map(|(s, d)| PORTS.map(|p| (s, d, p)))
        .collect();
    let probe = |layout: NftLayout| -> Vec<bool> {
        let mut dp = nft_dataplane(
            RenderConfig {
                nft_layout: layout,
                ipv6: false,
                ..RenderConfig::default()
            },
            Arc::new(lab.node.runner()),
            Arc::new(ThreadSleeper),
            RetryPolicy::none(),
        );
        dp.apply_state(&state).unwrap();
        assert!(dp.resync().unwrap().wrote_nothing(), "{layout}: read back");
        // Concurrent connection attempts (a dropped one waits out its timeout).
        let attempt = |which: &[usize], wait: &str| -> Vec<bool> {
            let mut out = Vec::with_capacity(which.len());
            for chunk in which.chunks(48) {
                let children: Vec<std::process::Child> = chunk
                    .iter()
                    .map(|&i| {
                        let (s, d, port) = flows[i];
                        std::process::Command::new("ip")
                            .args(["netns", "exec", lab.pods[s].0.name(), "nc", "-z", "-w"])
                            .args([wait, pods[d].1.as_str(), &port.to_string()])
                            .stdout(std::process::Stdio::null())
                            .stderr(std::process::Stdio::null())
                            .spawn()
                            .unwrap()
                    })
                    .collect();
                out.extend(
                    children
                        .into_iter()
                        .map(|mut c| c.wait().unwrap().success()),
                );
            }
            out
        };
        let all: Vec<usize> = (0..flows.len()).collect();
        let mut got = attempt(&all, "1");
        // A connection only succeeds when the rules let it through, but a slow machine may
        // let an allowed one time out: the failed ones are tried once more, with more time.
        let failed: Vec<usize> = all.into_iter().filter(|&i| !got[i]).collect();
        for (i, ok) in failed.iter().zip(attempt(&failed, "4")) {
            got[*i] = ok;
        }
        got
    };
    // The links are up before anything is judged (no policy programmed yet: all flows).
    assert!(
        (0..10).any(|_| connects(&lab.pods[0].0, &pods[1].1, 80)),
        "pods reach each other before any rule"
    );
    let chains = probe(NftLayout::Chains);
    let flat = probe(NftLayout::Flat);
    let mut allowed = 0;
    for (i, (s, d, port)) in flows.iter().enumerate() {
        let flow = Flow::new(
            FlowEnd::Pod(pods[*s].0.clone()),
            FlowEnd::Pod(pods[*d].0.clone()),
            Protocol::Tcp,
            *port,
        );
        let want = verdict(&cluster, &flow).unwrap().allowed;
        assert_eq!(
            (chains[i], flat[i]),
            (want, want),
            "{flow}: (chains, flat) kernel verdicts, engine says {want}"
        );
        allowed += usize::from(want);
    }
    // Both verdicts occur often enough for the comparison to mean something.
    assert!(
        allowed > flows.len() / 10 && allowed < flows.len() * 9 / 10,
        "{allowed} of {} flows allowed",
        flows.len()
    );
}
