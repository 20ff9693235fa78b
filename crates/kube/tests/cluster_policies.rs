//! The controller with ClusterNetworkPolicies and Nodes against the fake Kubernetes API:
//! both reach the datastore and follow changes; an invalid ClusterNetworkPolicy is reported
//! and not written; without the CRD the controller says so once and goes on. Host-networked
//! pods are stored as host endpoints with their node's address.

mod common;

use std::sync::Arc;

use common::{owner, Harness};
use k8s_openapi::api::core::v1::{Node, Pod};
use palisade_kube::crd::RawClusterNetworkPolicy;
use palisade_kube::fake_api::objects::{
    admin_deny, cluster_network_policy, host_network_pod, namespace, node, pod,
};
use palisade_kube::ControllerConfig;
use palisade_store::{keys, Datastore, StoredObject, OWNER_CONTROLLER};
use serde_json::json;

const CNPS: &str = "clusternetworkpolicies";

fn admin_key(name: &str) -> String {
    format!("/palisade/v1/policies/admin/_global/{name}")
}

fn baseline_key(name: &str) -> String {
    format!("/palisade/v1/policies/baseline/_global/{name}")
}

fn node_key(name: &str) -> String {
    format!("/palisade/v1/nodes/{name}")
}

fn ns_key(name: &str) -> String {
    format!("/palisade/v1/namespaces/{name}")
}

