//! One test per rule of the ClusterNetworkPolicy CRD (schema and CEL), each checking the field
//! path the error names; and the Node checks.

use super::*;

fn cnp(yaml: &str) -> k8s::ClusterNetworkPolicy {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("bad test yaml: {e}"))
}

/// A valid header, tier, priority and subject, plus `rest` under spec.
fn with(rest: &str) -> Vec<FieldError> {
    cluster_network_policy(&cnp(&format!(
        "metadata: {{name: p}}\nspec:\n  tier: Admin\n  priority: 10\n  subject: {{namespaces: {{}}}}\n{rest}"
    )))
}

fn fields(errs: &[FieldError]) -> Vec<&str> {
    errs.iter().map(|e| e.field.as_str()).collect()
}

fn one(errs: Vec<FieldError>, field: &str, needle: &str) {
    assert_eq!(fields(&errs), vec![field], "{errs:?}");
    assert!(
        errs[0].message.contains(needle),
        "{:?} lacks {needle:?}",
        errs[0].message
    );
}

const INGRESS_PEER: &str = "from: [{namespaces: {}}]";

#[test]
fn a_complete_valid_policy_has_no_errors() {
    let errs = with(
        r#"  ingress:
  - name: allow-monitoring
    action: Accept
    from:
    - namespaces: {matchLabels: {team: monitoring}}
    - pods: {namespaceSelector: {}, podSelector: {matchExpressions: [{key: app, operator: In, values: [a]}]}}
    protocols:
    - tcp: {destinationPort: {number: 80}}
    - udp: {destinationPort: {range: {start: 5000, end: 5010}}}
    - sctp: {destinationPort: {number: 9003}}
    - destinationNamedPort: web
  egress:
  - action: Deny
    to:
    - networks: ["10.0.0.0/8", "fd00::/8", "192.168.1.7/24"]
    - nodes: {matchLabels: {role: control-plane}}
    - domainNames: ["example.com", "*.kubernetes.io", "www.example.org."]
  - action: Pass
    to: [{pods: {podSelector: {}}}]
"#,
    );
    assert_eq!(errs, vec![]);
}

#[test]
fn spec_is_required() {
    one(
        cluster_network_policy(&cnp("metadata: {name: p}")),
        "spec",
        "missing",
    );
}

#[test]
fn metadata_name_is_required_and_a_dns_subdomain() {
    let errs = cluster_network_policy(&cnp(
        "metadata: {name: Bad_Name}\nspec: {tier: Admin, priority: 1, subject: {namespaces: {}}}",
    ));
    one(errs, "metadata.name", "DNS subdomain");
}

#[test]
fn tier_is_required_and_admin_or_baseline() {
    let errs = cluster_network_policy(&cnp(
        "metadata: {name: p}\nspec: {priority: 1, subject: {namespaces: {}}}",
    ));
    one(errs, "spec.tier", "missing");
    let errs = cluster_network_policy(&cnp(
        "metadata: {name: p}\nspec: {tier: admin, priority: 1, subject: {namespaces: {}}}",
    ));
    one(errs, "spec.tier", "must be Admin or Baseline");
}

#[test]
fn priority_is_required_and_between_0_and_1000() {
    let errs = cluster_network_policy(&cnp(
        "metadata: {name: p}\nspec: {tier: Baseline, subject: {namespaces: {}}}",
    ));
    one(errs, "spec.priority", "missing");
    for bad in ["-1", "1001"] {
        let errs = cluster_network_policy(&cnp(&format!(
            "metadata: {{name: p}}\nspec: {{tier: Admin, priority: {bad}, subject: {{namespaces: {{}}}}}}"
        )));
        one(errs, "spec.priority", "between 0 and 1000");
    }
    for good in ["0", "1000"] {
        let errs = cluster_network_policy(&cnp(&format!(
            "metadata: {{name: p}}\nspec: {{tier: Admin, priority: {good}, subject: {{namespaces: {{}}}}}}"
        )));
        assert_eq!(errs, vec![]);
    }
}

#[test]
fn subject_is_required_and_exactly_one_of_namespaces_or_pods() {
    let errs = cluster_network_policy(&cnp(
        "metadata: {name: p}\nspec: {tier: Admin, priority: 1}",
    ));
    one(errs, "spec.subject", "missing");
    let errs = cluster_network_policy(&cnp(
        "metadata: {name: p}\nspec: {tier: Admin, priority: 1, subject: {}}",
    ));
    one(errs, "spec.subject", "none is");
    let errs = cluster_network_policy(&cnp(
        "metadata: {name: p}\nspec: {tier: Admin, priority: 1, subject: {namespaces: {}, pods: {podSelector: {}}}}",
    ));
    one(errs, "spec.subject", "2 are");
}

