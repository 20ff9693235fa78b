//! Realization through `palisade get networkpolicies -o wide|json` on a real etcd, with two
//! agents (nodes n1 and n2, in this process, on in-memory kernels): a policy that selects a
//! pod on each node goes from 0/2 to 1/2 to 2/2 as the agents program it; with one agent
//! down, a new revision of the policy stays at 1/2. An agent reading through a relay counts
//! as well.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_agent::{Agent, AgentConfig, DataplaneKind};
use palisade_dataplane::fake::FakeKernel;
use palisade_dataplane::{nft_dataplane, RecordingSleeper, RetryPolicy};
use palisade_model::{Endpoint, EndpointId, Labels, Namespace, Policy, PolicyId, Selector};
use palisade_store::testing::EtcdServer;
use palisade_store::{
    Datastore, Record, Relay, RelayConfig, RelayStore, StoredObject, OWNER_APPLY,
};
use serde_json::Value;

fn pod(name: &str, node: &str, ip: &str) -> StoredObject {
    let mut labels = Labels::new();
    labels.insert("app".into(), "web".into());
    StoredObject::Endpoint(Endpoint {
        id: EndpointId::new("prod", name),
        node: Some(node.into()),
        labels,
        ips: vec![ip.parse().expect("ip")],
        ports: vec![],
    })
}

fn policy(rules: usize) -> StoredObject {
    StoredObject::Policy(Policy {
        id: PolicyId {
            tier: palisade_model::DEFAULT_TIER.into(),
            namespace: Some("prod".into()),
            name: "web-deny".into(),
        },
        order: palisade_model::KUBERNETES_POLICY_ORDER,
        selector: Selector::parse("app == 'web'").expect("selector"),
        namespace_selector: Selector::All,
        ingress: Some(
            (0..rules)
                .map(|_| palisade_model::Rule {
                    action: palisade_model::Action::Allow,
                    peers: vec![],
                    ports: vec![],
                })
                .collect(),
        ),
        egress: None,
        staged: false,
    })
}

async fn put(store: &dyn Datastore, object: StoredObject) -> i64 {
    let key = object.key().expect("key");
    let value = Record::new(OWNER_APPLY, object).encode().expect("encode");
    store.put(&key, value).await.expect("put")
}

/// An agent of `node` on an in-memory kernel; stopped by dropping the sender.
fn start_agent(
    node: &str,
    store: Arc<dyn Datastore>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let mut cfg = AgentConfig::new(node);
    cfg.dataplane = DataplaneKind::Nftables;
    let dp = nft_dataplane(
        palisade_render::RenderConfig::default(),
        Arc::new(FakeKernel::new()),
        Arc::new(RecordingSleeper::new()),
        RetryPolicy::none(),
    );
    let agent = Agent::new(cfg, store, Box::new(dp)).expect("agent");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        agent
            .run(async move {
                let _ = rx.await;
            })
            .await
            .expect("agent run");
    });
    (tx, task)
}

/// `PROGRAMMED` of the policy in `get networkpolicies -o wide`, and the JSON realization.
fn programmed(url: &str) -> (String, Value) {
    let run = |output: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_palisade"))
            .args(["get", "networkpolicies", "-o", output, "--datastore", url])
            .env_remove("PALISADE_DATASTORE")
            .stdin(Stdio::null())
            .output()
            .expect("run palisade");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let wide = run("wide");
    let mut lines = wide.lines();
    // Columns are aligned (a selector has spaces): the cell starts where its header does.
    let col = lines
        .next()
        .expect("header")
        .find("PROGRAMMED")
        .expect("PROGRAMMED column");
    let row = lines
        .find(|l| l.contains("web-deny"))
        .expect("the policy's row");
    let cell = row[col..]
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string();
    let json: Value = serde_json::from_str(&run("json")).expect("json");
    (cell, json[0]["realization"].clone())
}

