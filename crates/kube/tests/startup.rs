//! Start-up checks against the fake Kubernetes API: a missing lease namespace and a 403 on a
//! watched kind stop the controller with a message naming the namespace (and the ways out) or
//! the verb and the resource.

use palisade_kube::fake_api::objects::namespace;
use palisade_kube::fake_api::FakeApi;
use palisade_kube::startup::{check, Requirements, StartupError};

fn with_lease(ns: &str) -> Requirements {
    Requirements {
        lease: Some((ns.to_string(), "palisade-controller".to_string())),
    }
}

#[tokio::test]
async fn a_missing_lease_namespace_is_named_with_the_ways_out() {
    let (client, api) = FakeApi::start();
    api.apply(&namespace("default", &[]));
    let err = check(&client, &with_lease("palisade-system"))
        .await
        .expect_err("the namespace does not exist");
    assert!(
        matches!(&err, StartupError::LeaseNamespaceMissing { namespace } if namespace == "palisade-system"),
        "{err:?}"
    );
    let text = err.to_string();
    for part in [
        "\"palisade-system\"",
        "kubectl create namespace palisade-system",
        "--lease-namespace",
        "--no-leader-election",
    ] {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
    // Once it exists, or without leader election, the controller may start.
    check(&client, &Requirements::default())
        .await
        .expect("no lease, no namespace needed");
    api.apply(&namespace("palisade-system", &[]));
    check(&client, &with_lease("palisade-system"))
        .await
        .expect("the namespace exists");
}

#[tokio::test]
async fn rbac_denied_on_a_watched_kind_names_the_verb_and_the_resource() {
    let (client, api) = FakeApi::start();
    api.apply(&namespace("palisade-system", &[]));
    for (plural, resource) in [
        ("namespaces", "namespaces"),
        ("pods", "pods"),
        ("networkpolicies", "networkpolicies.networking.k8s.io"),
        ("nodes", "nodes"),
        (
            "clusternetworkpolicies",
            "clusternetworkpolicies.policy.networking.k8s.io",
        ),
    ] {
        api.fail_next(plural, 1, 403);
        let err = check(&client, &with_lease("palisade-system"))
            .await
            .expect_err("forbidden");
        let StartupError::Forbidden {
            verb, resource: r, ..
        } = &err
        else {
            panic!("{plural}: {err:?}");
        };
        assert_eq!((*verb, r.as_str()), ("list", resource));
        let text = err.to_string();
        assert!(
            text.contains(&format!("may not list {resource}")) && text.contains("RBAC"),
            "{text}"
        );
    }
    // The watch verb: the list is allowed, the watch is not.
    api.fail_next_watch("pods", 1, 403);
    let err = check(&client, &with_lease("palisade-system"))
        .await
        .expect_err("forbidden");
    assert!(
        matches!(&err, StartupError::Forbidden { verb: "watch", resource, .. } if resource == "pods"),
        "{err:?}"
    );
    assert!(err.to_string().contains("may not watch pods"), "{err}");
    check(&client, &with_lease("palisade-system"))
        .await
        .expect("all granted");
    // The lease itself: `get` in its namespace.
    api.fail_next("leases", 1, 403);
    let err = check(&client, &with_lease("palisade-system"))
        .await
        .expect_err("forbidden");
    assert!(
        matches!(&err, StartupError::Forbidden { verb: "get", resource, .. } if resource == "leases.coordination.k8s.io"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("in namespace palisade-system"),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_cluster_network_policy_crd_does_not_stop_the_start() {
    let (client, api) = FakeApi::start();
    api.apply(&namespace("palisade-system", &[]));
    // The API server answers 404 for a resource it does not serve.
    api.fail_next("clusternetworkpolicies", u32::MAX, 404);
    check(&client, &with_lease("palisade-system"))
        .await
        .expect("the CRD is optional");
    // Other kinds are not optional.
    api.fail_next("nodes", 1, 404);
    let err = check(&client, &with_lease("palisade-system"))
        .await
        .expect_err("nodes are required");
    assert!(err.to_string().contains("nodes"), "{err}");
}
