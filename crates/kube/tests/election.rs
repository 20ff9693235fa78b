//! Leader election through a Lease on the fake API server: one leader at a time, a standby
//! takes over when the leader releases the lease or stops renewing, a leader that cannot
//! reach the API steps down.

use std::time::Duration;

use palisade_kube::fake_api::FakeApi;
use palisade_kube::{ElectionConfig, Elector};
use tokio::sync::watch;
use tokio::time::Instant;

fn config(identity: &str) -> ElectionConfig {
    ElectionConfig {
        lease_duration: Duration::from_millis(1500),
        renew_deadline: Duration::from_millis(1000),
        retry_period: Duration::from_millis(100),
        ..ElectionConfig::new("palisade-controller", "palisade-system", identity)
    }
}

struct Replica {
    leader: watch::Receiver<bool>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start(client: &kube::Client, identity: &str) -> Replica {
    let (leader_tx, leader) = watch::channel(false);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let elector = Elector::new(client.clone(), config(identity));
    let task = tokio::spawn(elector.run(leader_tx, shutdown_rx));
    Replica {
        leader,
        shutdown,
        task,
    }
}

async fn wait_leading(r: &mut Replica, want: bool, within: Duration) -> Duration {
    let t0 = Instant::now();
    tokio::time::timeout(within, r.leader.wait_for(|l| *l == want))
        .await
        .unwrap_or_else(|_| panic!("replica did not become leading={want} within {within:?}"))
        .expect("elector alive");
    t0.elapsed()
}

fn holder(api: &FakeApi) -> Option<String> {
    api.get_value("leases", Some("palisade-system"), "palisade-controller")
        .and_then(|v| v["spec"]["holderIdentity"].as_str().map(String::from))
}

fn transitions(api: &FakeApi) -> i64 {
    api.get_value("leases", Some("palisade-system"), "palisade-controller")
        .and_then(|v| v["spec"]["leaseTransitions"].as_i64())
        .unwrap_or(-1)
}

fn lease_gets(api: &FakeApi) -> usize {
    api.requests()
        .iter()
        .filter(|r| {
            r.starts_with("GET /apis/coordination.k8s.io/v1/namespaces/palisade-system/leases/")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_a_fast_handover_on_release() {
    let (client, api) = FakeApi::start();
    let mut a = start(&client, "a");
    wait_leading(&mut a, true, Duration::from_secs(5)).await;
    assert_eq!(holder(&api).as_deref(), Some("a"));
    assert_eq!(transitions(&api), 0);

    let mut b = start(&client, "b");
    // b goes through several rounds while a renews: it must stay a standby.
    let gets = lease_gets(&api);
    while lease_gets(&api) < gets + 10 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!*b.leader.borrow());
    assert!(*a.leader.borrow());

    // a shuts down and releases: b takes over well within the lease duration.
    a.shutdown.send_replace(true);
    a.task.await.unwrap();
    assert!(!*a.leader.borrow());
    let took = wait_leading(&mut b, true, Duration::from_secs(5)).await;
    assert!(took < Duration::from_millis(1500), "handover took {took:?}");
    assert_eq!(holder(&api).as_deref(), Some("b"));
    assert_eq!(transitions(&api), 1);
    b.shutdown.send_replace(true);
    b.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_leader_is_replaced_after_the_lease_expires() {
    let (client, api) = FakeApi::start();
    let mut a = start(&client, "a");
    wait_leading(&mut a, true, Duration::from_secs(5)).await;
    let mut b = start(&client, "b");
    // a dies without releasing.
    a.task.abort();
    let took = wait_leading(&mut b, true, Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(1000),
        "took over after {took:?}, before the lease could have expired"
    );
    assert_eq!(holder(&api).as_deref(), Some("b"));
    assert_eq!(transitions(&api), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_steps_down_before_the_lease_expires() {
    let (client, api) = FakeApi::start();
    let mut a = start(&client, "a");
    wait_leading(&mut a, true, Duration::from_secs(5)).await;
    api.set_down(true);
    let took = wait_leading(&mut a, false, Duration::from_secs(5)).await;
    assert!(
        took < Duration::from_millis(1500),
        "stepped down after {took:?}"
    );
    api.set_down(false);
    wait_leading(&mut a, true, Duration::from_secs(5)).await;
}

/// Two full replicas (elector + controller) on one datastore: one writes; when it goes away
/// the other takes over and keeps the datastore in step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_one_writer_and_a_takeover() {
    use std::sync::Arc;

    use palisade_kube::fake_api::objects::{namespace, pod};
    use palisade_kube::{ControllerConfig, Metrics};
    use palisade_store::{Datastore, EmbeddedStore};

    let (client, api) = FakeApi::start();
    api.apply(&namespace("prod", &[]));
    api.apply(&pod("prod", "a", Some("n1"), Some("10.0.0.1"), &[]));
    let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::new());

    struct Full {
        metrics: Arc<Metrics>,
        shutdown: watch::Sender<bool>,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    }
    let start_full = |identity: &str| {
        let metrics = Metrics::new();
        let (leader_tx, leader) = watch::channel(false);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let elector = Elector::new(client.clone(), config(identity));
        let tasks = vec![
            tokio::spawn(elector.run(leader_tx, shutdown_rx.clone())),
            tokio::spawn(palisade_kube::run(
                client.clone(),
                store.clone(),
                ControllerConfig::default(),
                metrics.clone(),
                leader,
                shutdown_rx,
            )),
        ];
        Full {
            metrics,
            shutdown,
            tasks,
        }
    };
    let leading = |f: &Full| {
        f.metrics
            .encode()
            .lines()
            .any(|l| l == "palisade_controller_leader 1")
    };
    let wait = |what: &'static str, check: Box<dyn Fn() -> bool + Send>| async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };

    let a = start_full("a");
    let ma = a.metrics.clone();
    wait(
        "a to lead",
        Box::new(move || {
            ma.encode()
                .lines()
                .any(|l| l == "palisade_controller_leader 1")
        }),
    )
    .await;
    let b = start_full("b");
    let mb = b.metrics.clone();
    wait("b to sync as a standby", Box::new(move || mb.is_ready())).await;
    assert!(leading(&a), "a: {}", a.metrics.encode());
    assert!(!leading(&b), "b: {}", b.metrics.encode());
    assert_eq!(b.metrics.writes_total(), 0, "a standby writes nothing");
    let deadline = Instant::now() + Duration::from_secs(10);
    while store
        .get("/palisade/v1/endpoints/n1/prod/a")
        .await
        .unwrap()
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "the leader never wrote: {}",
            a.metrics.encode()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // a goes away (releasing its lease); b takes over and follows new changes.
    a.shutdown.send_replace(true);
    for t in a.tasks {
        t.await.unwrap();
    }
    api.apply(&pod("prod", "b", Some("n2"), Some("10.0.0.2"), &[]));
    let t0 = Instant::now();
    let s = store.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while s
        .get("/palisade/v1/endpoints/n2/prod/b")
        .await
        .unwrap()
        .is_none()
    {
        assert!(Instant::now() < deadline, "b never wrote the new pod");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "takeover took {:?}",
        t0.elapsed()
    );
    assert!(leading(&b));
    assert!(b.metrics.writes_total() >= 1);
    b.shutdown.send_replace(true);
    for t in b.tasks {
        t.await.unwrap();
    }
}
