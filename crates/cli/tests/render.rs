//! `palisade render`, run as a real process: sections, families, JSON, `--check` in a scratch
//! namespace (as root), and refusal of unusable interface prefixes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const DUAL: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c, ports: [{name: http, containerPort: 80}]}]}
status: {podIPs: [{ip: 10.0.0.5}, {ip: "fd00::5"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: prod, labels: {app: client}}
spec: {nodeName: n2, containers: [{name: c}]}
status: {podIP: 10.0.0.6}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}, {ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}]
    ports: [{port: http}, {port: 9000, endPort: 9100}]
"#;

fn render(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .arg("render")
        .args(["-f", "-"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run palisade");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for palisade")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn check_namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output();
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("pal-check-"))
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

#[test]
fn iptables_output_has_sections_per_family() {
    let o = render(&["--node", "n1", "--dataplane", "iptables"], DUAL);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = stdout(&o);
    let ipset = text.find("# ---- ipset restore ----").unwrap();
    let v4 = text
        .find("# ---- iptables-restore --noflush (IPv4) ----")
        .unwrap();
    let v6 = text
        .find("# ---- ip6tables-restore --noflush (IPv6) ----")
        .unwrap();
    assert!(ipset < v4 && v4 < v6);
    assert!(text.contains("hash:ip,port family inet6"));
    assert!(
        text.contains(" nomatch -exist"),
        "ipBlock except as nomatch:\n{text}"
    );
    assert_eq!(
        text.matches("-I FORWARD 1 ").count(),
        2,
        "one hook per family"
    );
    assert_eq!(text.matches("COMMIT").count(), 2);

    // IPv4 only: no ip6tables section.
    let v4_only = DUAL.replace(r#"{ip: 10.0.0.5}, {ip: "fd00::5"}"#, "{ip: 10.0.0.5}");
    let o = render(&["--node", "n1", "--dataplane", "iptables"], &v4_only);
    assert!(o.status.success());
    assert!(!stdout(&o).contains("ip6tables-restore"));
}

#[test]
fn nftables_output_is_one_script() {
    let o = render(
        &[
            "--node",
            "n1",
            "--dataplane",
            "nftables",
            "--log-drops",
            "4",
        ],
        DUAL,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = stdout(&o);
    let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        &body[..3],
        [
            "add table inet palisade",
            "delete table inet palisade",
            "add table inet palisade"
        ]
    );
    assert!(text.contains("ip saddr vmap @pal-fw-map4"));
    assert!(text.contains("ipv6_addr . inet_proto . inet_service"));
    let web_drop = text
        .lines()
        .find(|l| l.contains("log prefix \"pal-drop ") && l.contains(" ingress prod/web\" group 4"))
        .unwrap_or_else(|| panic!("no logged drop of prod/web's ingress in\n{text}"));
    assert!(
        web_drop.contains("limit rate 100/second burst 100 packets"),
        "{web_drop}"
    );
}

#[test]
fn json_output_carries_the_ir_and_the_text() {
    let o = render(
        &["--node", "n1", "--dataplane", "iptables", "-o", "json"],
        DUAL,
    );
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["node"], "n1");
    assert_eq!(v["dataplane"], "iptables");
    let chains = v["ruleset"]["chains"].as_array().unwrap();
    assert!(chains.iter().any(|c| c["name"] == "pal-FORWARD"));
    assert!(v["text"]["v4"].as_str().unwrap().starts_with("*filter"));
}

#[test]
fn unusable_interface_prefix_is_an_error() {
    let o = render(
        &[
            "--node",
            "n1",
            "--dataplane",
            "iptables",
            "--iface-prefix",
            "a b\"",
        ],
        DUAL,
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("interface prefix"), "{err}");
    assert!(o.stdout.is_empty());
}

#[test]
fn every_interface_prefix_is_dispatched() {
    // Comma separated and repeated: web's interface under each prefix leads to its chains.
    let o = render(
        &[
            "--node",
            "n1",
            "--dataplane",
            "iptables",
            "--iface-prefix",
            "pal,cali",
            "--iface-prefix",
            "tap",
            "--endpoint-match",
            "interface",
        ],
        DUAL,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = stdout(&o);
    let v4 = text
        .split("# ---- iptables-restore --noflush (IPv4) ----\n")
        .nth(1)
        .and_then(|rest| rest.split("# ---- ip6tables").next())
        .unwrap();
    let dispatch = |flag: &str| -> Vec<(String, String)> {
        v4.lines()
            .filter(|l| l.starts_with("-A pal-FORWARD") && l.contains(flag))
            .map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                let at = |k: &str| w[w.iter().position(|x| *x == k).unwrap() + 1].to_string();
                (at(flag), at("-j"))
            })
            .collect()
    };
    for flag in ["-i", "-o"] {
        let d = dispatch(flag);
        assert_eq!(d.len(), 3, "{flag}: {d:?}");
        assert!(
            d.iter().all(|(_, chain)| *chain == d[0].1),
            "one chain: {d:?}"
        );
        for prefix in ["pal", "cali", "tap"] {
            let named = d
                .iter()
                .filter(|(i, _)| i.starts_with(prefix) && i.len() == 15);
            assert_eq!(named.count(), 1, "{prefix}: {d:?}");
        }
    }
}

#[test]
fn missing_node_is_a_usage_error() {
    let o = render(&["--dataplane", "iptables"], DUAL);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn check_parses_with_the_real_tools_in_a_scratch_namespace() {
    if !is_root() {
        eprintln!("skipping --check test: not root");
        return;
    }
    let before = check_namespaces();
    for dataplane in ["iptables", "nftables"] {
        let o = render(&["--node", "n1", "--dataplane", dataplane, "--check"], DUAL);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{dataplane}: {err}");
        assert!(
            err.contains("check: the kernel tools accept the ruleset"),
            "{err}"
        );
    }
    let left: Vec<String> = check_namespaces()
        .into_iter()
        .filter(|n| !before.contains(n))
        .collect();
    assert!(left.is_empty(), "scratch namespaces left behind: {left:?}");
}

#[test]
fn address_matching_is_the_default_and_calico_naming_is_offered() {
    let args = ["--node", "n1", "--dataplane", "nftables"];
    let o = render(&args, DUAL);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = stdout(&o);
    assert!(text.contains("ip saddr vmap @pal-fw-map4"), "{text}");
    assert!(text.contains("ip6 daddr vmap @pal-tw-map6"), "{text}");
    let mut calico = args.to_vec();
    calico.extend(["--endpoint-match", "interface", "--iface-name", "calico"]);
    let o = render(&calico, DUAL);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = stdout(&o);
    assert!(text.contains("iifname vmap @pal-fw-map"), "{text}");
    assert!(text.contains("\"cali"), "{text}");
}