#[test]
fn namespaced_pod_needs_a_pod_selector() {
    let errs = cluster_network_policy(&cnp(
        "metadata: {name: p}\nspec: {tier: Admin, priority: 1, subject: {pods: {namespaceSelector: {}}}}",
    ));
    one(errs, "spec.subject.pods.podSelector", "missing");
    one(
        with("  ingress: [{action: Deny, from: [{pods: {}}]}]"),
        "spec.ingress[0].from[0].pods.podSelector",
        "missing",
    );
}

#[test]
fn selectors_are_checked() {
    one(
        with("  ingress: [{action: Deny, from: [{namespaces: {matchExpressions: [{key: a, operator: Equals}]}}]}]"),
        "spec.ingress[0].from[0].namespaces.matchExpressions[0].operator",
        "unknown operator",
    );
    one(
        with("  egress: [{action: Deny, to: [{nodes: {matchLabels: {\"bad key!\": x}}}]}]"),
        "spec.egress[0].to[0].nodes.matchLabels[\"bad key!\"]",
        "label key",
    );
}

#[test]
fn at_most_25_rules_per_direction() {
    let rule = format!("  - {{action: Deny, {INGRESS_PEER}}}\n");
    one(
        with(&format!("  ingress:\n{}", rule.repeat(26))),
        "spec.ingress",
        "at most 25",
    );
    assert_eq!(with(&format!("  ingress:\n{}", rule.repeat(25))), vec![]);
    let rule = "  - {action: Deny, to: [{namespaces: {}}]}\n";
    one(
        with(&format!("  egress:\n{}", rule.repeat(26))),
        "spec.egress",
        "at most 25",
    );
}

#[test]
fn rule_name_is_at_most_100_characters() {
    let name = "n".repeat(101);
    one(
        with(&format!(
            "  ingress: [{{name: {name}, action: Deny, {INGRESS_PEER}}}]"
        )),
        "spec.ingress[0].name",
        "at most 100",
    );
    let name = "n".repeat(100);
    assert_eq!(
        with(&format!(
            "  ingress: [{{name: {name}, action: Deny, {INGRESS_PEER}}}]"
        )),
        vec![]
    );
}

#[test]
fn action_is_required_and_accept_deny_or_pass() {
    one(
        with(&format!("  ingress: [{{{INGRESS_PEER}}}]")),
        "spec.ingress[0].action",
        "missing",
    );
    one(
        with("  egress: [{action: Allow, to: [{namespaces: {}}]}]"),
        "spec.egress[0].action",
        "must be Accept, Deny or Pass",
    );
}

#[test]
fn from_and_to_are_required_with_1_to_25_peers() {
    one(
        with("  ingress: [{action: Deny}]"),
        "spec.ingress[0].from",
        "missing",
    );
    one(
        with("  egress: [{action: Deny}]"),
        "spec.egress[0].to",
        "missing",
    );
    one(
        with("  ingress: [{action: Deny, from: []}]"),
        "spec.ingress[0].from",
        "at least one",
    );
    let peers = vec!["{namespaces: {}}"; 26].join(", ");
    one(
        with(&format!("  egress: [{{action: Deny, to: [{peers}]}}]")),
        "spec.egress[0].to",
        "at most 25",
    );
}

#[test]
fn a_peer_sets_exactly_one_field() {
    one(
        with("  ingress: [{action: Deny, from: [{}]}]"),
        "spec.ingress[0].from[0]",
        "none is",
    );
    one(
        with("  ingress: [{action: Deny, from: [{namespaces: {}, pods: {podSelector: {}}}]}]"),
        "spec.ingress[0].from[0]",
        "2 are",
    );
    one(
        with("  egress: [{action: Deny, to: [{networks: [10.0.0.0/8], nodes: {}}]}]"),
        "spec.egress[0].to[0]",
        "2 are",
    );
}

#[test]
fn ingress_peers_have_no_networks_nodes_or_domain_names() {
    // Unknown fields are pruned, as the API server prunes them: the peer is then empty.
    one(
        with("  ingress: [{action: Deny, from: [{networks: [10.0.0.0/8]}]}]"),
        "spec.ingress[0].from[0]",
        "none is",
    );
}

