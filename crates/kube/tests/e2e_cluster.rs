//! End to end against a real cluster: runs only when `KUBECONFIG` points at a reachable
//! API server (and passes, saying why, otherwise). It creates a throwaway namespace with a
//! pod-less NetworkPolicy, runs the controller into an embedded datastore, checks the policy
//! and namespace arrive, deletes the namespace and checks they leave.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::Api;
use palisade_kube::fake_api::objects::{allow_from, namespace};
use palisade_kube::{ControllerConfig, Metrics};
use palisade_store::{Datastore, EmbeddedStore};
use tokio::sync::watch;

async fn reachable_cluster() -> Result<kube::Client, String> {
    let Some(path) = std::env::var_os("KUBECONFIG") else {
        return Err("KUBECONFIG is not set".into());
    };
    let client = palisade_kube::connect::client(Some(std::path::Path::new(&path)))
        .await
        .map_err(|e| e.to_string())?;
    let api = Api::<Namespace>::all(client.clone());
    let params = ListParams::default().limit(1);
    match tokio::time::timeout(Duration::from_secs(5), api.list(&params)).await {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(e)) => Err(format!(
            "the cluster in KUBECONFIG answered with an error: {e}"
        )),
        Err(_) => Err("the cluster in KUBECONFIG did not answer within 5 s".into()),
    }
}

async fn wait_key(store: &Arc<dyn Datastore>, key: &str, present: bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = store.get(key).await.expect("get").is_some();
        if got == present {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} still {}",
            if present { "absent" } else { "present" }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_against_a_real_cluster() {
    let client = match reachable_cluster().await {
        Ok(c) => c,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let suffix = std::process::id();
    let ns_name = format!("palisade-e2e-{suffix}");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(&PostParams::default(), &namespace(&ns_name, &[]))
        .await
        .expect("create test namespace");
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns_name);
    policies
        .create(
            &PostParams::default(),
            &allow_from(&ns_name, "e2e", "web", "client"),
        )
        .await
        .expect("create test policy");

    let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::new());
    let (_leader_tx, leader) = watch::channel(true);
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(palisade_kube::run(
        client.clone(),
        store.clone(),
        ControllerConfig::default(),
        Metrics::new(),
        leader,
        shutdown,
    ));
    let pol_key = format!("/palisade/v1/policies/default/{ns_name}/e2e");
    let ns_key = format!("/palisade/v1/namespaces/{ns_name}");
    wait_key(&store, &ns_key, true).await;
    wait_key(&store, &pol_key, true).await;
    namespaces
        .delete(&ns_name, &DeleteParams::default())
        .await
        .expect("delete test namespace");
    wait_key(&store, &ns_key, false).await;
    wait_key(&store, &pol_key, false).await;
    stop.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
}
