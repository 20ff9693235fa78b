//! The async shell: watchers → channel → batches → cache → plan → datastore.
//!
//! ```text
//!  watcher(Namespace) ─┐  convert + trim          drain up to `max_drain` changes
//!  watcher(Pod)        ├──────────────► channel ─────────────────────────────► Cache
//!  watcher(NetworkPolicy)┤                                                      │ touched ids / relisted
//!  watcher(ClusterNetworkPolicy), watcher(Node) ┘
//!                                                                               ▼
//!        leader && every kind listed?  ── full resync (relist datastore) ─► plan ─► Writer ─► datastore
//!                                      └─ else the touched objects only ─┘
//! ```
//!
//! ClusterNetworkPolicy and Node have watchers too. ClusterNetworkPolicy is a CRD the
//! cluster may lack: a 404 on its list or watch is said once (a warning and the
//! `palisade_controller_crd_missing` metric), the kind counts as listed and empty, and the
//! controller goes on without it.
//!
//! Only the leader writes, and nothing is written before every kind has listed once, so a
//! controller that starts never deletes what it simply has not seen yet. Failures keep the
//! touched objects pending and retry with backoff: the loop is level-triggered.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use palisade_store::Datastore;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::cache::{Cache, Change, Effect};
use crate::crd::{RawClusterNetworkPolicy, CRD_NAME};
use crate::metrics::Metrics;
use crate::objects::{self, Converted, Kind, ObjectId};
use crate::writer::{Outcome, Writer};

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// A Kubernetes label selector on namespaces (`env=prod,team in (a,b)`): only selected
    /// namespaces, their pods and their policies are written.
    pub namespace_selector: Option<String>,
    /// A full resync of the datastore this often (repairs keys someone else deleted).
    pub resync_interval: Duration,
    /// Datastore operations per transaction.
    pub max_batch: usize,
    /// Changes taken off the channel before one reconcile round.
    pub max_drain: usize,
    /// Report invalid objects as Kubernetes Events (type Warning, reason `InvalidObject`) on
    /// the object itself, with this reporting instance name (the pod name). Only the leader
    /// reports.
    pub events_instance: Option<String>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            namespace_selector: None,
            resync_interval: Duration::from_secs(300),
            max_batch: 100,
            max_drain: 10_000,
            events_instance: None,
        }
    }
}

/// A change and when the controller received it (for the lag metric).
pub type Received = (Change, Instant);

/// An invalid object (its reference) and why, for a Kubernetes Event.
pub type Notice = (ObjectReference, String);

