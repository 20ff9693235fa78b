//! ClusterNetworkPolicies survive the datastore: for random valid ClusterNetworkPolicies (both
//! tiers, equal priorities, Accept/Deny/Pass, every kind of peer and port, named and unnamed
//! rules, staged or not), model → stored value → model gives back the same policy and rule
//! names, and a whole cluster (with nodes and host-networked pods) read back from its stored
//! values is the cluster it was.

use palisade_model::k8s::ClusterNetworkPolicy;
use palisade_model::{convert, manifest, Cluster};
use palisade_store::{Record, StoredObject, OWNER_APPLY};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn label_key() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["app", "team", "app.kubernetes.io/name", "x-y_z.w"])
}

fn label_value() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["", "a", "web", "a-b.c_d", "X9"])
}

fn selector() -> impl Strategy<Value = Value> {
    let labels = prop::collection::btree_map(label_key(), label_value(), 0..3);
    let expression = (
        label_key(),
        prop::sample::select(vec!["In", "NotIn", "Exists", "DoesNotExist"]),
        prop::collection::btree_set(label_value(), 1..3),
    )
        .prop_map(|(key, op, values)| match op {
            "In" | "NotIn" => json!({"key": key, "operator": op, "values": values}),
            _ => json!({"key": key, "operator": op}),
        });
    (labels, prop::collection::vec(expression, 0..3)).prop_map(|(labels, exprs)| {
        let mut sel = Map::new();
        if !labels.is_empty() {
            sel.insert("matchLabels".into(), json!(labels));
        }
        if !exprs.is_empty() {
            sel.insert("matchExpressions".into(), Value::Array(exprs));
        }
        Value::Object(sel)
    })
}

fn pods() -> impl Strategy<Value = Value> {
    (prop::option::of(selector()), selector()).prop_map(|(ns, pods)| match ns {
        Some(ns) => json!({"namespaceSelector": ns, "podSelector": pods}),
        None => json!({"podSelector": pods}),
    })
}

fn ingress_peer() -> impl Strategy<Value = Value> {
    prop_oneof![
        selector().prop_map(|s| json!({"namespaces": s})),
        pods().prop_map(|p| json!({"pods": p})),
    ]
}

fn egress_peer() -> impl Strategy<Value = Value> {
    let networks = prop::sample::subsequence(
        vec![
            "10.0.0.0/8",
            "192.168.1.0/24",
            "fd00::/64",
            "203.0.113.7/32",
        ],
        1..3,
    );
    let domains = prop::sample::subsequence(vec!["example.com", "*.example.org", "a.b.c."], 1..3);
    prop_oneof![
        ingress_peer(),
        selector().prop_map(|s| json!({"nodes": s})),
        networks.prop_map(|n| json!({"networks": n})),
        domains.prop_map(|d| json!({"domainNames": d})),
    ]
}

fn protocol() -> impl Strategy<Value = Value> {
    let port = prop_oneof![
        (1i64..=65535).prop_map(|n| json!({"number": n})),
        (1i64..65535, 1i64..1000)
            .prop_map(|(s, len)| json!({"range": {"start": s, "end": (s + len).min(65535)}}))
            .prop_filter("start < end", |v| v["range"]["start"] != v["range"]["end"]),
    ];
    let proto = prop::sample::select(vec!["tcp", "udp", "sctp"]);
    prop_oneof![
        (proto, port).prop_map(|(p, port)| json!({p: {"destinationPort": port}})),
        prop::sample::select(vec!["http", "dns", "metrics"])
            .prop_map(|n| json!({"destinationNamedPort": n})),
    ]
}

fn rule(peers_field: &'static str, peer: BoxedStrategy<Value>) -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop::sample::select(vec![
            "",
            "allow-web",
            "deny all",
            "r-1",
        ])),
        prop::sample::select(vec!["Accept", "Deny", "Pass"]),
        prop::collection::vec(peer, 1..4),
        prop::option::of(prop::collection::vec(protocol(), 1..3)),
    )
        .prop_map(move |(name, action, peers, protocols)| {
            let mut r = Map::new();
            if let Some(n) = name {
                r.insert("name".into(), json!(n));
            }
            // The CRD refuses named ports with peers that have none (networks, nodes,
            // domainNames).
            let portless = peers.iter().any(|p| {
                ["networks", "nodes", "domainNames"]
                    .iter()
                    .any(|f| p.get(f).is_some())
            });
            let protocols = protocols.map(|list| {
                list.into_iter()
                    .filter(|p| !(portless && p.get("destinationNamedPort").is_some()))
                    .collect::<Vec<_>>()
            });
            r.insert("action".into(), json!(action));
            r.insert(peers_field.into(), Value::Array(peers));
            if let Some(p) = protocols.filter(|p| !p.is_empty()) {
                r.insert("protocols".into(), Value::Array(p));
            }
            Value::Object(r)
        })
}

