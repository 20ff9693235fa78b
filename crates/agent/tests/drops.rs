//! `/drops` of an agent running against the fake kernel and the embedded datastore (no root):
//! logged packets (as the NFLOG reader hands them over) are attributed from what the agent
//! applied and what the datastore says about every pod, served as JSON lines, streamed with
//! `?follow`, and counted in `policy_drops_total`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use palisade_agent::drops::nflog::LoggedPacket;
use palisade_agent::drops::reader::record;
use palisade_agent::{client, server, Agent, DataplaneKind};
use palisade_dataplane::fake::FakeKernel;
use palisade_dataplane::{iptables_dataplane, RecordingSleeper, RetryPolicy};
use palisade_model::{Direction, EndpointId};
use palisade_render::names::{drop_log_prefix, DropSite};
use palisade_store::StoredObject;
use palisade_store::{Datastore, EmbeddedStore};
use serde_json::Value;

const T: Duration = Duration::from_secs(10);

/// IPv4 + TCP headers from `src` to `dst`:`port`.
fn tcp(src: [u8; 4], dst: [u8; 4], port: u16) -> Vec<u8> {
    let mut b = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
    b.extend(src);
    b.extend(dst);
    b.extend([0x9c, 0x40]);
    b.extend(port.to_be_bytes());
    b.extend([0; 16]);
    b
}

fn web_ingress_drop(payload: Vec<u8>) -> LoggedPacket {
    LoggedPacket {
        prefix: drop_log_prefix(DropSite::EndOfTier {
            direction: Direction::Ingress,
            endpoint: &EndpointId::new("prod", "web"),
            tier: "default",
        }),
        payload,
    }
}

fn lines(body: &str) -> Vec<Value> {
    body.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn logged_drops_are_attributed_served_and_followed() {
    let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::new());
    put_all(store.as_ref(), &objects()).await;
    let kernel = Arc::new(FakeKernel::new());
    let cfg = config(DataplaneKind::Iptables);
    let dp = Box::new(iptables_dataplane(
        cfg.render.clone(),
        kernel.clone(),
        Arc::new(RecordingSleeper::new()),
        RetryPolicy::none(),
    ));
    let agent = Agent::new(cfg, store.clone(), dp).unwrap();
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = agent.shared();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let srv = tokio::spawn(server::serve(listener, shared.clone(), async move {
        let _ = stop_rx.await;
    }));
    let run = Running::start(agent);
    run.wait_ready(T).await;
    // The kernel got the rate-limited log rule before web's drop.
    let rules = kernel.external("iptables-save", &[], None).stdout;
    assert!(
        rules.contains("-m limit --limit 100/sec --limit-burst 100 -j NFLOG --nflog-group 2"),
        "{rules}"
    );

    // other (local) → web:80 and remote (on n2) → web:443: both dropped at web's ingress.
    record(
        &shared,
        &web_ingress_drop(tcp([10, 0, 0, 3], [10, 0, 0, 1], 80)),
    );
    record(
        &shared,
        &web_ingress_drop(tcp([10, 0, 1, 1], [10, 0, 0, 1], 443)),
    );
    // Not a drop prefix, or an unknown key: ignored.
    record(
        &shared,
        &LoggedPacket {
            prefix: "pal log ingress rule 0 prod/x".into(),
            payload: tcp([10, 0, 0, 3], [10, 0, 0, 1], 80),
        },
    );
    record(
        &shared,
        &LoggedPacket {
            prefix: "pal-drop 0000000000000000 ingress x".into(),
            payload: tcp([10, 0, 0, 3], [10, 0, 0, 1], 80),
        },
    );
    let (code, body) = client::get(addr, "/drops", T).await.unwrap();
    assert_eq!(code, 200, "{body}");
    let got = lines(&body);
    assert_eq!(got.len(), 2, "{body}");
    assert_eq!(got[0]["from"], "prod/other");
    assert_eq!(got[0]["to"], "prod/web");
    assert_eq!(got[0]["port"], 80);
    assert_eq!(got[0]["protocol"], "TCP");
    assert_eq!(got[0]["direction"], "ingress");
    assert_eq!(got[0]["tier"], "default");
    assert_eq!(got[0]["node"], NODE);
    assert_eq!(
        got[0]["policy"],
        serde_json::json!(["prod/web-from-client"])
    );
    assert_eq!(got[0]["rule"], Value::Null);
    assert_eq!(got[1]["from"], "prod/remote", "remote pods are named too");

    // A pod that goes away is no longer named.
    let other = EndpointId::new("prod", "other");
    let key = palisade_store::keys::endpoint(Some(NODE), &other.namespace, &other.name).unwrap();
    store.delete(&key, None).await.unwrap();
    let s = shared.clone();
    wait_for("the address book to forget prod/other", T, || {
        s.drops
            .with_book(|b| b.get(&"10.0.0.3".parse().unwrap()).is_none())
    })
    .await;

    // Follow: what the ring has, then the new drop.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let follower = tokio::spawn(async move {
        client::get_lines(addr, "/drops?follow", T, |l| {
            let _ = tx.send(l.to_string());
            true
        })
        .await
    });
    for _ in 0..2 {
        tokio::time::timeout(T, rx.recv()).await.unwrap().unwrap();
    }
    record(
        &shared,
        &web_ingress_drop(tcp([10, 0, 0, 3], [10, 0, 0, 1], 8080)),
    );
    let line = tokio::time::timeout(T, rx.recv()).await.unwrap().unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (v["from"].as_str(), v["port"].as_u64()),
        (Some("10.0.0.3"), Some(8080))
    );
    follower.abort();

    let (_, metrics) = client::get(addr, "/metrics", T).await.unwrap();
    assert!(
        metrics.contains(
            "palisade_agent_policy_drops_total{namespace=\"prod\",pod=\"web\",direction=\"ingress\"} 3"
        ),
        "{metrics}"
    );
    run.stop().await;
    let _ = stop_tx.send(());
    srv.await.unwrap().unwrap();
}

