//! One test per class of invalid input (SEMANTICS.md "Invalid input"), each checking the
//! field path the error names.

use super::*;

fn np(yaml: &str) -> k8s::NetworkPolicy {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("bad test yaml: {e}"))
}

fn pod_of(yaml: &str) -> k8s::Pod {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("bad test yaml: {e}"))
}

/// A valid policy header plus `spec`.
fn policy_with(spec: &str) -> k8s::NetworkPolicy {
    np(&format!(
        "metadata: {{name: np, namespace: ns}}\nspec:\n{spec}"
    ))
}

/// The fields of the errors, in order.
fn fields(errs: &[FieldError]) -> Vec<&str> {
    errs.iter().map(|e| e.field.as_str()).collect()
}

fn one_error(errs: Vec<FieldError>, field: &str, needle: &str) {
    assert_eq!(fields(&errs), vec![field], "{errs:?}");
    assert!(
        errs[0].message.contains(needle),
        "{:?} lacks {needle:?}",
        errs[0].message
    );
}

#[test]
fn a_complete_valid_policy_has_no_errors() {
    let p = policy_with(
        r#"  podSelector: {matchLabels: {app: web}, matchExpressions: [{key: tier, operator: In, values: [a, b]}, {key: x, operator: DoesNotExist}]}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {}
    - namespaceSelector: {matchLabels: {"kubernetes.io/metadata.name": kube-system}}
      podSelector: {matchExpressions: [{key: k8s-app, operator: Exists}]}
    - ipBlock: {cidr: 10.0.0.5/8, except: [10.1.0.0/16, 10.2.3.4/32]}
    ports: [{port: 80}, {port: 8000, endPort: 8100, protocol: TCP}, {port: http, protocol: UDP}, {protocol: SCTP}]
  egress:
  - to: [{ipBlock: {cidr: "fd00::/8", except: ["fd00:1::/32"]}}]
"#,
    );
    assert_eq!(network_policy(&p), vec![]);
}

#[test]
fn bad_cidrs() {
    let p = policy_with(
        "  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}, {ipBlock: {cidr: 10.0.0.1}}, {ipBlock: {cidr: 10.0.0.0/8, except: [nonsense]}}]}]\n",
    );
    let errs = network_policy(&p);
    assert_eq!(
        fields(&errs),
        vec![
            "spec.ingress[0].from[0].ipBlock.cidr",
            "spec.ingress[0].from[1].ipBlock.cidr",
            "spec.ingress[0].from[2].ipBlock.except[0]",
        ]
    );
    assert!(
        errs[1].message.contains("address/prefix"),
        "{}",
        errs[1].message
    );
}

#[test]
fn host_bits_are_allowed() {
    let p = policy_with(
        "  egress: [{to: [{ipBlock: {cidr: 192.168.1.77/24, except: [192.168.1.130/25]}}]}]\n",
    );
    assert_eq!(network_policy(&p), vec![]);
}

#[test]
fn except_outside_equal_or_other_family() {
    let p = policy_with(
        "  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24, 10.0.0.0/16, 10.0.0.0/8, \"fd00::/64\"]}}]}]\n",
    );
    let errs = network_policy(&p);
    let at = "spec.egress[0].to[0].ipBlock.except";
    assert_eq!(
        fields(&errs),
        vec![
            format!("{at}[0]"),
            format!("{at}[1]"),
            format!("{at}[2]"),
            format!("{at}[3]")
        ]
    );
    assert!(errs[0].message.contains("strictly inside"));
    assert!(errs[1].message.contains("strictly inside"));
    assert!(errs[3].message.contains("another IP family"));
}

#[test]
fn end_port_rules() {
    let p = policy_with(
        "  ingress: [{ports: [{endPort: 90}, {port: http, endPort: 90}, {port: 100, endPort: 90}, {port: 100, endPort: 70000}, {port: 100, endPort: 100}]}]\n",
    );
    let errs = network_policy(&p);
    let at = "spec.ingress[0].ports";
    assert_eq!(
        fields(&errs),
        vec![
            format!("{at}[0].endPort"),
            format!("{at}[1].endPort"),
            format!("{at}[2].endPort"),
            format!("{at}[3].endPort"),
        ]
    );
    assert!(errs[0].message.contains("numeric port"));
    assert!(errs[2].message.contains("below port 100"));
    assert!(errs[3].message.contains("65535"));
}

