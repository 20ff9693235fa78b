//! Field-by-field conversion rules (SEMANTICS.md 4, 5, 8-12) and whole-batch behaviour.

use std::collections::BTreeSet;

use super::*;
use crate::manifest::parse_documents;

fn np(yaml: &str) -> k8s::NetworkPolicy {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("bad test yaml: {e}"))
}

fn policy(spec: &str) -> Policy {
    let p = np(&format!(
        "metadata: {{name: np, namespace: ns}}\nspec:\n{spec}"
    ));
    network_policy(&p).unwrap_or_else(|e| panic!("unexpected errors {e:?}"))
}

fn sel(yaml: &str) -> Selector {
    let s: k8s::LabelSelector = serde_yaml::from_str(yaml).unwrap();
    label_selector(&s).unwrap_or_else(|e| panic!("unexpected errors {e:?}"))
}

fn set(vs: &[&str]) -> BTreeSet<String> {
    vs.iter().map(|s| s.to_string()).collect()
}

fn allow(peers: Vec<Peer>, ports: Vec<PortSpec>) -> Rule {
    Rule {
        action: Action::Allow,
        peers,
        ports,
    }
}

fn tcp(port: PortMatch) -> PortSpec {
    PortSpec {
        protocol: Protocol::Tcp,
        port,
    }
}

#[test]
fn selectors() {
    assert_eq!(sel("{}"), Selector::All);
    assert_eq!(
        sel("matchLabels: {app: web}"),
        Selector::Eq("app".into(), "web".into())
    );
    assert_eq!(
        sel("matchLabels: {b: '2', a: '1'}\nmatchExpressions:\n- {key: t, operator: In, values: [x, y]}\n- {key: u, operator: NotIn, values: [z]}\n- {key: v, operator: Exists}\n- {key: w, operator: DoesNotExist}\n"),
        Selector::And(vec![
            Selector::Eq("a".into(), "1".into()),
            Selector::Eq("b".into(), "2".into()),
            Selector::In("t".into(), set(&["x", "y"])),
            Selector::NotIn("u".into(), set(&["z"])),
            Selector::Has("v".into()),
            Selector::Not(Box::new(Selector::Has("w".into()))),
        ])
    );
    let s: k8s::LabelSelector =
        serde_yaml::from_str("matchExpressions: [{key: a, operator: In}]").unwrap();
    let errs = label_selector(&s).unwrap_err();
    assert_eq!(errs[0].field, "matchExpressions[0].values");
}

#[test]
fn identity_order_and_selector() {
    let p = policy("  podSelector: {matchLabels: {app: web}}\n");
    assert_eq!(
        p.id,
        PolicyId {
            tier: DEFAULT_TIER.into(),
            namespace: Some("ns".into()),
            name: "np".into()
        }
    );
    assert_eq!(p.order, KUBERNETES_POLICY_ORDER);
    assert_eq!(p.selector, Selector::Eq("app".into(), "web".into()));
    assert_eq!(p.namespace_selector, Selector::All);
    let no_ns = network_policy(&np("metadata: {name: x}\n")).unwrap();
    assert_eq!(no_ns.id.namespace.as_deref(), Some("default"));
    assert_eq!(no_ns.selector, Selector::All);
}

#[test]
fn no_policy_types_and_no_rules_isolates_ingress_only() {
    let p = policy("  podSelector: {}\n");
    assert_eq!(p.ingress, Some(vec![]));
    assert_eq!(p.egress, None);
}

#[test]
fn no_policy_types_with_only_egress_rules_still_isolates_ingress() {
    let p = policy("  egress: [{}]\n");
    assert_eq!(p.ingress, Some(vec![]));
    assert_eq!(p.egress, Some(vec![allow(vec![], vec![])]));
}

#[test]
fn empty_egress_alone_does_not_isolate_egress() {
    let p = policy("  egress: []\n");
    assert_eq!(p.ingress, Some(vec![]));
    assert_eq!(p.egress, None);
}

#[test]
fn empty_ingress_under_ingress_type_denies_all() {
    let p = policy("  policyTypes: [Ingress]\n  ingress: []\n");
    assert_eq!(p.ingress, Some(vec![]));
    assert_eq!(p.egress, None);
}