#[tokio::test]
async fn drops_says_why_when_they_are_not_read() {
    let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::new());
    let kernel = Arc::new(FakeKernel::new());
    let mut cfg = config(DataplaneKind::Iptables);
    cfg.render.drop_log_group = None;
    let dp = Box::new(iptables_dataplane(
        cfg.render.clone(),
        kernel,
        Arc::new(RecordingSleeper::new()),
        RetryPolicy::none(),
    ));
    let agent = Agent::new(cfg, store, dp).unwrap();
    let shared = agent.shared();
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let srv = tokio::spawn(server::serve(listener, shared.clone(), async move {
        let _ = stop_rx.await;
    }));
    let (code, body) = client::get(addr, "/drops", T).await.unwrap();
    assert_eq!((code, body.as_str()), (200, ""), "nothing dropped yet");
    shared
        .drops
        .set_reader_error(Some("drop logging is off (--no-drop-log)".into()));
    let (code, body) = client::get(addr, "/drops", T).await.unwrap();
    assert_eq!(code, 503);
    assert!(body.contains("drop logging is off"), "{body}");
    let _ = stop_tx.send(());
    srv.await.unwrap().unwrap();
}

/// The prefix of a would-drop at `prod/client`'s ingress.
fn client_staged_drop(payload: Vec<u8>) -> LoggedPacket {
    LoggedPacket {
        prefix: drop_log_prefix(DropSite::StagedDrop {
            direction: Direction::Ingress,
            endpoint: &EndpointId::new("prod", "client"),
        }),
        payload,
    }
}

fn kernel_text(kernel: &FakeKernel, kind: DataplaneKind) -> String {
    match kind {
        DataplaneKind::Iptables => kernel.external("iptables-save", &[], None).stdout,
        DataplaneKind::Nftables => {
            kernel
                .external("nft", &["-j", "list", "table", "inet", "palisade"], None)
                .stdout
        }
    }
}