async fn wait_for(url: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let url2 = url.to_string();
        let (got, json) = tokio::task::spawn_blocking(move || programmed(&url2))
            .await
            .expect("join");
        if got == want {
            return json;
        }
        assert!(
            Instant::now() < deadline,
            "still {got}, want {want}: {json}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realization_counts_the_nodes_that_programmed_the_current_revision() {
    let Ok(server) = EtcdServer::start() else {
        eprintln!("skipped: no etcd binary to start");
        return;
    };
    let url = server.url();
    let store: Arc<dyn Datastore> = Arc::new(server.connect().await.expect("connect"));
    put(
        store.as_ref(),
        StoredObject::Namespace(Namespace::implicit("prod")),
    )
    .await;
    put(store.as_ref(), pod("web-1", "n1", "10.0.0.1")).await;
    put(store.as_ref(), pod("web-2", "n2", "10.0.0.2")).await;
    let rev = put(store.as_ref(), policy(1)).await;

    // No agent yet: programmed nowhere.
    let json = wait_for(&url, "0/2").await;
    assert_eq!(json["revision"], rev);
    assert_eq!(json["nodes"], serde_json::json!(["n1", "n2"]));
    assert_eq!(json["pending"]["n1"], Value::Null);

    let (stop1, task1) = start_agent("n1", store.clone());
    let json = wait_for(&url, "1/2").await;
    assert_eq!(json["programmed"], serde_json::json!(["n1"]));
    let (stop2, task2) = start_agent("n2", store.clone());
    wait_for(&url, "2/2").await;

    // n2 goes down; a new revision of the policy is programmed by n1 only.
    let _ = stop2.send(());
    task2.await.expect("agent n2");
    let rev2 = put(store.as_ref(), policy(2)).await;
    let json = wait_for(&url, "1/2").await;
    assert_eq!(json["revision"], rev2);
    assert_eq!(json["pending"]["n2"], rev, "n2 still has the old revision");
    // And it stays there while n2 is down.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let json = wait_for(&url, "1/2").await;
    assert_eq!(json["programmed"], serde_json::json!(["n1"]));
    // n2 back: caught up.
    let (stop2, task2) = start_agent("n2", store.clone());
    wait_for(&url, "2/2").await;
    for (stop, task) in [(stop1, task1), (stop2, task2)] {
        let _ = stop.send(());
        task.await.expect("agent");
    }
}

/// An agent reading through a relay (`palisade relay`'s `palisade_store::relay`) programs the
/// policy and reports it as one on etcd does (its status goes to etcd through
/// `RelayStore::with_writes`), and follows a new revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_through_a_relay_programs_and_reports() {
    let Ok(server) = EtcdServer::start() else {
        eprintln!("skipped: no etcd binary to start");
        return;
    };
    let url = server.url();
    let store: Arc<dyn Datastore> = Arc::new(server.connect().await.expect("connect"));
    put(
        store.as_ref(),
        StoredObject::Namespace(Namespace::implicit("prod")),
    )
    .await;
    put(store.as_ref(), pod("web-1", "n1", "10.0.0.1")).await;
    put(store.as_ref(), pod("web-2", "n2", "10.0.0.2")).await;
    put(store.as_ref(), policy(1)).await;

    let relay = Relay::new(RelayConfig::new(palisade_store::keys::ROOT));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let serve = tokio::spawn({
        let r = relay.clone();
        async move { r.serve(listener).await }
    });
    let follow = tokio::spawn({
        let (r, s) = (relay.clone(), store.clone());
        async move { r.follow(s).await }
    });
    let via: Arc<dyn Datastore> =
        Arc::new(RelayStore::new(vec![addr], 0).with_writes(store.clone()));

    let (stop1, task1) = start_agent("n1", store.clone());
    let (stop2, task2) = start_agent("n2", via);
    wait_for(&url, "2/2").await;
    let rev2 = put(store.as_ref(), policy(2)).await;
    let json = wait_for(&url, "2/2").await;
    assert_eq!(json["revision"], rev2, "{json}");
    assert_eq!(relay.stats().upstream_lists, 1);
    for (stop, task) in [(stop1, task1), (stop2, task2)] {
        let _ = stop.send(());
        task.await.expect("agent");
    }
    serve.abort();
    follow.abort();
}