#[test]
fn rules_of_directions_not_in_policy_types_are_ignored() {
    let p = policy("  policyTypes: [Egress]\n  ingress: [{}]\n");
    assert_eq!(p.ingress, None);
    assert_eq!(p.egress, Some(vec![]));
    let both = policy("  policyTypes: [Ingress, Egress]\n");
    assert_eq!((both.ingress, both.egress), (Some(vec![]), Some(vec![])));
    let empty_types = policy("  policyTypes: []\n  egress: [{}]\n");
    assert!(empty_types.ingress.is_some() && empty_types.egress.is_some());
}

#[test]
fn empty_from_and_ports_match_everything() {
    let p = policy("  ingress: [{from: [], ports: []}, {}]\n");
    assert_eq!(
        p.ingress,
        Some(vec![allow(vec![], vec![]), allow(vec![], vec![])])
    );
}

#[test]
fn peers() {
    let p = policy(
        r#"  ingress:
  - from:
    - podSelector: {matchLabels: {role: frontend}}
    - namespaceSelector: {matchLabels: {user: bob}}
    - namespaceSelector: {matchLabels: {team: a}}
      podSelector: {matchLabels: {role: client}}
    - namespaceSelector: {}
      podSelector: {matchLabels: {role: x}}
    - podSelector: {}
"#,
    );
    let ep = |namespaces, pods| Peer::Endpoints(EndpointPeer { namespaces, pods });
    let eq = |k: &str, v: &str| Selector::Eq(k.into(), v.into());
    assert_eq!(
        p.ingress.unwrap()[0].peers,
        vec![
            ep(NamespaceMatch::Name("ns".into()), eq("role", "frontend")),
            ep(NamespaceMatch::Selector(eq("user", "bob")), Selector::All),
            ep(
                NamespaceMatch::Selector(eq("team", "a")),
                eq("role", "client")
            ),
            ep(NamespaceMatch::Selector(Selector::All), eq("role", "x")),
            ep(NamespaceMatch::Name("ns".into()), Selector::All),
        ]
    );
}

#[test]
fn ip_blocks_are_masked() {
    let p = policy(
        "  egress: [{to: [{ipBlock: {cidr: 10.1.2.3/16, except: [10.1.200.9/24]}}, {ipBlock: {cidr: \"fd00::1/64\"}}]}]\n",
    );
    assert_eq!(
        p.egress.unwrap()[0].peers,
        vec![
            Peer::Cidr {
                cidr: "10.1.0.0/16".parse().unwrap(),
                except: vec!["10.1.200.0/24".parse().unwrap()]
            },
            Peer::Cidr {
                cidr: "fd00::/64".parse().unwrap(),
                except: vec![]
            },
        ]
    );
}

#[test]
fn ports() {
    let p = policy(
        "  ingress: [{ports: [{port: 80}, {port: 8000, endPort: 8080}, {port: http}, {protocol: UDP}, {protocol: SCTP, port: 9}, {}]}]\n",
    );
    assert_eq!(
        p.ingress.unwrap()[0].ports,
        vec![
            tcp(PortMatch::Range { start: 80, end: 80 }),
            tcp(PortMatch::Range {
                start: 8000,
                end: 8080
            }),
            tcp(PortMatch::Named("http".into())),
            PortSpec {
                protocol: Protocol::Udp,
                port: PortMatch::Any
            },
            PortSpec {
                protocol: Protocol::Sctp,
                port: PortMatch::Range { start: 9, end: 9 }
            },
            tcp(PortMatch::Any),
        ]
    );
}

#[test]
fn invalid_policy_is_not_converted() {
    let p = np("metadata: {name: np}\nspec: {ingress: [{ports: [{port: 0}, {protocol: ICMP}]}]}\n");
    let errs = network_policy(&p).unwrap_err();
    assert_eq!(errs.len(), 2);
}

fn pod_of(yaml: &str) -> k8s::Pod {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("bad test yaml: {e}"))
}