#[test]
fn ports_out_of_range() {
    let p =
        policy_with("  egress: [{ports: [{port: 0}, {port: 65536}, {port: -1}, {port: 65535}]}]\n");
    let errs = network_policy(&p);
    assert_eq!(
        fields(&errs),
        vec![
            "spec.egress[0].ports[0].port",
            "spec.egress[0].ports[1].port",
            "spec.egress[0].ports[2].port"
        ]
    );
    assert!(errs[0].message.contains("between 1 and 65535"));
}

#[test]
fn named_ports_must_be_iana_names() {
    for bad in [
        "HTTP",
        "80",
        "-web",
        "web-",
        "a--b",
        "sixteen-chars-xx",
        "with space",
        "",
    ] {
        let p = policy_with(&format!("  ingress: [{{ports: [{{port: {bad:?}}}]}}]\n"));
        one_error(
            network_policy(&p),
            "spec.ingress[0].ports[0].port",
            "IANA service name",
        );
    }
    for good in ["http", "h2c", "web-80", "a", "fifteen-chars-x"] {
        assert_eq!(check_port_name(good), Ok(()), "{good}");
    }
}

#[test]
fn unknown_protocols() {
    let p =
        policy_with("  ingress: [{ports: [{protocol: ICMP}, {protocol: tcp}, {protocol: UDP}]}]\n");
    let errs = network_policy(&p);
    assert_eq!(
        fields(&errs),
        vec![
            "spec.ingress[0].ports[0].protocol",
            "spec.ingress[0].ports[1].protocol"
        ]
    );
    assert!(errs[0].message.contains("TCP, UDP or SCTP"));
}

#[test]
fn unknown_and_duplicate_policy_types() {
    let p = policy_with("  policyTypes: [Ingress, ingress, Both, Ingress]\n");
    let errs = network_policy(&p);
    assert_eq!(
        fields(&errs),
        vec![
            "spec.policyTypes[1]",
            "spec.policyTypes[2]",
            "spec.policyTypes[3]"
        ]
    );
    assert!(errs[0].message.contains("Ingress or Egress"));
    assert!(errs[2].message.contains("duplicate"));
}

#[test]
fn malformed_selectors() {
    let p = policy_with(
        r#"  podSelector:
    matchExpressions:
    - {key: a, operator: Equals, values: [x]}
    - {key: b, operator: In}
    - {key: c, operator: NotIn, values: []}
    - {key: d, operator: Exists, values: [x]}
    - {key: e, operator: DoesNotExist, values: [y]}
    - {key: f, operator: Exists}
"#,
    );
    let errs = network_policy(&p);
    let at = "spec.podSelector.matchExpressions";
    assert_eq!(
        fields(&errs),
        vec![
            format!("{at}[0].operator"),
            format!("{at}[1].values"),
            format!("{at}[2].values"),
            format!("{at}[3].values"),
            format!("{at}[4].values"),
        ]
    );
    assert!(errs[0].message.contains("unknown operator \"Equals\""));
    assert!(errs[1].message.contains("at least one value"));
    assert!(errs[3].message.contains("takes no values"));
}

