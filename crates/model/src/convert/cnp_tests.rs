//! ClusterNetworkPolicy, Node and host-networked Pod conversion.

use std::net::IpAddr;

use super::*;
use crate::manifest::parse_documents;
use crate::policy::{Direction, TierAction};

fn cluster_of(yaml: &str) -> Cluster {
    let m = parse_documents("t.yaml", yaml).expect("parses");
    super::cluster(&m.documents).expect("converts")
}

fn sel(k: &str, v: &str) -> Selector {
    Selector::and(vec![Selector::Eq(k.into(), v.into())])
}

#[test]
fn a_cnp_becomes_a_cluster_wide_policy_of_its_tier() {
    let c = cluster_of(
        r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: protect}
spec:
  tier: Admin
  priority: 7
  subject: {pods: {namespaceSelector: {matchLabels: {env: prod}}, podSelector: {matchLabels: {app: db}}}}
  ingress:
  - name: from-monitoring
    action: Accept
    from: [{namespaces: {matchLabels: {team: mon}}}]
    protocols: [{tcp: {destinationPort: {number: 9090}}}, {udp: {destinationPort: {range: {start: 5000, end: 5010}}}}]
  - action: Pass
    from: [{pods: {podSelector: {matchLabels: {app: web}}}}]
    protocols: [{destinationNamedPort: sql}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: base}
spec:
  tier: Baseline
  priority: 0
  subject: {namespaces: {}}
  egress:
  - action: Deny
    to: [{networks: [10.1.2.3/16, "fd00::/8"]}, {nodes: {matchLabels: {role: cp}}}, {domainNames: [example.com]}]
"#,
    );
    let admin = &c.policies[0];
    assert_eq!(admin.id.to_string(), "admin:protect");
    assert_eq!(admin.id.namespace, None);
    assert_eq!(admin.order, 7);
    assert_eq!(admin.namespace_selector, sel("env", "prod"));
    assert_eq!(admin.selector, sel("app", "db"));
    assert!(
        admin.egress.is_none(),
        "no egress rules: egress is not affected"
    );
    let rules = admin.ingress.as_ref().expect("ingress rules");
    assert_eq!(rules[0].action, Action::Allow);
    assert_eq!(
        rules[0].peers,
        vec![Peer::Endpoints(EndpointPeer {
            namespaces: NamespaceMatch::Selector(sel("team", "mon")),
            pods: Selector::All,
        })]
    );
    assert_eq!(
        rules[0].ports,
        vec![
            PortSpec {
                protocol: Protocol::Tcp,
                port: PortMatch::Range {
                    start: 9090,
                    end: 9090
                }
            },
            PortSpec {
                protocol: Protocol::Udp,
                port: PortMatch::Range {
                    start: 5000,
                    end: 5010
                }
            },
        ]
    );
    assert_eq!(rules[1].action, Action::Pass);
    assert_eq!(
        rules[1].peers,
        vec![Peer::Endpoints(EndpointPeer {
            namespaces: NamespaceMatch::Selector(Selector::All),
            pods: sel("app", "web"),
        })]
    );
    // A named port matches whatever protocol the destination's container port declares.
    let protocols: Vec<Protocol> = rules[1].ports.iter().map(|p| p.protocol).collect();
    assert_eq!(
        protocols,
        vec![Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
    );
    assert!(rules[1]
        .ports
        .iter()
        .all(|p| p.port == PortMatch::Named("sql".into())));
    let names = &c.rule_names[&admin.id];
    assert_eq!(names.get(Direction::Ingress, 0), Some("from-monitoring"));
    assert_eq!(names.get(Direction::Ingress, 1), None);

    let base = &c.policies[1];
    assert_eq!(base.id.to_string(), "baseline:base");
    assert_eq!(base.namespace_selector, Selector::All);
    assert!(base.ingress.is_none());
    let rule = &base.egress.as_ref().expect("egress")[0];
    assert_eq!(rule.action, Action::Deny);
    assert_eq!(rule.ports, vec![], "no protocols: every protocol and port");
    assert_eq!(
        rule.peers,
        vec![
            Peer::Cidr {
                cidr: "10.1.0.0/16".parse().unwrap(),
                except: vec![]
            },
            Peer::Cidr {
                cidr: "fd00::/8".parse().unwrap(),
                except: vec![]
            },
            Peer::Nodes(sel("role", "cp")),
            Peer::DomainNames(vec!["example.com".into()]),
        ]
    );
    assert_eq!(c.tier_action("admin"), TierAction::Pass);
    assert_eq!(c.tier_action("default"), TierAction::Deny);
    assert_eq!(c.tier_action("baseline"), TierAction::Pass);
}

