//! The controller end to end against the fake Kubernetes API (tower-test mock) and a real
//! datastore: the embedded one, and etcd when the `etcd` binary is installed.

mod common;

use std::sync::Arc;

use common::{keyset, owner, Harness};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use palisade_kube::fake_api::objects::{allow_from, namespace, network_policy, pod};
use palisade_kube::ControllerConfig;
use palisade_store::{Datastore, StoredObject, OWNER_APPLY, OWNER_CONTROLLER};
use serde_json::json;

const CTRL: &str = OWNER_CONTROLLER;

fn ep_key(node: &str, ns: &str, pod: &str) -> String {
    format!("/palisade/v1/endpoints/{node}/{ns}/{pod}")
}

fn ns_key(name: &str) -> String {
    format!("/palisade/v1/namespaces/{name}")
}

fn pol_key(ns: &str, name: &str) -> String {
    format!("/palisade/v1/policies/default/{ns}/{name}")
}

/// Writes an object into the datastore as `owner` (what `palisade apply` or an earlier
/// controller run would have left).
async fn seed(store: &Arc<dyn Datastore>, owner: &str, object: StoredObject) {
    let key = object.key().unwrap();
    store
        .put(&key, object.encode(owner).unwrap())
        .await
        .unwrap();
}

fn model_ep(ns: &str, name: &str, node: &str, ip: &str) -> StoredObject {
    StoredObject::Endpoint(palisade_model::Endpoint {
        id: palisade_model::EndpointId::new(ns, name),
        node: Some(node.into()),
        labels: Default::default(),
        ips: vec![ip.parse().unwrap()],
        ports: vec![],
    })
}

fn model_policy(ns: &str, name: &str) -> StoredObject {
    let np = allow_from(ns, name, "web", "client");
    let k: palisade_model::k8s::NetworkPolicy = palisade_kube::objects::to_model(&np).unwrap();
    StoredObject::Policy(palisade_model::convert::network_policy(&k).unwrap())
}