/// Listed at start, then changed, moved between tiers and deleted.
pub async fn cluster_policies_and_nodes_reach_the_datastore(store: Arc<dyn Datastore>) {
    let (mut h, client) = Harness::new(store);
    h.api.apply(&namespace("prod", &[]));
    h.api.apply(&admin_deny("protect-prod", 10, "prod", "dev"));
    h.api.apply(&node("n1", "192.168.0.1", &[("zone", "a")]));
    h.start(client, ControllerConfig::default());

    let c = h
        .wait_for("initial sync", |c| {
            c.contains_key(&admin_key("protect-prod")) && c.contains_key(&node_key("n1"))
        })
        .await;
    assert_eq!(
        owner(&c, &admin_key("protect-prod")).as_deref(),
        Some(OWNER_CONTROLLER)
    );
    // Stored with its rule's name, for `explain --datastore`.
    let StoredObject::NamedPolicy(p, names) = &c[&admin_key("protect-prod")].1 else {
        panic!("policy with rule names expected")
    };
    assert_eq!(p.order, 10);
    assert_eq!(names.ingress, vec!["deny-from".to_string()]);
    let StoredObject::Node(n) = &c[&node_key("n1")].1 else {
        panic!("node expected")
    };
    assert_eq!(
        n.addresses,
        vec!["192.168.0.1".parse::<std::net::IpAddr>().unwrap()]
    );

    // A change of priority is written; a new node too.
    h.api.apply(&admin_deny("protect-prod", 20, "prod", "dev"));
    h.api.apply(&node("n2", "192.168.0.2", &[]));
    h.wait_for("new priority and node n2", |c| {
        c.get(&admin_key("protect-prod"))
            .and_then(|(_, o)| o.as_policy())
            .is_some_and(|p| p.order == 20)
            && c.contains_key(&node_key("n2"))
    })
    .await;

    // From Admin to Baseline: the key moves.
    h.api.apply(&cluster_network_policy(
        "protect-prod",
        json!({"tier": "Baseline", "priority": 20, "subject": {"namespaces": {}},
               "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]}),
    ));
    h.wait_for("moved to the baseline tier", |c| {
        c.contains_key(&baseline_key("protect-prod")) && !c.contains_key(&admin_key("protect-prod"))
    })
    .await;

    // Deletions.
    h.api
        .delete::<RawClusterNetworkPolicy>(None, "protect-prod");
    h.api.delete::<Node>(None, "n1");
    h.wait_for("deleted", |c| {
        !c.contains_key(&baseline_key("protect-prod"))
            && !c.contains_key(&node_key("n1"))
            && c.contains_key(&node_key("n2"))
            && c.contains_key(&ns_key("prod"))
    })
    .await;
    h.stop().await;
}

/// An invalid ClusterNetworkPolicy: not written (a valid earlier version is removed), counted
/// in the metrics, a Warning Event; the fixed version is written again.
pub async fn invalid_cluster_policy(store: Arc<dyn Datastore>) {
    let (mut h, client) = Harness::new(store);
    h.api.apply(&namespace("prod", &[]));
    h.api.apply(&admin_deny("p", 1, "prod", "dev"));
    let config = ControllerConfig {
        events_instance: Some("replica-0".into()),
        ..Default::default()
    };
    h.start(client, config);
    h.wait_for("policy", |c| c.contains_key(&admin_key("p")))
        .await;

    h.api.apply(&cluster_network_policy(
        "p",
        json!({"tier": "Admin", "priority": 5000, "subject": {"namespaces": {}}}),
    ));
    h.api.apply(&node("after", "192.168.0.9", &[]));
    h.wait_for("invalid version removed, later events still applied", |c| {
        !c.contains_key(&admin_key("p")) && c.contains_key(&node_key("after"))
    })
    .await;
    h.wait_metric(
        "palisade_controller_invalid_object{kind=\"ClusterNetworkPolicy\",namespace=\"\",name=\"p\"} 1",
    )
    .await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let events = h.api.values("events");
        let found = events.iter().any(|e| {
            e["reason"] == "InvalidObject"
                && e["type"] == "Warning"
                && e["regarding"]["kind"] == "ClusterNetworkPolicy"
                && e["regarding"]["name"] == "p"
                && e["note"]
                    .as_str()
                    .is_some_and(|n| n.contains("spec.priority"))
        });
        if found {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no event: {events:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    h.api.apply(&admin_deny("p", 1, "prod", "dev"));
    h.wait_for("fixed policy back", |c| c.contains_key(&admin_key("p")))
        .await;
    assert!(!h.metrics.encode().contains("name=\"p\""));
    h.stop().await;
}

/// The cluster has no ClusterNetworkPolicy CRD (404 on its list): the controller says so
/// once, syncs everything else and keeps following changes; it does not retry the CRD.
pub async fn without_the_crd(store: Arc<dyn Datastore>) {
    let (mut h, client) = Harness::new(store);
    h.api.fail_next(CNPS, u32::MAX, 404);
    h.api.apply(&namespace("prod", &[]));
    h.api.apply(&node("n1", "192.168.0.1", &[]));
    h.start(client, ControllerConfig::default());
    h.wait_for("the rest synced", |c| {
        c.contains_key(&ns_key("prod")) && c.contains_key(&node_key("n1"))
    })
    .await;
    h.wait_metric("palisade_controller_synced 1").await;
    h.wait_metric(
        "palisade_controller_crd_missing{crd=\"clusternetworkpolicies.policy.networking.k8s.io\"} 1",
    )
    .await;
    h.api.apply(&namespace("dev", &[]));
    h.wait_for("later changes", |c| c.contains_key(&ns_key("dev")))
        .await;
    let cnp_requests = h.api.requests().iter().filter(|r| r.contains(CNPS)).count();
    assert_eq!(
        cnp_requests,
        1,
        "one list, no retries: {:#?}",
        h.api.requests()
    );
    h.stop().await;
}

fn host_key(ns: &str, name: &str) -> String {
    format!("/palisade/v1/hostendpoints/{ns}/{name}")
}

/// The host endpoint stored for `ns/name`: (node, addresses).
fn host_endpoint(c: &common::Contents, ns: &str, name: &str) -> Option<(String, Vec<String>)> {
    match c.get(&host_key(ns, name)) {
        Some((_, StoredObject::HostEndpoint(ep))) => Some((
            ep.node.clone().unwrap_or_default(),
            ep.ips.iter().map(ToString::to_string).collect(),
        )),
        _ => None,
    }
}

/// A host-networked pod is stored as a host endpoint (never under `endpoints/`) with its
/// node's address, follows its node's address and its node, and goes when it goes.
pub async fn host_networked_pods(store: Arc<dyn Datastore>) {
    let (mut h, client) = Harness::new(store);
    h.api.apply(&namespace("monitoring", &[]));
    h.api.apply(&node("n1", "192.168.0.1", &[]));
    h.api.apply(&node("n2", "192.168.0.2", &[]));
    // Scheduled, no podIP yet: its node's address is its address.
    h.api
        .apply(&host_network_pod("monitoring", "exporter", "n1", None));
    h.api
        .apply(&pod("monitoring", "web", Some("n1"), Some("10.0.0.1"), &[]));
    h.start(client, ControllerConfig::default());
    let one = |node: &str, ip: &str| Some((node.to_string(), vec![ip.to_string()]));

    let c = h
        .wait_for("initial sync", |c| {
            host_endpoint(c, "monitoring", "exporter").is_some()
        })
        .await;
    assert_eq!(
        host_endpoint(&c, "monitoring", "exporter"),
        one("n1", "192.168.0.1")
    );
    assert_eq!(
        owner(&c, &host_key("monitoring", "exporter")).as_deref(),
        Some(OWNER_CONTROLLER)
    );
    let StoredObject::HostEndpoint(ep) = &c[&host_key("monitoring", "exporter")].1 else {
        unreachable!()
    };
    assert_eq!(ep.labels.get("app").map(String::as_str), Some("exporter"));
    assert_eq!(ep.ports[0].port, 9100);
    let workload: Vec<&String> = c
        .keys()
        .filter(|k| k.starts_with(keys::ENDPOINTS))
        .collect();
    assert_eq!(
        workload,
        vec!["/palisade/v1/endpoints/n1/monitoring/web"],
        "only the workload pod is a workload endpoint"
    );

    // The node's address changes: so does the pod's.
    h.api.apply(&node("n1", "192.168.0.9", &[]));
    h.wait_for("the node's new address", |c| {
        host_endpoint(c, "monitoring", "exporter") == one("n1", "192.168.0.9")
    })
    .await;

    // The pod moves to n2 (and Kubernetes gives it n2's address as its podIP).
    h.api.apply(&host_network_pod(
        "monitoring",
        "exporter",
        "n2",
        Some("192.168.0.2"),
    ));
    h.wait_for("the pod on n2", |c| {
        host_endpoint(c, "monitoring", "exporter") == one("n2", "192.168.0.2")
    })
    .await;

    // n2's address changes, then n2 is deleted: the pod falls back to its own podIP.
    h.api.apply(&node("n2", "192.168.0.7", &[]));
    h.wait_for("n2's new address", |c| {
        host_endpoint(c, "monitoring", "exporter") == one("n2", "192.168.0.7")
    })
    .await;
    h.api.delete::<Node>(None, "n2");
    h.wait_for("its own podIP without its node", |c| {
        host_endpoint(c, "monitoring", "exporter") == one("n2", "192.168.0.2")
    })
    .await;

    // Deleted: gone; the workload pod stays.
    h.api.delete::<Pod>(Some("monitoring"), "exporter");
    let c = h
        .wait_for("deleted", |c| {
            !c.contains_key(&host_key("monitoring", "exporter"))
        })
        .await;
    assert!(c.contains_key("/palisade/v1/endpoints/n1/monitoring/web"));
    assert!(!c.keys().any(|k| k.starts_with(keys::HOST_ENDPOINTS)));
    h.stop().await;
}

macro_rules! on_embedded_and_etcd {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(std::sync::Arc::new(palisade_store::EmbeddedStore::new())).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if !palisade_store::testing::etcd_available() {
                        eprintln!("skipped: the etcd binary is not installed");
                        return;
                    }
                    let server = palisade_store::testing::EtcdServer::start().expect("start etcd");
                    let store = server.connect().await.expect("connect to etcd");
                    super::$name(std::sync::Arc::new(store)).await;
                }
            )*
        }
    };
}

on_embedded_and_etcd!(
    cluster_policies_and_nodes_reach_the_datastore,
    invalid_cluster_policy,
    without_the_crd,
    host_networked_pods,
);