#[test]
fn host_network_pods_get_their_nodes_address() {
    let c = cluster_of(
        r#"
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {role: worker}}
status:
  addresses:
  - {type: Hostname, address: n1}
  - {type: ExternalIP, address: 192.0.2.1}
  - {type: InternalIP, address: 10.1.0.1}
  - {type: InternalIP, address: "fd00:1::1"}
---
apiVersion: v1
kind: Pod
metadata: {name: agent, namespace: kube-system}
spec: {nodeName: n1, hostNetwork: true}
status: {podIP: 10.9.9.9}
---
apiVersion: v1
kind: Pod
metadata: {name: lost, namespace: kube-system}
spec: {nodeName: n9, hostNetwork: true}
status: {podIP: 10.1.9.1}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default}
spec: {nodeName: n1}
status: {podIP: 10.2.0.5}
"#,
    );
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let n1 = &c.nodes["n1"];
    assert_eq!(
        n1.addresses,
        vec![ip("10.1.0.1"), ip("fd00:1::1"), ip("192.0.2.1")]
    );
    let agent = c
        .endpoint(&EndpointId::new("kube-system", "agent"))
        .unwrap();
    assert_eq!(agent.ips, vec![ip("10.1.0.1"), ip("fd00:1::1")]);
    let lost = c.endpoint(&EndpointId::new("kube-system", "lost")).unwrap();
    assert_eq!(lost.ips, vec![ip("10.1.9.1")], "unknown node: status.podIP");
    assert!(c.is_host_network(&agent.id) && c.is_host_network(&lost.id));
    assert!(!c.is_host_network(&EndpointId::new("default", "web")));
    // convert::pod still leaves host-networked pods out (they are no workload endpoints).
    let m = parse_documents(
        "p.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: b}\nspec: {hostNetwork: true}",
    )
    .unwrap();
    let crate::manifest::Object::Pod(p) = &m.documents[0].object else {
        panic!("a pod")
    };
    assert_eq!(super::pod(p), Ok(None));
}

#[test]
fn invalid_cnps_fail_the_batch_with_the_object_named() {
    let m = parse_documents(
        "bad.yaml",
        "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: x}\nspec: {tier: Admin, priority: 2000, subject: {namespaces: {}}}",
    )
    .unwrap();
    let errs = super::cluster(&m.documents).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].object.as_deref(), Some("ClusterNetworkPolicy x"));
    assert_eq!(errs[0].field, "spec.priority");
    assert_eq!(
        errs[0].to_string(),
        "bad.yaml: document 0: ClusterNetworkPolicy x: spec.priority: priority 2000 is out of range: must be between 0 and 1000"
    );
}

#[test]
fn an_unknown_cnp_api_version_is_refused() {
    let errs = parse_documents(
        "v1.yaml",
        "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: ClusterNetworkPolicy\nmetadata: {name: x}",
    )
    .unwrap_err();
    assert_eq!(errs[0].field, "apiVersion");
    assert!(errs[0].message.contains("v1alpha2"), "{}", errs[0].message);
}

#[test]
fn a_cluster_with_cnps_round_trips_through_json() {
    let c = cluster_of(
        "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: p}\nspec: {tier: Baseline, priority: 3, subject: {namespaces: {}}, egress: [{name: x, action: Pass, to: [{nodes: {}}]}]}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: n1}\nstatus: {addresses: [{type: InternalIP, address: 10.0.0.1}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: h, namespace: k}\nspec: {nodeName: n1, hostNetwork: true}\n",
    );
    let text = serde_json::to_string(&c).expect("serializes");
    let back: Cluster = serde_json::from_str(&text).expect("parses");
    assert_eq!(back, c);
}