/// Start-up: everything the cluster has is written; what was deleted while the controller
/// was down is removed; objects of other owners are left alone, even where the cluster has
/// an object with the same key (a conflict, counted).
pub async fn initial_sync_and_ownership(store: Arc<dyn Datastore>) {
    seed(&store, CTRL, model_ep("prod", "gone", "n1", "10.9.9.9")).await;
    seed(
        &store,
        CTRL,
        StoredObject::Namespace(palisade_model::Namespace::implicit("old")),
    )
    .await;
    seed(
        &store,
        OWNER_APPLY,
        model_ep("prod", "manual", "n1", "10.8.8.8"),
    )
    .await;
    seed(&store, OWNER_APPLY, model_policy("prod", "allow-web")).await;

    let (mut h, client) = Harness::new(store);
    h.api.apply(&namespace("prod", &[]));
    h.api.apply(&namespace("dev", &[]));
    h.api.apply(&pod(
        "prod",
        "web-0",
        Some("n1"),
        Some("10.0.0.1"),
        &[("app", "web")],
    ));
    h.api.apply(&pod(
        "prod",
        "db-0",
        Some("n2"),
        Some("10.0.0.2"),
        &[("app", "db")],
    ));
    h.api.apply(&pod("prod", "pending", Some("n2"), None, &[]));
    let mut hostnet = pod("prod", "hostnet", Some("n1"), Some("192.168.0.1"), &[]);
    hostnet.spec.as_mut().unwrap().host_network = Some(true);
    h.api.apply(&hostnet);
    h.api
        .apply(&pod("dev", "x", Some("n1"), Some("10.0.1.1"), &[]));
    h.api
        .apply(&allow_from("prod", "allow-web", "web", "client"));
    h.api
        .apply(&network_policy("dev", "deny", json!({"podSelector": {}})));
    h.start(client, ControllerConfig::default());

    let c = h
        .wait_for("initial sync", |c| {
            c.contains_key(&pol_key("dev", "deny")) && !c.contains_key(&ns_key("old"))
        })
        .await;
    assert_eq!(
        keyset(&c),
        vec![
            ep_key("n1", "dev", "x").as_str(),
            &ep_key("n1", "prod", "manual"),
            &ep_key("n1", "prod", "web-0"),
            &ep_key("n2", "prod", "db-0"),
            // The host-networked pod, with its own address while its Node is unknown.
            "/palisade/v1/hostendpoints/prod/hostnet",
            &ns_key("dev"),
            &ns_key("prod"),
            &pol_key("dev", "deny"),
            &pol_key("prod", "allow-web"),
        ]
    );
    assert_eq!(
        owner(&c, &ep_key("n1", "prod", "manual")).unwrap(),
        OWNER_APPLY
    );
    assert_eq!(
        owner(&c, &pol_key("prod", "allow-web")).unwrap(),
        OWNER_APPLY
    );
    assert_eq!(owner(&c, &ep_key("n1", "prod", "web-0")).unwrap(), CTRL);
    let StoredObject::Endpoint(web) = &c[&ep_key("n1", "prod", "web-0")].1 else {
        panic!("endpoint expected")
    };
    assert_eq!(web.labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(
        web.ips,
        vec!["10.0.0.1".parse::<std::net::IpAddr>().unwrap()]
    );
    h.wait_metric("palisade_controller_conflicts_total 1").await;
    h.wait_metric("palisade_controller_synced 1").await;
    h.stop().await;
}

/// Watch events after the initial sync, one kind of change at a time.
pub async fn watch_changes(store: Arc<dyn Datastore>) {
    let (mut h, client) = Harness::new(store);
    h.api.apply(&namespace("prod", &[]));
    h.api.apply(&pod(
        "prod",
        "web-0",
        Some("n1"),
        Some("10.0.0.1"),
        &[("app", "web")],
    ));
    h.start(client, ControllerConfig::default());
    h.wait_for("sync", |c| c.contains_key(&ep_key("n1", "prod", "web-0")))
        .await;

    // A pod without an IP is written once it has one; unscheduled, then on its node.
    h.api.apply(&pod("prod", "late", None, None, &[]));
    h.api
        .apply(&pod("prod", "late", None, Some("10.0.0.5"), &[]));
    h.wait_for("unscheduled endpoint", |c| {
        c.contains_key(&ep_key("_unscheduled", "prod", "late"))
    })
    .await;
    h.api
        .apply(&pod("prod", "late", Some("n2"), Some("10.0.0.5"), &[]));
    h.wait_for("endpoint moved to its node", |c| {
        c.contains_key(&ep_key("n2", "prod", "late"))
            && !c.contains_key(&ep_key("_unscheduled", "prod", "late"))
    })
    .await;

    // Labels change.
    h.api.apply(&pod(
        "prod",
        "web-0",
        Some("n1"),
        Some("10.0.0.1"),
        &[("app", "web2")],
    ));
    h.wait_for("new labels", |c| {
        match c.get(&ep_key("n1", "prod", "web-0")) {
            Some((_, StoredObject::Endpoint(e))) => {
                e.labels.get("app").map(String::as_str) == Some("web2")
            }
            _ => false,
        }
    })
    .await;

    // A finished pod and a terminating one stop counting.
    let mut done = pod("prod", "late", Some("n2"), Some("10.0.0.5"), &[]);
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    h.api.apply(&done);
    let mut terminating = pod("prod", "web-0", Some("n1"), Some("10.0.0.1"), &[]);
    terminating.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    h.api.apply(&terminating);
    h.wait_for("finished and terminating pods removed", |c| {
        !c.contains_key(&ep_key("n2", "prod", "late"))
            && !c.contains_key(&ep_key("n1", "prod", "web-0"))
    })
    .await;

    // Policies: add, change, delete.
    h.api.apply(&allow_from("prod", "p", "web", "client"));
    h.wait_for("policy", |c| c.contains_key(&pol_key("prod", "p")))
        .await;
    let before = h
        .wait_for("policy", |c| c.contains_key(&pol_key("prod", "p")))
        .await;
    h.api.apply(&allow_from("prod", "p", "web", "other"));
    h.wait_for("policy changed", |c| {
        c.get(&pol_key("prod", "p")).map(|v| &v.1)
            != before.get(&pol_key("prod", "p")).map(|v| &v.1)
    })
    .await;
    h.api.delete::<NetworkPolicy>(Some("prod"), "p");
    h.wait_for("policy deleted", |c| !c.contains_key(&pol_key("prod", "p")))
        .await;

    // A namespace deleted with its pods and policies.
    h.api
        .apply(&pod("prod", "a", Some("n1"), Some("10.0.0.7"), &[]));
    h.api.apply(&allow_from("prod", "q", "web", "client"));
    h.wait_for("pod and policy", |c| {
        c.contains_key(&ep_key("n1", "prod", "a")) && c.contains_key(&pol_key("prod", "q"))
    })
    .await;
    h.api.delete::<Namespace>(None, "prod");
    h.wait_for("namespace with everything in it gone", |c| c.is_empty())
        .await;
    h.stop().await;
}

/// A failing watch, a watch broken while objects are deleted and history is compacted
/// (the reconnect gets 410 Gone and relists), and an expired watch.
pub async fn relist_after_errors_and_gone(store: Arc<dyn Datastore>) {
    let (mut h, client) = Harness::new(store);
    h.api.apply(&namespace("prod", &[]));
    for i in 0..5 {
        h.api.apply(&pod(
            "prod",
            &format!("p{i}"),
            Some("n1"),
            Some(&format!("10.0.0.{i}")),
            &[],
        ));
    }
    h.start(client, ControllerConfig::default());
    h.wait_for("sync", |c| c.len() == 6).await;
    let lists_before = h
        .api
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /api/v1/pods?") && !r.contains("watch=true"))
        .count();
    assert_eq!(lists_before, 1);

    // The watch breaks and cannot come back at once; meanwhile p0 is deleted and the
    // history compacted: the watcher's reconnect from its old version gets 410 and relists.
    h.api.fail_next("pods", 2, 503);
    h.api.break_watches();
    h.api.delete::<Pod>(Some("prod"), "p0");
    h.api.compact();
    h.wait_for("p0 removed after the relist", |c| {
        !c.contains_key(&ep_key("n1", "prod", "p0")) && c.len() == 5
    })
    .await;
    h.wait_metric("palisade_controller_watch_errors_total{kind=\"Pod\"}")
        .await;
    let lists_after = h
        .api
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /api/v1/pods?") && !r.contains("watch=true"))
        .count();
    assert!(
        lists_after >= 2,
        "expected a relist, saw {lists_after} lists"
    );

    // 410 Gone on an open watch: relist; changes made around it all arrive.
    h.wait_for_watch("pods").await;
    h.api.expire_watches();
    h.api.delete::<Pod>(Some("prod"), "p1");
    h.api
        .apply(&pod("prod", "new", Some("n2"), Some("10.0.0.99"), &[]));
    h.wait_for("relist after 410", |c| {
        !c.contains_key(&ep_key("n1", "prod", "p1")) && c.contains_key(&ep_key("n2", "prod", "new"))
    })
    .await;
    h.wait_metric("palisade_controller_watch_events_total{kind=\"Pod\",event=\"init_done\"} 3")
        .await;
    h.stop().await;
}

/// An invalid NetworkPolicy is skipped, counted and its previous version removed; fixing
/// it brings it back. Nothing else stops.
pub async fn invalid_policy(store: Arc<dyn Datastore>) {
    let (mut h, client) = Harness::new(store);
    h.api.apply(&namespace("prod", &[]));
    h.api.apply(&allow_from("prod", "p", "web", "client"));
    let config = ControllerConfig {
        events_instance: Some("replica-0".into()),
        ..Default::default()
    };
    h.start(client, config);
    h.wait_for("policy", |c| c.contains_key(&pol_key("prod", "p")))
        .await;

    let bad = network_policy(
        "prod",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "not-a-cidr"}}]}]}),
    );
    h.api.apply(&bad);
    h.api
        .apply(&pod("prod", "after", Some("n1"), Some("10.0.0.3"), &[]));
    h.wait_for("invalid version removed, later events still applied", |c| {
        !c.contains_key(&pol_key("prod", "p")) && c.contains_key(&ep_key("n1", "prod", "after"))
    })
    .await;
    h.wait_metric(
        "palisade_controller_invalid_object{kind=\"NetworkPolicy\",namespace=\"prod\",name=\"p\"} 1",
    )
    .await;
    // A Warning Event on the policy says why.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let events = h.api.values("events");
        let found = events.iter().any(|e| {
            e["reason"] == "InvalidObject"
                && e["type"] == "Warning"
                && e["regarding"]["kind"] == "NetworkPolicy"
                && e["regarding"]["name"] == "p"
                && e["metadata"]["namespace"] == "prod"
                && e["note"].as_str().is_some_and(|n| n.contains("not-a-cidr"))
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
    h.api.apply(&allow_from("prod", "p", "web", "client"));
    h.wait_for("fixed policy back", |c| {
        c.contains_key(&pol_key("prod", "p"))
    })
    .await;
    assert!(!h.metrics.encode().contains("name=\"p\""));
    h.stop().await;
}

/// A standby keeps its caches warm and writes nothing; once it leads it syncs everything.
pub async fn only_the_leader_writes(store: Arc<dyn Datastore>) {
    let (mut h, client) = Harness::new(store.clone());
    h.leader.send_replace(false);
    h.api.apply(&namespace("prod", &[]));
    h.api
        .apply(&pod("prod", "a", Some("n1"), Some("10.0.0.1"), &[]));
    h.start(client, ControllerConfig::default());
    h.wait_metric("palisade_controller_synced 1").await;
    assert!(common::contents(&store).await.is_empty());
    h.api
        .apply(&pod("prod", "b", Some("n1"), Some("10.0.0.2"), &[]));
    h.leader.send_replace(true);
    h.wait_for("leader sync", |c| c.len() == 3).await;
    h.wait_metric("palisade_controller_leader 1").await;
    h.stop().await;
}

/// With a namespace selector only selected namespaces, their pods and policies are written,
/// following label changes.
pub async fn namespace_selector(store: Arc<dyn Datastore>) {
    let (mut h, client) = Harness::new(store);
    h.api.apply(&namespace("on", &[("palisade", "on")]));
    h.api.apply(&namespace("off", &[]));
    h.api
        .apply(&pod("on", "a", Some("n1"), Some("10.0.0.1"), &[]));
    h.api
        .apply(&pod("off", "b", Some("n1"), Some("10.0.0.2"), &[]));
    h.api.apply(&allow_from("off", "p", "web", "client"));
    let config = ControllerConfig {
        namespace_selector: Some("palisade=on".into()),
        ..Default::default()
    };
    h.start(client, config);
    let c = h.wait_for("sync", |c| c.len() == 2).await;
    assert_eq!(
        keyset(&c),
        vec![ep_key("n1", "on", "a").as_str(), &ns_key("on")]
    );
    h.api.apply(&namespace("off", &[("palisade", "on")]));
    h.wait_for("newly selected namespace with its pod and policy", |c| {
        c.len() == 5
    })
    .await;
    h.api.apply(&namespace("on", &[]));
    let c = h
        .wait_for("deselected namespace gone", |c| c.len() == 3)
        .await;
    assert!(c.keys().all(|k| k.contains("/off")), "{:?}", keyset(&c));
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
    initial_sync_and_ownership,
    watch_changes,
    relist_after_errors_and_gone,
    invalid_policy,
    only_the_leader_writes,
    namespace_selector,
);
