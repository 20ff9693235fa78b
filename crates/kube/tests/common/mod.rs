//! Shared harness: the controller against the fake API server and a datastore.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use palisade_kube::fake_api::FakeApi;
use palisade_kube::{ControllerConfig, Metrics};
use palisade_store::{keys, Datastore, Record, StoredObject};
use tokio::sync::watch;

/// What the datastore holds under the controller's prefixes: key → (owner, object).
pub type Contents = BTreeMap<String, (String, StoredObject)>;

pub async fn contents(store: &Arc<dyn Datastore>) -> Contents {
    let mut out = BTreeMap::new();
    for prefix in [
        keys::NAMESPACES,
        keys::ENDPOINTS,
        keys::HOST_ENDPOINTS,
        keys::POLICIES,
        keys::NODES,
    ] {
        let listing = store.list(prefix).await.expect("list");
        for kv in listing.items {
            if let Ok(rec) = Record::decode(&kv.key, &kv.value) {
                out.insert(kv.key, (rec.owner, rec.object));
            }
        }
    }
    out
}

pub struct Harness {
    pub api: FakeApi,
    pub store: Arc<dyn Datastore>,
    pub metrics: Arc<Metrics>,
    pub leader: watch::Sender<bool>,
    shutdown: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    /// The fake API server with nothing in it yet; call [`Harness::start`] after seeding it.
    pub fn new(store: Arc<dyn Datastore>) -> (Harness, kube::Client) {
        let (client, api) = FakeApi::start();
        let (leader, _) = watch::channel(true);
        let (shutdown, _) = watch::channel(false);
        (
            Harness {
                api,
                store,
                metrics: Metrics::new(),
                leader,
                shutdown,
                task: None,
            },
            client,
        )
    }

    pub fn start(&mut self, client: kube::Client, config: ControllerConfig) {
        let fut = palisade_kube::run(
            client,
            self.store.clone(),
            config,
            self.metrics.clone(),
            self.leader.subscribe(),
            self.shutdown.subscribe(),
        );
        self.task = Some(tokio::spawn(fut));
    }

    pub async fn stop(&mut self) {
        self.shutdown.send_replace(true);
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .expect("controller stops")
                .expect("controller task");
        }
    }

    /// Waits until the datastore satisfies `check` (polling; 15 s at most).
    pub async fn wait_for(&self, what: &str, check: impl Fn(&Contents) -> bool) -> Contents {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let c = contents(&self.store).await;
            if check(&c) {
                return c;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; datastore holds:\n{:#?}\nrequests: {:#?}",
                    c.keys().collect::<Vec<_>>(),
                    self.api.requests()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until a metrics line with this prefix is present (and, if given, has this value).
    pub async fn wait_metric(&self, line_prefix: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let text = self.metrics.encode();
            if text.lines().any(|l| l.starts_with(line_prefix)) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting for metric {line_prefix}; metrics:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Harness {
    /// Waits until the controller has a watch open on the resource `plural`.
    pub async fn wait_for_watch(&self, plural: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while self.api.open_watches(plural) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no watch on {plural}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

pub fn keyset(c: &Contents) -> Vec<&str> {
    c.keys().map(String::as_str).collect()
}

pub fn owner(c: &Contents, key: &str) -> Option<String> {
    c.get(key).map(|(o, _)| o.clone())
}