/// Starts one watcher per kind, each sending converted changes into `tx`.
pub fn spawn_watchers(
    client: Client,
    config: &ControllerConfig,
    tx: mpsc::Sender<Received>,
    notices: mpsc::UnboundedSender<Notice>,
    metrics: Arc<Metrics>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut ns_cfg = watcher::Config::default();
    if let Some(sel) = &config.namespace_selector {
        ns_cfg = ns_cfg.labels(sel);
    }
    // Finished pods are never endpoints; the API server can leave them out (a pod that
    // finishes then arrives as a deletion). `objects::pod` checks the phase anyway.
    let pod_cfg = watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed");
    vec![
        tokio::spawn(watch_kind(
            Api::<Namespace>::all(client.clone()),
            ns_cfg,
            Kind::Namespace,
            objects::namespace,
            tx.clone(),
            notices.clone(),
            metrics.clone(),
        )),
        tokio::spawn(watch_kind(
            Api::<Pod>::all(client.clone()),
            pod_cfg,
            Kind::Pod,
            objects::pod,
            tx.clone(),
            notices.clone(),
            metrics.clone(),
        )),
        tokio::spawn(watch_kind(
            Api::<NetworkPolicy>::all(client.clone()),
            watcher::Config::default(),
            Kind::NetworkPolicy,
            objects::network_policy,
            tx.clone(),
            notices.clone(),
            metrics.clone(),
        )),
        tokio::spawn(watch_kind(
            Api::<Node>::all(client.clone()),
            watcher::Config::default(),
            Kind::Node,
            objects::node,
            tx.clone(),
            notices.clone(),
            metrics.clone(),
        )),
        tokio::spawn(watch_kind(
            Api::<RawClusterNetworkPolicy>::all(client),
            watcher::Config::default(),
            Kind::ClusterNetworkPolicy,
            objects::cluster_network_policy,
            tx,
            notices,
            metrics,
        )),
    ]
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Watches one kind until the channel closes. Watch errors are counted and logged; the
/// watcher retries with backoff and relists when its resource version expired (410 Gone).
async fn watch_kind<K>(
    api: Api<K>,
    cfg: watcher::Config,
    kind: Kind,
    convert: fn(&K) -> Converted,
    tx: mpsc::Sender<Received>,
    notices: mpsc::UnboundedSender<Notice>,
    metrics: Arc<Metrics>,
) where
    K: Resource<DynamicType = ()> + ResourceExt + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let trim = |mut obj: K| {
        // Drop the bulky fields before the JSON round trip.
        obj.managed_fields_mut().clear();
        obj.annotations_mut().remove(LAST_APPLIED);
        let id = objects::id_of(kind, &obj);
        let converted = convert(&obj);
        if let Converted::Invalid(why) = &converted {
            let _ = notices.send((obj.object_ref(&()), why.clone()));
        }
        (id, converted)
    };
    let mut stream = watcher(api, cfg).default_backoff().boxed();
    while let Some(item) = stream.next().await {
        let change = match item {
            Ok(watcher::Event::Init) => Change::Init(kind),
            Ok(watcher::Event::InitApply(obj)) => {
                let (id, c) = trim(obj);
                Change::InitApply(id, c)
            }
            Ok(watcher::Event::InitDone) => Change::InitDone(kind),
            Ok(watcher::Event::Apply(obj)) => {
                let (id, c) = trim(obj);
                Change::Apply(id, c)
            }
            Ok(watcher::Event::Delete(obj)) => Change::Delete(objects::id_of(kind, &obj)),
            Err(e) if kind == Kind::ClusterNetworkPolicy && resource_missing(&e) => {
                crd_missing(kind, &metrics);
                // Nothing of this kind: the datastore gets no ClusterNetworkPolicies, and
                // the other kinds go on.
                for change in [Change::Init(kind), Change::InitDone(kind)] {
                    metrics.event(kind, change.verb());
                    if tx.send((change, Instant::now())).await.is_err() {
                        return;
                    }
                }
                return;
            }
            Err(e) => {
                warn!(kind = %kind, error = %e, "watch error; the watcher retries");
                metrics.watch_error(kind);
                continue;
            }
        };
        metrics.event(kind, change.verb());
        if tx.send((change, Instant::now())).await.is_err() {
            return;
        }
    }
}

/// Whether a watch error means the API server does not serve the resource at all (its CRD is
/// not installed): a 404 on the list or the watch.
pub fn resource_missing(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 404,
        watcher::Error::WatchError(s) => s.code == 404,
        _ => false,
    }
}

/// Says once that an optional CRD is missing, and what to do about it.
fn crd_missing(kind: Kind, metrics: &Metrics) {
    warn!(
        kind = %kind,
        crd = CRD_NAME,
        "the cluster has no {CRD_NAME} CRD: ClusterNetworkPolicies are not enforced; \
         install it with `kubectl apply -f deploy/05-crd-clusternetworkpolicy.yaml` and \
         restart the controller"
    );
    metrics
        .crd_missing
        .get_or_create(&crate::metrics::CrdLabels {
            crd: CRD_NAME.to_string(),
        })
        .set(1);
}

/// The reconcile loop's state.
pub struct Reconciler {
    cache: Cache,
    writer: Writer,
    metrics: Arc<Metrics>,
    /// Objects to reconcile, with the time the oldest pending change arrived.
    dirty: HashMap<ObjectId, Instant>,
    need_full: bool,
    started: Instant,
    synced_once: bool,
    backoff: Duration,
    retry_at: Option<Instant>,
}

