//! The conntrack table over ctnetlink, as root in a throwaway network namespace: flows
//! inserted with the `conntrack` tool (both families, TCP and ICMP) are listed with their
//! tuples, one deleted is gone and the others stay, a second delete says it was gone, and the
//! host's own table is never read or touched. Without root it prints why and passes.

use std::net::IpAddr;

use palisade_dataplane::conntrack::{sweep, Conntrack, CtFlow, NetlinkConntrack};
use palisade_dataplane::netns::{is_root, NetnsGuard};

fn skip() -> bool {
    if !is_root()
        || std::process::Command::new("conntrack")
            .arg("--version")
            .output()
            .is_err()
    {
        eprintln!("skipped: needs root and the conntrack tool (scripts/setup)");
        return true;
    }
    false
}

fn insert(ns: &NetnsGuard, args: &[&str]) {
    let mut all = vec!["-I"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--timeout", "600"]);
    let out = ns.run("conntrack", &all, None).expect("run conntrack");
    assert!(out.success(), "conntrack {all:?}: {}", out.stderr);
}

fn tcp(src: &str, dst: &str, sport: u16, dport: u16) -> CtFlow {
    CtFlow {
        src: src.parse::<IpAddr>().unwrap(),
        dst: dst.parse::<IpAddr>().unwrap(),
        protocol: 6,
        src_port: sport,
        dst_port: dport,
        icmp: None,
        zone: 0,
    }
}

#[test]
fn flows_are_listed_and_deleted_one_by_one() {
    if skip() {
        return;
    }
    let ns = NetnsGuard::new("ct").expect("netns");
    let tcp_args = |s: &'static str, d: &'static str, sp: &'static str, dp: &'static str| {
        vec![
            "-s",
            s,
            "-d",
            d,
            "-p",
            "tcp",
            "--sport",
            sp,
            "--dport",
            dp,
            "--state",
            "ESTABLISHED",
            "-u",
            "ASSURED",
        ]
    };
    insert(&ns, &tcp_args("10.9.0.1", "10.9.0.2", "40001", "80"));
    insert(&ns, &tcp_args("10.9.0.3", "10.9.0.2", "40002", "80"));
    insert(&ns, &tcp_args("fd00:9::1", "fd00:9::2", "40003", "443"));
    insert(
        &ns,
        &[
            "-s",
            "10.9.0.1",
            "-d",
            "10.9.0.2",
            "-p",
            "icmp",
            "--icmp-type",
            "8",
            "--icmp-code",
            "0",
            "--icmp-id",
            "77",
        ],
    );

    let table = NetlinkConntrack::new(Some(ns.name().to_string()));
    let flows = table.flows().expect("dump");
    assert_eq!(flows.len(), 4, "{flows:#?}");
    let a = tcp("10.9.0.1", "10.9.0.2", 40001, 80);
    let b = tcp("10.9.0.3", "10.9.0.2", 40002, 80);
    let c = tcp("fd00:9::1", "fd00:9::2", 40003, 443);
    for f in [&a, &b, &c] {
        assert!(flows.contains(f), "{f:?} not in {flows:#?}");
    }
    let icmp = flows
        .iter()
        .find(|f| f.protocol == 1)
        .expect("the ICMP flow");
    assert_eq!(icmp.icmp, Some((8, 0, 77)));

    // A sweep that denies what comes from 10.9.0.3 and the IPv6 flow.
    let report =
        sweep(&table, 1000, |f| Some(!(f.src == b.src || f.src.is_ipv6()))).expect("sweep");
    assert_eq!((report.checked, report.removed, report.gone), (4, 2, 0));
    let left = table.flows().expect("dump");
    assert!(
        left.contains(&a) && !left.contains(&b) && !left.contains(&c),
        "{left:#?}"
    );
    assert!(!table.delete(&b).expect("second delete"), "already gone");
    let listed = ns.run("conntrack", &["-L"], None).expect("conntrack -L");
    assert!(!listed.stdout.contains("10.9.0.3"), "{}", listed.stdout);
    assert!(listed.stdout.contains("10.9.0.1"), "{}", listed.stdout);
}