/// A staged `client-deny-all`: both dataplanes program client's staged chain with the staged
/// key in its log prefix; a logged would-drop is served with `"staged": true`, named after the
/// staged policy, and counted in `staged_drops_total`. Unstaging the policy (a normal update)
/// removes the staged chain and makes the policy's drop an ordinary one.
#[tokio::test]
async fn staged_drops_are_attributed_counted_and_unstaging_enforces() {
    for kind in [DataplaneKind::Iptables, DataplaneKind::Nftables] {
        staged_case(kind).await;
    }
}

async fn staged_case(kind: DataplaneKind) {
    let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::new());
    let mut staged = deny_to_client();
    staged.staged = true;
    let mut objs = objects();
    objs.push(StoredObject::Policy(staged.clone()));
    put_all(store.as_ref(), &objs).await;
    let kernel = Arc::new(FakeKernel::new());
    let cfg = config(kind);
    let dp: Box<dyn palisade_dataplane::Dataplane> = match kind {
        DataplaneKind::Iptables => Box::new(iptables_dataplane(
            cfg.render.clone(),
            kernel.clone(),
            Arc::new(RecordingSleeper::new()),
            RetryPolicy::none(),
        )),
        DataplaneKind::Nftables => Box::new(palisade_dataplane::nft_dataplane(
            cfg.render.clone(),
            kernel.clone(),
            Arc::new(RecordingSleeper::new()),
            RetryPolicy::none(),
        )),
    };
    let agent = Agent::new(cfg, store.clone(), dp).unwrap();
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = agent.shared();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let srv = tokio::spawn(server::serve(listener, shared.clone(), async move {
        let _ = stop_rx.await;
    }));
    let run = Running::start(agent);
    run.wait_ready(T).await;
    let text = kernel_text(&kernel, kind);
    assert!(text.contains("pal-st-"), "{kind:?}: {text}");
    assert!(
        text.contains("ingress staged prod/client"),
        "{kind:?}: {text}"
    );

    // web → client:80, which the enforced policies let in and client-deny-all would drop.
    record(
        &shared,
        &client_staged_drop(tcp([10, 0, 0, 1], [10, 0, 0, 2], 80)),
    );
    let (code, body) = client::get(addr, "/drops", T).await.unwrap();
    assert_eq!(code, 200, "{body}");
    let got = lines(&body);
    assert_eq!(got.len(), 1, "{body}");
    assert_eq!(got[0]["staged"], true, "{body}");
    assert_eq!(got[0]["from"], "prod/web");
    assert_eq!(got[0]["to"], "prod/client");
    assert_eq!(got[0]["endpoint"], "prod/client");
    assert_eq!(got[0]["direction"], "ingress");
    assert_eq!(
        got[0]["policy"],
        serde_json::json!(["prod/client-deny-all"])
    );
    assert!(got[0].get("staged_allow").is_none(), "{body}");
    let (_, metrics) = client::get(addr, "/metrics", T).await.unwrap();
    assert!(
        metrics.contains(
            "palisade_agent_staged_drops_total{namespace=\"prod\",pod=\"client\",direction=\"ingress\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        !metrics.contains("palisade_agent_policy_drops_total{namespace=\"prod\",pod=\"client\""),
        "a would-drop is not a drop: {metrics}"
    );

    // The annotation removed: an ordinary update, the staged chain goes, the policy drops.
    staged.staged = false;
    put(store.as_ref(), &StoredObject::Policy(staged)).await;
    let k = kernel.clone();
    wait_for("the staged chain to go", T, || {
        !kernel_text(&k, kind).contains("pal-st-")
    })
    .await;
    let s = shared.clone();
    wait_for("the staged key to be forgotten", T, || {
        let key = palisade_render::names::drop_key(DropSite::StagedDrop {
            direction: Direction::Ingress,
            endpoint: &EndpointId::new("prod", "client"),
        });
        s.drops.index().get(&key).is_none()
    })
    .await;
    let text = kernel_text(&kernel, kind);
    assert!(text.contains("ingress prod/client"), "{kind:?}: {text}");
    run.stop().await;
    let _ = stop_tx.send(());
    srv.await.unwrap().unwrap();
}
