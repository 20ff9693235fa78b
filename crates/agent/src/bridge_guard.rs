//! Anti-spoofing for bridged pods, both dataplanes. The IP hooks see bridged traffic (with
//! `br_netfilter`) as coming in on the bridge, never on the bridge port, so a pod's binding to
//! its port is checked one layer down, in `table bridge palisade`: at the bridge's prerouting
//! hook, a frame whose source address is a bridged local pod's must come in through that
//! pod's port, else it is counted and dropped. One set lookup per frame, whatever the number
//! of pods. (iptables' own means do not fit: `-m set` cannot ask an ipset `hash:net,iface`
//! for the bridge port, and `-m physdev` needs one rule per pod.)
//!
//! The table is small (two sets and two rules per family) and written whole, in one
//! transaction, whenever the bridged bindings change.

use std::fmt::Write as _;
use std::net::IpAddr;

use palisade_dataplane::CommandRunner;
use palisade_render::names::iface_ok;

use crate::bindings::Bindings;

/// The table's name (family `bridge`).
pub const TABLE: &str = "palisade";

/// The script for `bindings` (only the bridged ones matter); `None` when there is none and
/// the table should not exist.
pub fn script(bindings: &Bindings) -> Option<String> {
    let bridged: Vec<(IpAddr, &str)> = bindings
        .iter()
        .filter_map(|(ip, b)| Some((*ip, b.as_ref()?.bridge_port.as_deref()?)))
        .filter(|(_, port)| iface_ok(port))
        .collect();
    if bridged.is_empty() {
        return None;
    }
    let t = format!("bridge {TABLE}");
    let mut out = format!("add table {t}\ndelete table {t}\nadd table {t}\n");
    let _ = writeln!(
        out,
        "add chain {t} pre {{ type filter hook prerouting priority -200 ; policy accept ; }}"
    );
    for (fam, proto, kw, addr) in [
        ("4", "ip", "ip", "ipv4_addr"),
        ("6", "ip6", "ip6", "ipv6_addr"),
    ] {
        let of_family: Vec<&(IpAddr, &str)> = bridged
            .iter()
            .filter(|(ip, _)| ip.is_ipv6() == (fam == "6"))
            .collect();
        let _ = writeln!(out, "add set {t} local{fam} {{ type {addr} ; }}");
        let _ = writeln!(out, "add set {t} bind{fam} {{ type {addr} . ifname ; }}");
        let _ = writeln!(
            out,
            "add rule {t} pre ether type {proto} {kw} saddr . iifname @bind{fam} return"
        );
        let _ = writeln!(
            out,
            "add rule {t} pre ether type {proto} {kw} saddr @local{fam} counter drop comment \"palisade anti-spoofing\""
        );
        if of_family.is_empty() {
            continue;
        }
        let locals: Vec<String> = of_family.iter().map(|(ip, _)| ip.to_string()).collect();
        let binds: Vec<String> = of_family
            .iter()
            .map(|(ip, port)| format!("{ip} . \"{port}\""))
            .collect();
        let _ = writeln!(
            out,
            "add element {t} local{fam} {{ {} }}",
            locals.join(", ")
        );
        let _ = writeln!(out, "add element {t} bind{fam} {{ {} }}", binds.join(", "));
    }
    Some(out)
}

/// Makes the table match `bindings` (writes only when `last` differs); returns the script
/// now in force.
pub fn apply(
    runner: &dyn CommandRunner,
    bindings: &Bindings,
    last: &Option<String>,
) -> Result<Option<String>, String> {
    let want = script(bindings);
    if want == *last {
        return Ok(want);
    }
    let text = match &want {
        Some(s) => s.clone(),
        None => format!("add table bridge {TABLE}\ndelete table bridge {TABLE}\n"),
    };
    let out = runner
        .run("nft", &["-f", "-"], Some(&text))
        .map_err(|e| e.to_string())?;
    if !out.success() {
        return Err(format!("nft -f (bridge table): {}", out.stderr.trim()));
    }
    Ok(want)
}

/// Packets the bridge table dropped (0 when it does not exist).
pub fn dropped(runner: &dyn CommandRunner) -> u64 {
    let Ok(out) = runner.run("nft", &["list", "table", "bridge", TABLE], None) else {
        return 0;
    };
    out.stdout
        .lines()
        .filter(|l| l.contains("counter packets") && l.contains("drop"))
        .filter_map(|l| {
            let rest = l.split("counter packets ").nth(1)?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_render::config::SourceBinding;

    #[test]
    fn only_bridged_bindings_are_written_and_hostile_ports_never() {
        let mut b = Bindings::new();
        b.insert(
            "10.0.0.1".parse().unwrap(),
            Some(SourceBinding {
                iface: "pal1".into(),
                bridge_port: None,
            }),
        );
        assert_eq!(script(&b), None);
        b.insert(
            "10.1.0.2".parse().unwrap(),
            Some(SourceBinding {
                iface: "br0".into(),
                bridge_port: Some("veth1".into()),
            }),
        );
        b.insert(
            "fd01::3".parse().unwrap(),
            Some(SourceBinding {
                iface: "br0".into(),
                bridge_port: Some("x\"; flush ruleset".into()),
            }),
        );
        let s = script(&b).unwrap();
        assert!(
            s.contains("add element bridge palisade bind4 { 10.1.0.2 . \"veth1\" }"),
            "{s}"
        );
        assert!(
            !s.contains("flush ruleset") && !s.contains("fd01::3"),
            "{s}"
        );
    }
}
