//! Shared test support: clusters from YAML (in code or the repository's `examples/`), placed
//! on nodes with addresses, and the node's desired state through `palisade_calc`.
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::Path;

pub mod gen;

use palisade_calc::{compute_full, CalcConfig, DesiredState};
use palisade_model::{manifest, Cluster};

/// A cluster from YAML text.
pub fn cluster_from_yaml(text: &str) -> Cluster {
    let m = manifest::parse_documents("test.yaml", text).expect("test yaml parses");
    palisade_model::convert::cluster(&m.documents).expect("test yaml converts")
}

/// A cluster from every YAML file of `examples/<name>` (sorted).
pub fn example(name: &str) -> Cluster {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let m = manifest::parse_documents(&f.display().to_string(), &text).expect("example parses");
        docs.extend(m.documents);
    }
    palisade_model::convert::cluster(&docs).expect("example converts")
}

/// Gives every endpoint without a node one of `nodes` (round robin) and every endpoint
/// without an address `10.244.<i/250>.<i%250+1>` (and `fd00::<i+1>` when `v6`).
pub fn place(mut cluster: Cluster, nodes: &[&str], v6: bool) -> Cluster {
    for (i, ep) in cluster.endpoints.iter_mut().enumerate() {
        if ep.node.is_none() {
            ep.node = Some(nodes[i % nodes.len()].to_string());
        }
        if ep.ips.is_empty() {
            ep.ips.push(
                format!("10.244.{}.{}", i / 250, i % 250 + 1)
                    .parse()
                    .unwrap(),
            );
            if v6 {
                ep.ips
                    .push(format!("fd00::{:x}", i + 1).parse::<IpAddr>().unwrap());
            }
        }
    }
    cluster
}

pub fn state(cluster: &Cluster, node: &str) -> DesiredState {
    compute_full(&CalcConfig::new(node), cluster)
}

pub const SMALL: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {team: a}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod, labels: {app: web}}
spec:
  nodeName: node-1
  containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]
status: {podIP: 10.0.1.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: prod, labels: {app: db}}
spec: {nodeName: node-1, containers: [{name: c}]}
status: {podIP: 10.0.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: prod, labels: {app: client}}
spec: {nodeName: node-2, containers: [{name: c}]}
status: {podIP: 10.0.2.1}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-client, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: client}}
    - ipBlock: {cidr: 192.168.0.0/16, except: [192.168.1.0/24]}
    ports:
    - {port: http}
    - {port: 9000, endPort: 9010, protocol: UDP}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-egress, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: 8080}]
"#;

/// Text that would break out of rule syntax if it reached it unescaped.
pub const EVIL: &str = "EVIL\" ; flush ruleset\n-A FORWARD -j ACCEPT } { '$(x)' \\";

/// A cluster whose names, namespaces and label values are hostile (model level: the
/// Kubernetes validation would refuse most of them, the renderer must not rely on that).
pub fn hostile_cluster() -> Cluster {
    use palisade_model::{
        Action, Endpoint, EndpointId, EndpointPeer, NamedPort, NamespaceMatch, Peer, Policy,
        PolicyId, PortMatch, PortSpec, Protocol, Rule, Selector,
    };
    let long = EVIL.repeat(40);
    let ns = format!("ns {EVIL}");
    let mut c = Cluster::new();
    let mut labels = palisade_model::Labels::new();
    labels.insert(format!("k{EVIL}"), long.clone());
    for (i, name) in [format!("-A {EVIL}"), long.clone()].into_iter().enumerate() {
        c.upsert_endpoint(Endpoint {
            id: EndpointId::new(ns.clone(), name),
            node: Some("node-1".into()),
            labels: labels.clone(),
            ips: vec![format!("10.9.0.{}", i + 1).parse().unwrap()],
            ports: vec![NamedPort {
                name: EVIL.into(),
                protocol: Protocol::Tcp,
                port: 80,
            }],
        });
    }
    let rule = |action| Rule {
        action,
        peers: vec![Peer::Endpoints(EndpointPeer {
            namespaces: NamespaceMatch::Name(ns.clone()),
            pods: Selector::Eq(format!("k{EVIL}"), long.clone()),
        })],
        ports: vec![PortSpec {
            protocol: Protocol::Tcp,
            port: PortMatch::Named(EVIL.into()),
        }],
    };
    for tier in ["admin", "default"] {
        c.upsert_policy(Policy {
            id: PolicyId {
                tier: tier.into(),
                namespace: Some(ns.clone()),
                name: long.clone(),
            },
            order: 1,
            selector: Selector::Eq(format!("k{EVIL}"), long.clone()),
            namespace_selector: Selector::All,
            staged: false,
            ingress: Some(vec![rule(Action::Log), rule(Action::Allow)]),
            egress: Some(vec![rule(Action::Pass)]),
        });
    }
    c
}

/// More ports than one multiport match holds (singles and ranges, three protocols), ICMP and
/// a v6 ipBlock with an exception.
pub const MANY_PORTS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: srv, namespace: ops, labels: {app: srv}}
spec: {nodeName: node-1, containers: [{name: c}]}
status: {podIPs: [{ip: 10.1.0.1}, {ip: "fd00:1::1"}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: many, namespace: ops}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress:
  - ports:
    - {port: 1}
    - {port: 2}
    - {port: 3}
    - {port: 4}
    - {port: 5}
    - {port: 6}
    - {port: 7}
    - {port: 8}
    - {port: 9}
    - {port: 10, endPort: 20}
    - {port: 30, endPort: 40}
    - {port: 50, endPort: 60}
    - {port: 70, endPort: 80}
    - {port: 90, endPort: 95}
    - {port: 100, protocol: UDP}
    - {port: 101, protocol: SCTP}
  egress:
  - to: [{ipBlock: {cidr: "fd00::/16", except: ["fd00:1::/32"]}}, {ipBlock: {cidr: 0.0.0.0/0}}]
"#;