#[test]
fn invalid_label_keys_and_values_everywhere() {
    let p = np(r#"metadata:
  name: np
  namespace: ns
  labels: {"bad key": x, good: "bad value"}
spec:
  podSelector: {matchLabels: {"-x": y}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {"example.com/team": "a;b"}}
      podSelector: {matchExpressions: [{key: "UPPER/x", operator: In, values: [ok, "not ok"]}]}
"#);
    let errs = network_policy(&p);
    assert_eq!(
        fields(&errs),
        vec![
            "metadata.labels[\"bad key\"]",
            "metadata.labels.good",
            "spec.podSelector.matchLabels[\"-x\"]",
            "spec.ingress[0].from[0].podSelector.matchExpressions[0].key",
            "spec.ingress[0].from[0].podSelector.matchExpressions[0].values[1]",
            "spec.ingress[0].from[0].namespaceSelector.matchLabels[\"example.com/team\"]",
        ]
    );
    assert!(errs[1].message.contains("label value"));
}

#[test]
fn peers_ipblock_with_selector_or_empty() {
    let p = policy_with(
        "  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}, {}, {namespaceSelector: {}, ipBlock: {cidr: 10.0.0.0/8}}]}]\n",
    );
    let errs = network_policy(&p);
    assert_eq!(
        fields(&errs),
        vec![
            "spec.ingress[0].from[0]",
            "spec.ingress[0].from[1]",
            "spec.ingress[0].from[2]"
        ]
    );
    assert!(errs[0].message.contains("may not be combined"));
    assert!(errs[1]
        .message
        .contains("must set podSelector, namespaceSelector or ipBlock"));
}

#[test]
fn names_and_namespaces() {
    let missing = np("spec: {}\n");
    one_error(network_policy(&missing), "metadata.name", "missing");
    let bad = np("metadata: {name: Bad_Name, namespace: also.bad}\n");
    assert_eq!(
        fields(&network_policy(&bad)),
        vec!["metadata.name", "metadata.namespace"]
    );
    // Pods and policies may have dots in names (DNS subdomain); namespaces may not (DNS label).
    let dotted = np("metadata: {name: a.b, namespace: ns}\n");
    assert_eq!(network_policy(&dotted), vec![]);
    let ns: k8s::Namespace = serde_yaml::from_str("metadata: {name: a.b}\n").unwrap();
    one_error(namespace(&ns), "metadata.name", "DNS label");
    let ns: k8s::Namespace =
        serde_yaml::from_str("metadata: {name: team-a, labels: {user: bob}}\n").unwrap();
    assert_eq!(namespace(&ns), vec![]);
    let ns: k8s::Namespace =
        serde_yaml::from_str("metadata: {labels: {user: \"bob smith\"}}\n").unwrap();
    assert_eq!(
        fields(&namespace(&ns)),
        vec!["metadata.name", "metadata.labels.user"]
    );
}

#[test]
fn pod_ports_protocols_names() {
    let p = pod_of(
        r#"metadata: {name: p, namespace: ns, labels: {app: "x y"}}
spec:
  nodeName: Node_1
  containers:
  - name: a
    ports:
    - {containerPort: 0}
    - {containerPort: 80, protocol: ICMP, name: http}
    - {containerPort: 81, name: HTTP}
  - name: b
    ports:
    - {containerPort: 70000, name: http}
"#,
    );
    let errs = pod(&p);
    assert_eq!(
        fields(&errs),
        vec![
            "metadata.labels.app",
            "spec.nodeName",
            "spec.containers[0].ports[0].containerPort",
            "spec.containers[0].ports[1].protocol",
            "spec.containers[0].ports[2].name",
            "spec.containers[1].ports[0].containerPort",
            "spec.containers[1].ports[0].name",
        ]
    );
    assert!(errs[6].message.contains("duplicate port name"));
}

#[test]
fn pod_ips_must_parse() {
    let p = pod_of(
        "metadata: {name: p}\nstatus: {podIP: 10.0.0.300, podIPs: [{ip: 10.0.0.1}, {ip: bogus}, {ip: 10.0.0.2}]}\n",
    );
    let errs = pod(&p);
    assert_eq!(
        fields(&errs),
        vec!["status.podIP", "status.podIPs[1].ip", "status.podIPs[2].ip"]
    );
    assert!(errs[2].message.contains("one address per IP family"));
    let mismatch =
        pod_of("metadata: {name: p}\nstatus: {podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.2}]}\n");
    one_error(
        pod(&mismatch),
        "status.podIPs[0].ip",
        "must equal status.podIP",
    );
    let dual = pod_of("metadata: {name: p}\nstatus: {podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.1}, {ip: \"fd00::1\"}]}\n");
    assert_eq!(pod(&dual), vec![]);
}

#[test]
fn standalone_selector_paths_have_no_leading_dot() {
    let sel: k8s::LabelSelector = serde_yaml::from_str("matchLabels: {\"a b\": x}\n").unwrap();
    assert_eq!(
        fields(&label_selector(&sel, "")),
        vec!["matchLabels[\"a b\"]"]
    );
}