impl Reconciler {
    pub fn new(
        store: Arc<dyn Datastore>,
        metrics: Arc<Metrics>,
        config: &ControllerConfig,
    ) -> Self {
        let mut writer = Writer::new(store, metrics.clone());
        writer.max_batch = config.max_batch;
        Reconciler {
            cache: Cache::new(),
            writer,
            metrics,
            dirty: HashMap::new(),
            need_full: true,
            started: Instant::now(),
            synced_once: false,
            backoff: Duration::ZERO,
            retry_at: None,
        }
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Whether the first complete reconcile has been done.
    pub fn synced_once(&self) -> bool {
        self.synced_once
    }

    /// Takes one change into the cache and notes what needs reconciling.
    pub fn take(&mut self, (change, at): Received) {
        match &change {
            Change::InitApply(id, c) | Change::Apply(id, c) => self.note_validity(id, c),
            Change::Delete(id) => self.metrics.set_invalid(id, false),
            _ => {}
        }
        match self.cache.apply(change) {
            Effect::Nothing => {}
            Effect::Touched(ids) => {
                for id in ids {
                    self.dirty.entry(id).or_insert(at);
                }
            }
            Effect::Relisted { kind, dropped } => {
                if !dropped.is_empty() {
                    info!(kind = %kind, gone = dropped.len(), "relist: objects deleted while unwatched");
                }
                for id in &dropped {
                    self.metrics.set_invalid(id, false);
                }
                self.need_full = true;
            }
        }
    }

    fn note_validity(&self, id: &ObjectId, c: &Converted) {
        match c {
            Converted::Invalid(reason) => {
                warn!(object = %id, reason = %reason, "invalid object skipped (and not stored)");
                self.metrics.set_invalid(id, true);
            }
            _ => self.metrics.set_invalid(id, false),
        }
    }

    /// Asks for a full resync on the next round.
    pub fn request_full(&mut self) {
        self.need_full = true;
    }

    /// When the loop should come back for a retry, if one is pending.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Writes what is pending, if this replica may write. Returns what was written.
    pub async fn round(&mut self, leading: bool) -> Option<Outcome> {
        if !leading || !self.cache.synced() {
            return None;
        }
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return None;
        }
        if self.need_full {
            match self.writer.full(&self.cache).await {
                Ok(out) => {
                    self.need_full = out.resync;
                    self.dirty.clear();
                    self.requeue(&out);
                    self.succeeded();
                    if !self.synced_once {
                        self.synced_once = true;
                        let secs = self.started.elapsed().as_secs_f64();
                        self.metrics.initial_sync_seconds.set(secs);
                        info!(seconds = secs, writes = out.writes, "initial sync done");
                    }
                    self.metrics.set_ready(true);
                    Some(out)
                }
                Err(e) => {
                    warn!(error = %e, "full resync failed; retrying");
                    self.failed();
                    None
                }
            }
        } else if !self.dirty.is_empty() {
            let pending = std::mem::take(&mut self.dirty);
            match self.writer.partial(&self.cache, pending.keys()).await {
                Ok(out) => {
                    let now = Instant::now();
                    for at in pending.values() {
                        self.metrics
                            .lag
                            .observe(now.saturating_duration_since(*at).as_secs_f64());
                    }
                    self.need_full |= out.resync;
                    for id in &out.retry {
                        if let Some(at) = pending.get(id) {
                            self.dirty.insert(id.clone(), *at);
                        }
                    }
                    self.succeeded();
                    Some(out)
                }
                Err(e) => {
                    warn!(error = %e, pending = pending.len(), "datastore write failed; retrying");
                    for (id, at) in pending {
                        self.dirty.entry(id).or_insert(at);
                    }
                    self.failed();
                    None
                }
            }
        } else {
            None
        }
    }

    fn requeue(&mut self, out: &Outcome) {
        let now = Instant::now();
        for id in &out.retry {
            self.dirty.entry(id.clone()).or_insert(now);
        }
    }