#[test]
fn pods() {
    let p = pod_of(
        r#"metadata: {name: be, namespace: myns, labels: {role: backend}}
spec:
  nodeName: node-1
  containers:
  - name: redis
    ports: [{containerPort: 6379, name: redis}, {containerPort: 53, protocol: UDP}]
  - name: side
    ports: [{containerPort: 9090, name: metrics, protocol: TCP}]
status: {podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.1}, {ip: "fd00::1"}]}
"#,
    );
    let ep = pod(&p).unwrap().unwrap();
    assert_eq!(ep.id, EndpointId::new("myns", "be"));
    assert_eq!(ep.node.as_deref(), Some("node-1"));
    assert_eq!(ep.labels.get("role").map(String::as_str), Some("backend"));
    assert_eq!(
        ep.ips,
        vec![
            "10.0.0.1".parse::<IpAddr>().unwrap(),
            "fd00::1".parse().unwrap()
        ]
    );
    assert_eq!(
        ep.ports,
        vec![
            NamedPort {
                name: "redis".into(),
                protocol: Protocol::Tcp,
                port: 6379
            },
            NamedPort {
                name: String::new(),
                protocol: Protocol::Udp,
                port: 53
            },
            NamedPort {
                name: "metrics".into(),
                protocol: Protocol::Tcp,
                port: 9090
            },
        ]
    );
}

#[test]
fn pod_ip_fallback_and_defaults() {
    let ep = pod(&pod_of("metadata: {name: a}\nstatus: {podIP: 10.0.0.9}\n"))
        .unwrap()
        .unwrap();
    assert_eq!(ep.id, EndpointId::new("default", "a"));
    assert_eq!(ep.ips, vec!["10.0.0.9".parse::<IpAddr>().unwrap()]);
    assert_eq!(ep.node, None);
    assert!(ep.labels.is_empty() && ep.ports.is_empty());
    let ep = pod(&pod_of(
        "metadata: {name: a}\nstatus: {podIP: 10.0.0.9, podIPs: []}\n",
    ))
    .unwrap()
    .unwrap();
    assert_eq!(ep.ips.len(), 1);
    let ep = pod(&pod_of("metadata: {name: a}\n")).unwrap().unwrap();
    assert!(ep.ips.is_empty());
}

#[test]
fn pods_that_are_not_endpoints() {
    for yaml in [
        "metadata: {name: a}\nspec: {hostNetwork: true}\n",
        "metadata: {name: a}\nstatus: {phase: Succeeded}\n",
        "metadata: {name: a}\nstatus: {phase: Failed}\n",
        "metadata: {name: a, deletionTimestamp: \"2024-01-01T00:00:00Z\"}\n",
    ] {
        assert_eq!(pod(&pod_of(yaml)), Ok(None), "{yaml}");
    }
    assert!(pod(&pod_of(
        "metadata: {name: a}\nspec: {hostNetwork: false}\nstatus: {phase: Running}\n"
    ))
    .unwrap()
    .is_some());
    // Invalid input is an error even for a pod that would be left out.
    assert!(pod(&pod_of(
        "metadata: {name: a}\nspec: {hostNetwork: true}\nstatus: {podIP: x}\n"
    ))
    .is_err());
}

#[test]
fn namespaces_get_their_name_label() {
    let ns: k8s::Namespace =
        serde_yaml::from_str("metadata: {name: bob, labels: {user: bob}}\n").unwrap();
    let n = namespace(&ns).unwrap();
    assert_eq!(n.name, "bob");
    assert_eq!(n.labels.get("user").map(String::as_str), Some("bob"));
    assert_eq!(
        n.labels.get(NAMESPACE_NAME_LABEL).map(String::as_str),
        Some("bob")
    );
    // A label that lies about the name is overridden, as the API server does.
    let ns: k8s::Namespace =
        serde_yaml::from_str("metadata: {name: a, labels: {\"kubernetes.io/metadata.name\": b}}\n")
            .unwrap();
    assert_eq!(
        namespace(&ns)
            .unwrap()
            .labels
            .get(NAMESPACE_NAME_LABEL)
            .map(String::as_str),
        Some("a")
    );
}