#[test]
fn networks_are_1_to_25_unique_cidrs_of_at_most_43_characters() {
    one(
        with("  egress: [{action: Deny, to: [{networks: []}]}]"),
        "spec.egress[0].to[0].networks",
        "at least one",
    );
    let many: Vec<String> = (0..26).map(|i| format!("10.0.{i}.0/24")).collect();
    one(
        with(&format!(
            "  egress: [{{action: Deny, to: [{{networks: [{}]}}]}}]",
            many.join(", ")
        )),
        "spec.egress[0].to[0].networks",
        "at most 25",
    );
    one(
        with("  egress: [{action: Deny, to: [{networks: [10.0.0.0/8, 10.0.0.0/8]}]}]"),
        "spec.egress[0].to[0].networks[1]",
        "duplicate",
    );
    one(
        with("  egress: [{action: Deny, to: [{networks: [10.0.0.1]}]}]"),
        "spec.egress[0].to[0].networks[0]",
        "Invalid CIDR",
    );
    one(
        with("  egress: [{action: Deny, to: [{networks: [10.0.0.0/33]}]}]"),
        "spec.egress[0].to[0].networks[0]",
        "Invalid CIDR",
    );
    let long = format!("{}/64", "0:0:0:0:0:0:0:0".repeat(3));
    one(
        with(&format!(
            "  egress: [{{action: Deny, to: [{{networks: [\"{long}\"]}}]}}]"
        )),
        "spec.egress[0].to[0].networks[0]",
        "at most 43",
    );
}

#[test]
fn domain_names_are_1_to_25_unique_names_matching_the_pattern() {
    one(
        with("  egress: [{action: Accept, to: [{domainNames: []}]}]"),
        "spec.egress[0].to[0].domainNames",
        "at least one",
    );
    one(
        with("  egress: [{action: Accept, to: [{domainNames: [a.io, a.io]}]}]"),
        "spec.egress[0].to[0].domainNames[1]",
        "duplicate",
    );
    for bad in [
        "localhost",
        "*.*.example.com",
        "www.*.com",
        "-a.com",
        "a-.com",
        "a..com",
        "*",
    ] {
        let errs = with(&format!(
            "  egress: [{{action: Accept, to: [{{domainNames: [\"{bad}\"]}}]}}]"
        ));
        assert_eq!(
            fields(&errs),
            vec!["spec.egress[0].to[0].domainNames[0]"],
            "{bad}: {errs:?}"
        );
    }
    for good in [
        "kubernetes.io",
        "*.kubernetes.io",
        "a_b.c-d.io",
        "example.com.",
        "1.2.3.4",
    ] {
        assert_eq!(check_domain_name(good), Ok(()), "{good}");
    }
}

#[test]
fn protocols_are_1_to_25_entries_of_exactly_one_field() {
    one(
        with(&format!(
            "  ingress: [{{action: Deny, {INGRESS_PEER}, protocols: []}}]"
        )),
        "spec.ingress[0].protocols",
        "at least one",
    );
    let many = vec!["{tcp: {destinationPort: {number: 80}}}"; 26].join(", ");
    one(
        with(&format!(
            "  ingress: [{{action: Deny, {INGRESS_PEER}, protocols: [{many}]}}]"
        )),
        "spec.ingress[0].protocols",
        "at most 25",
    );
    one(
        with(&format!(
            "  ingress: [{{action: Deny, {INGRESS_PEER}, protocols: [{{}}]}}]"
        )),
        "spec.ingress[0].protocols[0]",
        "none is",
    );
    one(
        with(&format!(
            "  ingress: [{{action: Deny, {INGRESS_PEER}, protocols: [{{tcp: {{destinationPort: {{number: 1}}}}, destinationNamedPort: web}}]}}]"
        )),
        "spec.ingress[0].protocols[0]",
        "2 are",
    );
}

#[test]
fn a_protocol_entry_needs_a_destination_port() {
    one(
        with(&format!(
            "  ingress: [{{action: Deny, {INGRESS_PEER}, protocols: [{{udp: {{}}}}]}}]"
        )),
        "spec.ingress[0].protocols[0].udp",
        "destinationPort",
    );
}