    fn succeeded(&mut self) {
        self.backoff = Duration::ZERO;
        self.retry_at = None;
    }

    fn failed(&mut self) {
        self.backoff =
            (self.backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(10));
        self.retry_at = Some(Instant::now() + self.backoff);
    }

    /// The retry time has come: the next round may write.
    pub fn retry_due(&mut self) {
        self.retry_at = None;
    }

    /// Comes back to pending work after `delay` even if nothing else happens.
    pub fn defer(&mut self, delay: Duration) {
        self.retry_at = Some(Instant::now() + delay);
    }

    /// Whether there is work a leader would do now.
    pub fn pending(&self) -> bool {
        self.need_full || !self.dirty.is_empty()
    }
}

/// Publishes a Warning Event on an invalid object.
async fn report_invalid(recorder: Recorder, reference: ObjectReference, why: String) {
    // The Events API limits the note to 1 kB.
    let mut note = format!("not enforced by Palisade: {why}");
    if note.len() > 1000 {
        let mut end = 1000;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
    }
    let event = Event {
        type_: EventType::Warning,
        reason: "InvalidObject".into(),
        note: Some(note),
        action: "Convert".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &reference).await {
        warn!(error = %e, object = ?reference.name, "cannot publish an event");
    }
}

/// Runs the controller until `shutdown` turns true (or every watcher stops).
pub async fn run(
    client: Client,
    store: Arc<dyn Datastore>,
    config: ControllerConfig,
    metrics: Arc<Metrics>,
    mut leader: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (tx, mut rx) = mpsc::channel::<Received>(config.max_drain.max(1));
    let (notice_tx, mut notices) = mpsc::unbounded_channel::<Notice>();
    let recorder = config.events_instance.as_ref().map(|instance| {
        Recorder::new(
            client.clone(),
            Reporter {
                controller: "palisade-controller".into(),
                instance: Some(instance.clone()),
            },
        )
    });
    let watchers = spawn_watchers(client, &config, tx, notice_tx, metrics.clone());
    let mut rec = Reconciler::new(store, metrics.clone(), &config);
    let mut resync = tokio::time::interval_at(
        Instant::now() + config.resync_interval,
        config.resync_interval,
    );
    let mut leader_alive = true;
    let mut leading = *leader.borrow_and_update();
    metrics.leader.set(i64::from(leading));
    loop {
        let retry_at = rec.retry_at();
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break,
            changed = leader.changed(), if leader_alive => {
                match changed {
                    Ok(()) => {
                        let now = *leader.borrow_and_update();
                        if now && !leading {
                            rec.request_full();
                        }
                        leading = now;
                        metrics.leader.set(i64::from(leading));
                    }
                    Err(_) => leader_alive = false,
                }
            }
            received = rx.recv() => {
                let Some(first) = received else { break };
                rec.take(first);
                for _ in 1..config.max_drain {
                    match rx.try_recv() {
                        Ok(more) => rec.take(more),
                        Err(_) => break,
                    }
                }
            }
            _ = resync.tick() => rec.request_full(),
            Some((reference, why)) = notices.recv() => {
                if let (true, Some(recorder)) = (leading, recorder.clone()) {
                    tokio::spawn(report_invalid(recorder, reference, why));
                }
            }
            _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                rec.retry_due();
            }
        }
        if !rec.cache().synced() {
            metrics.set_ready(false);
        } else if !leading {
            // A standby is ready once its caches are warm: it can take over at once.
            metrics.set_ready(true);
        }
        // A few rounds back to back (retries after stale preconditions), then back to the
        // channel; leftover work comes back through the retry timer.
        for _ in 0..3 {
            if !(rec.pending() && leading) || rec.round(leading).await.is_none() || !rx.is_empty() {
                break;
            }
        }
        if leading && rec.pending() && rec.retry_at().is_none() {
            rec.defer(Duration::from_millis(50));
        }
    }
    for w in watchers {
        w.abort();
    }
}