/// A valid ClusterNetworkPolicy named `name`; priorities from a small range so that ties
/// are common.
fn cnp(name: String) -> impl Strategy<Value = Value> {
    let subject = prop_oneof![
        selector().prop_map(|s| json!({"namespaces": s})),
        pods().prop_map(|p| json!({"pods": p})),
    ];
    (
        prop::sample::select(vec!["Admin", "Baseline"]),
        prop_oneof![0i64..3, Just(1000)],
        subject,
        prop::collection::vec(rule("from", ingress_peer().boxed()), 0..4),
        prop::collection::vec(rule("to", egress_peer().boxed()), 0..4),
        prop::option::of(any::<bool>()),
    )
        .prop_map(move |(tier, priority, subject, ingress, egress, staged)| {
            let mut meta = json!({"name": name});
            if let Some(s) = staged {
                meta["annotations"] = json!({"palisade.dev/staged": s.to_string()});
            }
            let mut spec = json!({"tier": tier, "priority": priority, "subject": subject});
            if !ingress.is_empty() {
                spec["ingress"] = Value::Array(ingress);
            }
            if !egress.is_empty() {
                spec["egress"] = Value::Array(egress);
            }
            json!({
                "apiVersion": "policy.networking.k8s.io/v1alpha2",
                "kind": "ClusterNetworkPolicy",
                "metadata": meta,
                "spec": spec,
            })
        })
}

fn cnps() -> impl Strategy<Value = Vec<Value>> {
    (1usize..5).prop_flat_map(|n| (0..n).map(|i| cnp(format!("cnp-{i}"))).collect::<Vec<_>>())
}

/// Encodes and decodes one object the way every writer and reader does.
fn through_the_datastore(object: &StoredObject) -> StoredObject {
    let key = object.key().expect("key");
    let bytes = object.encode(OWNER_APPLY).expect("encode");
    Record::decode(&key, &bytes).expect("decode").object
}

const WORLD: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: tenant, labels: {team: a}}
---
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {app: web}}
status: {addresses: [{type: InternalIP, address: 192.168.0.1}, {type: InternalIP, address: "fd00::1"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: tenant, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c, ports: [{name: http, containerPort: 80}]}]}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: exporter, namespace: monitoring, labels: {app: exporter}}
spec: {nodeName: n1, hostNetwork: true, containers: [{name: c, ports: [{name: metrics, containerPort: 9100}]}]}
"#;

/// The cluster as the datastore gives it back to a reader.
fn read_back(cluster: &Cluster) -> Cluster {
    let mut out = Cluster::new();
    for object in StoredObject::of_cluster(cluster) {
        through_the_datastore(&object).upsert_into(&mut out);
    }
    out
}

/// Policies by id (files give them in document order, the datastore by key), and no entry
/// for a policy none of whose rules has a name (the same as no entry).
fn normalized(mut c: Cluster) -> Cluster {
    c.policies.sort_by(|a, b| a.id.cmp(&b.id));
    c.rule_names
        .retain(|_, n| n.ingress.iter().chain(&n.egress).any(|s| !s.is_empty()));
    c
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn a_cluster_network_policy_survives_the_datastore(docs in cnps()) {
        for doc in &docs {
            let k: ClusterNetworkPolicy = serde_json::from_value(doc.clone()).expect("k8s type");
            let (policy, names) = match convert::cluster_network_policy(&k) {
                Ok(converted) => converted,
                Err(errs) => panic!("generated an invalid policy: {errs:?}\n{doc:#}"),
            };
            let stored = StoredObject::policy(policy.clone(), names.clone());
            let back = through_the_datastore(&stored);
            prop_assert_eq!(back.as_policy(), Some(&policy));
            prop_assert_eq!(&back, &stored);
        }
        let text = docs
            .iter()
            .map(|d| serde_json::to_string(d).expect("json"))
            .chain([WORLD.to_string()])
            .collect::<Vec<_>>()
            .join("\n---\n");
        let parsed = manifest::parse_documents("gen.yaml", &text).expect("parse");
        let cluster = convert::cluster(&parsed.documents).expect("convert");
        prop_assert!(!cluster.host_network.is_empty());
        prop_assert_eq!(normalized(read_back(&cluster)), normalized(cluster));
    }
}