const BATCH: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: myns, labels: {env: a}}
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: myns, labels: {v: "1"}}
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: myns, labels: {v: "2"}}
---
apiVersion: v1
kind: Pod
metadata: {name: done, namespace: other}
status: {phase: Succeeded}
---
apiVersion: v1
kind: Pod
metadata: {name: q}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np, namespace: myns}
spec: {policyTypes: [Egress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np, namespace: myns}
spec: {}
---
apiVersion: v1
kind: Namespace
metadata: {name: myns, labels: {env: b}}
"#;

#[test]
fn cluster_from_a_batch_later_documents_replace_earlier() {
    let m = parse_documents("batch.yaml", BATCH).unwrap();
    let c = cluster(&m.documents).unwrap();
    assert_eq!(
        c.namespaces.keys().collect::<Vec<_>>(),
        vec!["default", "myns"]
    );
    assert_eq!(
        c.namespaces["myns"].labels.get("env").map(String::as_str),
        Some("b")
    );
    let ids: Vec<String> = c.endpoints.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(ids, vec!["default/q", "myns/p"]);
    assert_eq!(
        c.endpoints[1].labels.get("v").map(String::as_str),
        Some("2")
    );
    assert_eq!(c.policies.len(), 1);
    assert_eq!(
        c.policies[0].egress, None,
        "the later policy replaced the egress one"
    );
    assert_eq!(c.tiers, crate::policy::Tier::defaults());
}

#[test]
fn cluster_reports_every_error_and_nothing_else() {
    let text = format!(
        "{BATCH}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: bad, namespace: myns}}\nstatus: {{podIP: nope}}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: bad-np, namespace: myns}}\nspec: {{policyTypes: [Sideways], ingress: [{{ports: [{{port: 1, endPort: 0}}]}}]}}\n"
    );
    let m = parse_documents("b.yaml", &text).unwrap();
    let errs = cluster(&m.documents).unwrap_err();
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert_eq!(errs[0].object.as_deref(), Some("Pod myns/bad"));
    assert_eq!(errs[0].field, "status.podIP");
    assert_eq!(errs[0].location.document, 8);
    assert_eq!(errs[1].object.as_deref(), Some("NetworkPolicy myns/bad-np"));
    assert_eq!(errs[1].field, "spec.policyTypes[0]");
    assert_eq!(errs[2].field, "spec.ingress[0].ports[0].endPort");
    assert_eq!(
        errs[2].to_string(),
        "b.yaml: document 9: NetworkPolicy myns/bad-np: spec.ingress[0].ports[0].endPort: endPort 0 must not be below port 1"
    );
}

#[test]
fn empty_batch_is_an_empty_cluster() {
    assert_eq!(cluster(&[]).unwrap(), Cluster::new());
}

mod selector_property {
    //! The converted selector agrees with the Kubernetes definition of a label selector
    //! (SEMANTICS.md 10) on random selectors and label sets.

    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn key() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "c"]).prop_map(String::from)
    }

    fn value() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["x", "y", "z"]).prop_map(String::from)
    }

    fn requirement() -> impl Strategy<Value = k8s::LabelSelectorRequirement> {
        let op = prop::sample::select(vec!["In", "NotIn", "Exists", "DoesNotExist"]);
        (key(), op, prop::collection::vec(value(), 1..3)).prop_map(|(key, op, values)| {
            let values = matches!(op, "In" | "NotIn").then_some(values);
            k8s::LabelSelectorRequirement {
                key,
                operator: op.to_string(),
                values,
            }
        })
    }

    fn selector() -> impl Strategy<Value = k8s::LabelSelector> {
        (
            prop::option::of(prop::collection::btree_map(key(), value(), 0..3)),
            prop::option::of(prop::collection::vec(requirement(), 0..3)),
        )
            .prop_map(|(match_labels, match_expressions)| k8s::LabelSelector {
                match_labels,
                match_expressions,
            })
    }

    /// The Kubernetes definition, written independently of the conversion.
    fn k8s_matches(sel: &k8s::LabelSelector, labels: &BTreeMap<String, String>) -> bool {
        let labels_ok = sel
            .match_labels
            .iter()
            .flatten()
            .all(|(k, v)| labels.get(k) == Some(v));
        let exprs_ok = sel.match_expressions.iter().flatten().all(|r| {
            let vals = r.values.clone().unwrap_or_default();
            let got = labels.get(&r.key);
            match r.operator.as_str() {
                "In" => got.is_some_and(|v| vals.contains(v)),
                "NotIn" => got.is_none_or(|v| !vals.contains(v)),
                "Exists" => got.is_some(),
                _ => got.is_none(),
            }
        });
        labels_ok && exprs_ok
    }

    proptest! {
        #[test]
        fn converted_selector_matches_like_kubernetes(
            sel in selector(),
            labels in prop::collection::btree_map(key(), value(), 0..4),
        ) {
            let converted = label_selector(&sel).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            prop_assert_eq!(converted.matches(&labels), k8s_matches(&sel, &labels));
            // The canonical text form reads back to the same selector.
            prop_assert_eq!(Selector::parse(&converted.to_string()).ok(), Some(converted));
        }
    }
}
