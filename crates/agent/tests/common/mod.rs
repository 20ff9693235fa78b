//! Shared by the agent's integration tests: a small cluster for node `n1`, writing it into a
//! datastore, waiting for conditions (with a deadline, never a blind sleep), and running an
//! agent in the background.
#![allow(dead_code)]

pub mod lab;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use palisade_agent::{Agent, AgentConfig, Shared};
use palisade_model::{
    Action, Cluster, Endpoint, EndpointId, EndpointPeer, Labels, NamedPort, Namespace,
    NamespaceMatch, Peer, Policy, PolicyId, PortMatch, PortSpec, Protocol, Rule, Selector,
};
use palisade_store::{Datastore, Record, StoredObject, OWNER_APPLY};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const NODE: &str = "n1";

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    let mut l = Labels::new();
    for (k, v) in pairs {
        l.insert(k.to_string(), v.to_string());
    }
    l
}

pub fn pod(ns: &str, name: &str, node: &str, ip: &str, app: &str) -> Endpoint {
    Endpoint {
        id: EndpointId::new(ns, name),
        node: Some(node.into()),
        labels: labels(&[("app", app)]),
        ips: vec![ip.parse().unwrap()],
        ports: vec![NamedPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
        }],
    }
}

pub fn pid(ns: &str, name: &str) -> PolicyId {
    PolicyId {
        tier: palisade_model::DEFAULT_TIER.into(),
        namespace: Some(ns.into()),
        name: name.into(),
    }
}

/// `web` accepts TCP 80 from `client` pods of its namespace, nothing else.
pub fn allow_client_to_web() -> Policy {
    Policy {
        id: pid("prod", "web-from-client"),
        order: palisade_model::KUBERNETES_POLICY_ORDER,
        selector: Selector::parse("app == 'web'").unwrap(),
        namespace_selector: Selector::All,
        staged: false,
        ingress: Some(vec![Rule {
            action: Action::Allow,
            peers: vec![Peer::Endpoints(EndpointPeer {
                namespaces: NamespaceMatch::Name("prod".into()),
                pods: Selector::parse("app == 'client'").unwrap(),
            })],
            ports: vec![PortSpec {
                protocol: Protocol::Tcp,
                port: PortMatch::Range { start: 80, end: 80 },
            }],
        }]),
        egress: None,
    }
}

/// Isolates `client` for ingress (nothing allowed in).
pub fn deny_to_client() -> Policy {
    Policy {
        id: pid("prod", "client-deny-all"),
        order: palisade_model::KUBERNETES_POLICY_ORDER,
        selector: Selector::parse("app == 'client'").unwrap(),
        namespace_selector: Selector::All,
        staged: false,
        ingress: Some(vec![]),
        egress: None,
    }
}

/// Namespace `prod`, pods web (10.0.0.1), client (10.0.0.2), other (10.0.0.3) on n1, one
/// remote pod on n2, and the web policy.
pub fn objects() -> Vec<StoredObject> {
    vec![
        StoredObject::Namespace(Namespace::implicit("prod")),
        StoredObject::Endpoint(pod("prod", "web", NODE, "10.0.0.1", "web")),
        StoredObject::Endpoint(pod("prod", "client", NODE, "10.0.0.2", "client")),
        StoredObject::Endpoint(pod("prod", "other", NODE, "10.0.0.3", "other")),
        StoredObject::Endpoint(pod("prod", "remote", "n2", "10.0.1.1", "client")),
        StoredObject::Policy(allow_client_to_web()),
    ]
}

/// The same objects as a model cluster, for the engine's verdicts.
pub fn cluster(objects: &[StoredObject]) -> Cluster {
    let mut c = Cluster::new();
    for o in objects {
        o.clone().upsert_into(&mut c);
    }
    c
}

pub async fn put(store: &dyn Datastore, object: &StoredObject) -> i64 {
    let key = object.key().unwrap();
    let value = Record::new(OWNER_APPLY, object.clone()).encode().unwrap();
    store.put(&key, value).await.unwrap()
}

pub async fn put_all(store: &dyn Datastore, objects: &[StoredObject]) -> i64 {
    let mut rev = 0;
    for o in objects {
        rev = put(store, o).await;
    }
    rev
}

/// Polls `cond` every few milliseconds until it holds; panics with `what` after `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Like [`wait_for`] with an async condition.
pub async fn wait_for_async<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An agent running in the background; stopped (and awaited) by [`Running::stop`].
pub struct Running {
    pub shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), palisade_agent::AgentError>>>,
}

impl Running {
    pub fn start(agent: Agent) -> Running {
        let shared = agent.shared();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(agent.run(async move {
            let _ = rx.await;
        }));
        Running {
            shared,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }

    pub async fn wait_ready(&self, timeout: Duration) {
        let s = Arc::clone(&self.shared);
        wait_for("agent ready", timeout, || s.ready()).await;
    }
}

/// A config for tests: short resync so drift repair is quick to observe.
pub fn config(kind: palisade_agent::DataplaneKind) -> AgentConfig {
    let mut c = AgentConfig::new(NODE);
    c.dataplane = kind;
    c.resync_interval = Duration::from_secs(30);
    // Every patched program is checked against a full render (a difference fails the apply).
    c.incremental = palisade_agent::config::IncrementalMode::Verify;
    c
}