#[test]
fn a_port_is_a_number_or_a_range() {
    let at = |p: &str| {
        with(&format!(
            "  ingress: [{{action: Deny, {INGRESS_PEER}, protocols: [{{sctp: {{destinationPort: {p}}}}}]}}]"
        ))
    };
    one(
        at("{}"),
        "spec.ingress[0].protocols[0].sctp.destinationPort",
        "none is",
    );
    one(
        at("{number: 80, range: {start: 1, end: 2}}"),
        "spec.ingress[0].protocols[0].sctp.destinationPort",
        "2 are",
    );
}

#[test]
fn port_numbers_are_1_to_65535() {
    for bad in ["0", "65536", "-3"] {
        let errs = with(&format!(
            "  egress: [{{action: Deny, to: [{{namespaces: {{}}}}], protocols: [{{tcp: {{destinationPort: {{number: {bad}}}}}}}]}}]"
        ));
        one(
            errs,
            "spec.egress[0].protocols[0].tcp.destinationPort.number",
            "between 1 and 65535",
        );
    }
    let errs = with(&format!(
        "  ingress: [{{action: Deny, {INGRESS_PEER}, protocols: [{{tcp: {{destinationPort: {{range: {{start: 0, end: 70000}}}}}}}}]}}]"
    ));
    assert_eq!(
        fields(&errs),
        vec![
            "spec.ingress[0].protocols[0].tcp.destinationPort.range.start",
            "spec.ingress[0].protocols[0].tcp.destinationPort.range.end",
        ]
    );
}

#[test]
fn a_range_needs_start_and_end_with_start_below_end() {
    let at = |r: &str| {
        with(&format!(
            "  ingress: [{{action: Deny, {INGRESS_PEER}, protocols: [{{tcp: {{destinationPort: {{range: {r}}}}}}}]}}]"
        ))
    };
    one(
        at("{start: 80}"),
        "spec.ingress[0].protocols[0].tcp.destinationPort.range.end",
        "missing",
    );
    one(
        at("{start: 90, end: 80}"),
        "spec.ingress[0].protocols[0].tcp.destinationPort.range",
        "Start port must be less than End port",
    );
    one(
        at("{start: 80, end: 80}"),
        "spec.ingress[0].protocols[0].tcp.destinationPort.range",
        "less than",
    );
    assert_eq!(at("{start: 80, end: 81}"), vec![]);
}

#[test]
fn no_named_port_with_networks_nodes_or_domain_names() {
    for peer in [
        "{networks: [10.0.0.0/8]}",
        "{nodes: {}}",
        "{domainNames: [a.io]}",
    ] {
        let errs = with(&format!(
            "  egress: [{{action: Accept, to: [{{namespaces: {{}}}}, {peer}], protocols: [{{tcp: {{destinationPort: {{number: 1}}}}}}, {{destinationNamedPort: web}}]}}]"
        ));
        one(
            errs,
            "spec.egress[0].protocols[1].destinationNamedPort",
            "cannot be set with namedPorts",
        );
    }
    // With pod peers only, a named port is fine.
    let errs = with(
        "  egress: [{action: Accept, to: [{pods: {podSelector: {}}}], protocols: [{destinationNamedPort: web}]}]",
    );
    assert_eq!(errs, vec![]);
}

#[test]
fn every_error_is_reported() {
    let errs = cluster_network_policy(&cnp(
        "metadata: {name: p}\nspec: {tier: Middle, priority: 5000, subject: {}, ingress: [{action: Maybe, from: []}]}",
    ));
    assert_eq!(
        fields(&errs),
        vec![
            "spec.tier",
            "spec.priority",
            "spec.subject",
            "spec.ingress[0].action",
            "spec.ingress[0].from"
        ]
    );
}

fn node_of(yaml: &str) -> k8s::Node {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("bad test yaml: {e}"))
}

#[test]
fn nodes_have_valid_names_labels_and_addresses() {
    let ok = node_of(
        "metadata: {name: n1, labels: {role: worker}}\nstatus: {addresses: [{type: InternalIP, address: 10.1.0.1}, {type: InternalIP, address: 'fd00::1'}, {type: Hostname, address: n1}]}",
    );
    assert_eq!(node(&ok), vec![]);
    let bad = node_of(
        "metadata: {name: N_1}\nstatus: {addresses: [{type: InternalIP, address: n1}, {type: Other, address: x}, {type: Hostname, address: ''}]}",
    );
    assert_eq!(
        fields(&node(&bad)),
        vec![
            "metadata.name",
            "status.addresses[0].address",
            "status.addresses[1].type",
            "status.addresses[2].address"
        ]
    );
}
