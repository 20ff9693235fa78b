//! The agent loop: the place where the pipeline is wired.
//!
//! ```text
//!  Datastore ─► Syncer ─► SyncEvent ─► Translator ─► queue of calc::Update ─┐
//!              (list, InSync, watch;                                        │ Batcher says when:
//!               relists after outages)                                      ▼ not before InSync,
//!                                            blocking task: Calculator::apply_all ─► DesiredState
//!                                                           Dataplane::apply_state (render, diff
//!                                                           against the kernel, one write)
//!                                                                 │
//!            Shared (metrics, readiness, summary) ◄───────────────┤ every `resync_interval`:
//!            status writer ─► /palisade/v1/status/<node>  ◄───────┘ Dataplane::resync (drift)
//! ```
//!
//! One blocking task at a time (an apply or a resync) owns the calculator and the dataplane;
//! events that arrive meanwhile wait in the queue and go into the next apply. When the
//! datastore goes away the syncer says `OutOfSync` and nothing is applied until it is back and
//! in sync again: the rules last programmed stay in force (fail static). On start the
//! dataplane's reconciler reads our objects back from the kernel and writes only differences,
//! so an agent restart adopts the rules in place without a gap.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use palisade_calc::{CalcStats, Calculator, Update};
use palisade_dataplane::{ApplyReport, CommandRunner, Dataplane, DataplaneError};
use palisade_store::{keys, Datastore, Revision, Syncer};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::batch::{Batcher, Decision};
use crate::bindings::Bindings;
use crate::config::{AgentConfig, ConfigError, EndpointMatch};
use crate::metrics::ErrorKind;
use crate::shared::{ApplyTiming, Shared};
use crate::status::{self, EndpointPolicies, NodeStatus};
use crate::translate::{Translated, Translator};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid agent configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("the datastore syncer stopped")]
    SyncerStopped,
    #[error("the apply task failed: {0}")]
    TaskFailed(String),
    #[error("cannot serve metrics on {addr}: {source}")]
    Server {
        addr: String,
        source: std::io::Error,
    },
}

/// One node's agent; see the module docs. Build it, take [`Agent::shared`] for the HTTP
/// server and tests, then [`Agent::run`] it.
pub struct Agent {
    config: AgentConfig,
    store: Arc<dyn Datastore>,
    shared: Arc<Shared>,
    metrics_addr: Option<String>,
    sync_backoff: (Duration, Duration),
    /// Runs commands in the programmed namespace, to learn the pods' interfaces
    /// (anti-spoofing, see [`crate::bindings`]) and check the bridge sysctls; `None`: neither
    /// (fake dataplanes).
    kernel: Option<Arc<dyn CommandRunner>>,
    /// The last learned bindings.
    bindings: Arc<std::sync::Mutex<Bindings>>,
    /// The bridge table's script in force ([`crate::bridge_guard`]), both dataplanes.
    bridge_table: Arc<std::sync::Mutex<Option<String>>>,
}

/// What a finished blocking task hands back.
enum Done {
    Apply {
        calc: Box<Calculator>,
        result: Result<ApplyReport, DataplaneError>,
        stats: CalcStats,
        /// `None`: the batch changed no local endpoint or policy, the summary stands.
        summary: Option<Vec<EndpointPolicies>>,
        elapsed: Duration,
        calc_time: Duration,
        revision: Revision,
    },
    Resync(Box<Calculator>, Result<ApplyReport, DataplaneError>),
}

impl Agent {
    /// Checks the configuration; the dataplane is used only once the agent runs.
    pub fn new(
        config: AgentConfig,
        store: Arc<dyn Datastore>,
        dataplane: Box<dyn Dataplane>,
    ) -> Result<Agent, AgentError> {
        config.validate()?;
        let mut dataplane = dataplane;
        dataplane.set_incremental(config.incremental);
        let shared = Arc::new(Shared::new(
            config.node.clone(),
            config.dataplane,
            Arc::new(std::sync::Mutex::new(dataplane)),
        ));
        Ok(Agent {
            metrics_addr: config.metrics_addr.map(|a| a.to_string()),
            config,
            store,
            shared,
            sync_backoff: (Duration::from_millis(100), Duration::from_secs(5)),
            kernel: None,
            bindings: Arc::default(),
            bridge_table: Arc::default(),
        })
    }

    /// Learns where local pods' addresses may enter (anti-spoofing) and checks the bridge
    /// sysctls through `runner`, which must run commands in the namespace the dataplane
    /// programs.
    pub fn with_kernel(mut self, runner: Arc<dyn CommandRunner>) -> Self {
        self.kernel = Some(runner);
        self
    }

    /// The address written into the status for `palisade counters` (when the server was
    /// bound to port 0, the port it got).
    pub fn with_metrics_addr(mut self, addr: impl Into<String>) -> Self {
        self.metrics_addr = Some(addr.into());
        self
    }

    /// How fast the syncer retries an unreachable datastore.
    pub fn with_sync_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.sync_backoff = (initial, max);
        self
    }

    pub fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// Runs until `shutdown` completes (then waits for a running apply to finish).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
        if let Some(runner) = &self.kernel {
            let runner = Arc::clone(runner);
            let set = self.config.set_bridge_sysctls;
            let fams = (self.config.render.ipv4, self.config.render.ipv6);
            let checked = tokio::task::spawn_blocking(move || {
                crate::sysctl::ensure_bridge_sysctls(runner.as_ref(), set, fams)
            })
            .await
            .map_err(|e| AgentError::TaskFailed(e.to_string()))?;
            let blocker = match checked {
                Ok(changed) => {
                    for name in changed {
                        tracing::info!(sysctl = %name, "set to 1 so that bridged pod traffic meets the rules");
                    }
                    None
                }
                Err(why) => {
                    tracing::warn!(%why, "not ready");
                    Some(why)
                }
            };
            self.shared.update(|p| p.blocker = blocker);
        }
        let (status_tx, status_rx) = watch::channel(None::<NodeStatus>);
        let writer = tokio::spawn(write_status(
            Arc::clone(&self.store),
            status_rx,
            self.config.resync_interval,
            Arc::clone(&self.shared),
        ));
        let mut lp = Loop::new(&self, status_tx);
        let result = lp.run(shutdown).await;
        if let Some(task) = lp.running.take() {
            let _ = task.await;
        }
        writer.abort();
        tracing::info!(node = %self.config.node, "agent stopped; the rules in force stay");
        result
    }
}

struct Loop<'a> {
    agent: &'a Agent,
    sync_prefix: &'static str,
    /// `None` while an apply task has it.
    calc: Option<Box<Calculator>>,
    queue: Vec<Update>,
    translator: Translator,
    batcher: Batcher,
    /// Highest revision of a relevant event or sync marker received.
    seen_revision: Revision,
    running: Option<JoinHandle<Done>>,
    /// The next apply goes to the dataplane even if the calculation changed nothing.
    force_next: bool,
    resync_due: Instant,
    status_tx: watch::Sender<Option<NodeStatus>>,
}

impl<'a> Loop<'a> {
    fn new(agent: &'a Agent, status_tx: watch::Sender<Option<NodeStatus>>) -> Loop<'a> {
        Loop {
            sync_prefix: keys::ROOT,
            calc: Some(Box::new(Calculator::new(agent.config.calc_config()))),
            queue: Vec::new(),
            translator: Translator::new(),
            batcher: Batcher::new(
                agent.config.batch_interval,
                agent.config.resync_interval.min(Duration::from_secs(10)),
            ),
            seen_revision: 0,
            running: None,
            force_next: true,
            resync_due: Instant::now() + agent.config.resync_interval,
            status_tx,
            agent,
        }
    }

    async fn run(&mut self, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
        let (initial, max) = self.agent.sync_backoff;
        let mut sync = Syncer::new(Arc::clone(&self.agent.store), self.sync_prefix)
            .with_backoff(initial, max)
            .start();
        tokio::pin!(shutdown);
        tracing::info!(node = %self.agent.config.node, dataplane = %self.agent.config.dataplane, "agent started; waiting for the datastore to be in sync");
        loop {
            let mut wake = self.resync_due;
            if self.running.is_none() {
                let now = Instant::now();
                match self.batcher.poll(now.into_std()) {
                    Decision::ApplyNow => {
                        self.start_apply(now);
                        continue;
                    }
                    Decision::WaitUntil(t) => wake = wake.min(Instant::from_std(t)),
                    Decision::Idle => {}
                }
                if now >= self.resync_due {
                    if self.agent.shared.progress().programmed {
                        self.start_resync();
                        continue;
                    }
                    self.resync_due = now + self.agent.config.resync_interval;
                    wake = self.resync_due;
                }
            }
            tokio::select! {
                biased;
                _ = &mut shutdown => return Ok(()),
                done = join(&mut self.running), if self.running.is_some() => {
                    self.running = None;
                    match done {
                        Ok(d) => self.finished(d),
                        Err(e) => {
                            // A panic in the blocking task took the calculator with it.
                            tracing::error!(error = %e, "apply task failed");
                            return Err(AgentError::TaskFailed(e.to_string()));
                        }
                    }
                }
                batch = sync.recv_batch(4096) => match batch {
                    Some(events) => self.events(events),
                    None => return Err(AgentError::SyncerStopped),
                },
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn events(&mut self, events: Vec<palisade_store::SyncEvent>) {
        let shared = &self.agent.shared;
        for ev in events {
            let revision = Translator::revision(&ev);
            match self.translator.translate(ev) {
                Translated::Update(u) => {
                    self.queue.push(u);
                    self.batcher.changed();
                    self.seen(revision);
                }
                Translated::Ignore => {}
                Translated::Invalid { update, key, error } => {
                    tracing::warn!(%key, %error, "undecodable object in the datastore; treated as deleted");
                    shared.metrics.error(ErrorKind::InvalidObject);
                    if let Some(u) = update {
                        self.queue.push(u);
                        self.batcher.changed();
                    }
                    self.seen(revision);
                }
                Translated::InSync(rev) => {
                    tracing::info!(revision = rev, "datastore in sync");
                    self.seen(Some(rev));
                    self.batcher.set_in_sync(true);
                    // Program at least once, even from an empty datastore, and take the
                    // relist's revision as applied: the dataplane writes only differences.
                    self.batcher.changed();
                    self.force_next = true;
                    shared.metrics.in_sync.set(1);
                    // Not ready before the apply that covers this snapshot succeeds: after a
                    // relist the rules in force may predate what it brought.
                    shared.update(|p| {
                        p.datastore_in_sync = true;
                        p.sync_revision = rev;
                    });
                }
                Translated::OutOfSync(reason) => {
                    tracing::warn!(%reason, "datastore unreachable; keeping the rules in force");
                    self.batcher.set_in_sync(false);
                    shared.metrics.in_sync.set(0);
                    shared.metrics.error(ErrorKind::Datastore);
                    shared.update(|p| p.datastore_in_sync = false);
                }
            }
        }
        self.publish();
        shared.update(|p| p.pending = self.batcher.pending());
    }

    fn seen(&mut self, revision: Option<Revision>) {
        if let Some(r) = revision {
            self.seen_revision = self.seen_revision.max(r);
        }
    }

    fn start_apply(&mut self, now: Instant) {
        let Some(mut calc) = self.calc.take() else {
            return;
        };
        self.batcher.start(now.into_std());
        let updates = std::mem::take(&mut self.queue);
        let revision = self.seen_revision;
        let dataplane = Arc::clone(&self.agent.shared.dataplane);
        // Without a change to the desired state the dataplane has nothing to do, unless the
        // last apply failed or this is the first apply after (re)gaining sync.
        let p = self.agent.shared.progress();
        let mut force = std::mem::take(&mut self.force_next) || !p.programmed || !p.last_ok;
        let learner = self.learner();
        self.running = Some(tokio::task::spawn_blocking(move || {
            let t = std::time::Instant::now();
            let deltas = calc.apply_all(updates);
            let calc_time = t.elapsed();
            let endpoints_changed = force || deltas.iter().any(|d| !d.is_set_change());
            let mut dp = dataplane.lock().unwrap_or_else(|e| e.into_inner());
            if endpoints_changed {
                // New bindings take a full render.
                force |= learner.learn(calc.state(), dp.as_mut());
            }
            let result = if deltas.is_empty() && !force {
                Ok(ApplyReport::default())
            } else {
                if force {
                    dp.apply_state(calc.state())
                } else {
                    // Only what the deltas name is rendered again (nftables).
                    dp.apply_deltas(calc.state(), &deltas)
                }
            };
            drop(dp);
            let stats = calc.stats();
            // ~1 ms at 110 pods: not for the batches that only change set members.
            let summary = endpoints_changed.then(|| status::summarize(calc.state()));
            Done::Apply {
                calc,
                result,
                stats,
                summary,
                elapsed: t.elapsed(),
                calc_time,
                revision,
            }
        }));
    }

    /// Renders the whole node again (correcting any drift of the incrementally patched
    /// program: nothing to write when there is none), then re-reads the kernel and repairs it.
    fn start_resync(&mut self) {
        let Some(calc) = self.calc.take() else {
            return;
        };
        let dataplane = Arc::clone(&self.agent.shared.dataplane);
        let learner = self.learner();
        self.running = Some(tokio::task::spawn_blocking(move || {
            let mut dp = dataplane.lock().unwrap_or_else(|e| e.into_inner());
            learner.learn(calc.state(), dp.as_mut());
            let result = dp.apply_state(calc.state()).and_then(|rebuilt| {
                if !rebuilt.wrote_nothing() {
                    tracing::warn!(chains = ?rebuilt.chains_rewritten, sets = ?rebuilt.sets_updated, "the full render at resync differed from the incremental program");
                }
                dp.resync()
            });
            Done::Resync(calc, result)
        }));
    }

    fn learner(&self) -> Learner {
        Learner {
            runner: self.agent.kernel.clone(),
            bindings: Arc::clone(&self.agent.bindings),
            families: (self.agent.config.render.ipv4, self.agent.config.render.ipv6),
            bridge_table: Some(Arc::clone(&self.agent.bridge_table)),
        }
    }

    fn finished(&mut self, done: Done) {
        let shared = &self.agent.shared;
        let m = &shared.metrics;
        match done {
            Done::Apply {
                calc,
                result,
                stats,
                summary,
                elapsed,
                calc_time,
                revision,
            } => {
                self.calc = Some(calc);
                m.apply_duration.observe(elapsed.as_secs_f64());
                match result {
                    Ok(report) => {
                        self.batcher.succeeded();
                        m.applies.inc();
                        m.set_sizes(&stats);
                        m.applied_revision.set(revision);
                        tracing::debug!(
                            revision,
                            ?elapsed,
                            wrote = !report.wrote_nothing(),
                            "applied"
                        );
                        shared.update(|p| {
                            p.programmed = true;
                            p.last_ok = true;
                            p.last_error = None;
                            p.last_wrote = !report.wrote_nothing();
                            p.last_timing = ApplyTiming {
                                total: elapsed,
                                calc: calc_time,
                                dataplane: report.duration,
                                write: report.write_time(),
                            };
                            p.revision = revision;
                            if let Some(summary) = summary {
                                p.endpoints = summary;
                            }
                        });
                        shared.set_applied(revision);
                    }
                    Err(e) => {
                        self.batcher.failed(std::time::Instant::now());
                        self.force_next = true;
                        m.error(ErrorKind::Apply);
                        tracing::warn!(error = %e, failures = self.batcher.failures(), "apply failed; will retry");
                        shared.update(|p| {
                            p.last_ok = false;
                            p.last_error = Some(e.to_string());
                        });
                    }
                }
            }
            Done::Resync(calc, result) => {
                self.calc = Some(calc);
                self.resync_due = Instant::now() + self.agent.config.resync_interval;
                m.resyncs.inc();
                match result {
                    Ok(report) => {
                        if !report.wrote_nothing() {
                            tracing::info!(chains = ?report.chains_rewritten, sets = ?report.sets_updated, "resync repaired drift");
                        }
                        shared.update(|p| {
                            if !self.batcher.pending() {
                                p.last_ok = true;
                                p.last_error = None;
                            }
                        });
                    }
                    Err(e) => {
                        m.error(ErrorKind::Resync);
                        tracing::warn!(error = %e, "resync failed");
                        shared.update(|p| {
                            p.last_ok = false;
                            p.last_error = Some(format!("resync: {e}"));
                        });
                    }
                }
            }
        }
        shared.update(|p| p.pending = self.batcher.pending());
        self.publish();
    }

    /// Hands the current status to the writer (which writes it if its content changed).
    fn publish(&self) {
        let p = self.agent.shared.progress();
        let s = NodeStatus {
            node: self.agent.config.node.clone(),
            in_sync: p.ready() && !p.pending,
            revision: p.revision,
            last_error: p.last_error.clone(),
            updated: 0,
            metrics_addr: self.agent.metrics_addr.clone(),
            dataplane: self.agent.config.dataplane.to_string(),
            endpoint_match: self.agent.config.render.endpoint_match.to_string(),
            iface_naming: (self.agent.config.render.endpoint_match == EndpointMatch::Interface)
                .then(|| self.agent.config.iface_naming.to_string()),
            not_ready: p.blocker.clone(),
            endpoints: p.endpoints,
        };
        self.status_tx.send_if_modified(|cur| {
            if cur.as_ref().is_some_and(|c| c.same_content(&s)) {
                false
            } else {
                *cur = Some(s);
                true
            }
        });
    }
}

/// Learns the bindings of the local pods' addresses in a blocking task.
struct Learner {
    runner: Option<Arc<dyn CommandRunner>>,
    bindings: Arc<std::sync::Mutex<Bindings>>,
    families: (bool, bool),
    bridge_table: Option<Arc<std::sync::Mutex<Option<String>>>>,
}

impl Learner {
    /// Reads the kernel and hands the dataplane the bindings of `state`'s endpoints; true
    /// when they changed (the next apply must then render everything).
    fn learn(&self, state: &palisade_calc::DesiredState, dp: &mut dyn Dataplane) -> bool {
        let Some(runner) = &self.runner else {
            return false;
        };
        let view = match crate::bindings::read_kernel(
            runner.as_ref(),
            self.families.0,
            self.families.1,
        ) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the pods' interfaces; anti-spoofing bindings unchanged");
                return false;
            }
        };
        let endpoints = state
            .endpoints
            .values()
            .map(|e| (e.id.clone(), e.ips.clone()))
            .collect();
        let mut prev = self.bindings.lock().unwrap_or_else(|e| e.into_inner());
        let (next, ambiguous) = crate::bindings::decide(&view, &endpoints, &prev);
        for ip in ambiguous {
            tracing::warn!(%ip, "no single bridge port holds this pod address: every packet from it is dropped until one does");
        }
        if let Some(table) = &self.bridge_table {
            let mut last = table.lock().unwrap_or_else(|e| e.into_inner());
            match crate::bridge_guard::apply(runner.as_ref(), &next, &last) {
                Ok(now) => *last = now,
                Err(e) => tracing::warn!(error = %e, "cannot write the bridge anti-spoofing table"),
            }
        }
        *prev = next.clone();
        dp.set_source_bindings(next)
    }
}

/// Waits for the running task (never completes when there is none).
async fn join(task: &mut Option<JoinHandle<Done>>) -> Result<Done, tokio::task::JoinError> {
    match task {
        Some(t) => t.await,
        None => std::future::pending().await,
    }
}

/// Writes the latest status whenever it changes, and at least every `heartbeat` (so that
/// its age shows the agent is alive); retries failed writes after a second.
async fn write_status(
    store: Arc<dyn Datastore>,
    mut rx: watch::Receiver<Option<NodeStatus>>,
    heartbeat: Duration,
    shared: Arc<Shared>,
) {
    let retry = Duration::from_secs(1);
    let mut last_ok = false;
    let mut last_write = Instant::now();
    loop {
        let wait = if last_ok { heartbeat } else { retry };
        let changed = tokio::select! {
            r = rx.changed() => {
                if r.is_err() {
                    return; // the loop is gone
                }
                true
            }
            _ = tokio::time::sleep_until(last_write + wait) => false,
        };
        let current = rx.borrow_and_update().clone();
        let Some(mut status) = current else { continue };
        if !changed && last_ok && last_write.elapsed() < heartbeat {
            continue;
        }
        status.updated = status::now_millis();
        last_write = Instant::now();
        let written = match (status.key(), status.encode()) {
            (Ok(key), Ok(value)) => store.put(&key, value).await.map_err(|e| e.to_string()),
            (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
        };
        last_ok = written.is_ok();
        if let Err(e) = written {
            shared.metrics.error(ErrorKind::StatusWrite);
            tracing::warn!(error = %e, "cannot write the agent status");
        }
    }
}

#[cfg(test)]
mod tests {
    use palisade_dataplane::{nft_dataplane, NoopRunner, RecordingSleeper, RetryPolicy};
    use palisade_model::Namespace;
    use palisade_store::{EmbeddedStore, Record, StoredObject, SyncEvent, OWNER_APPLY};

    use super::*;

    fn update(name: &str, revision: Revision) -> SyncEvent {
        let object = StoredObject::Namespace(Namespace::implicit(name));
        SyncEvent::Update {
            key: object.key().unwrap(),
            value: Some(Record::new(OWNER_APPLY, object)),
            revision,
        }
    }

    /// Runs the apply the batcher has pending (without waiting out its interval), to its end.
    async fn apply_now(lp: &mut Loop<'_>) {
        let now = Instant::now();
        assert_ne!(lp.batcher.poll(now.into_std()), Decision::Idle);
        lp.start_apply(now);
        let done = join(&mut lp.running).await.unwrap();
        lp.running = None;
        lp.finished(done);
    }

    /// Ready means the kernel holds (at least) the datastore's last consistent snapshot: not
    /// before the first apply, and not between a relist's `InSync` and the apply of what it
    /// brought (the rules in force then predate it).
    #[tokio::test]
    async fn not_ready_until_the_snapshot_of_the_last_relist_is_applied() {
        let dp = nft_dataplane(
            palisade_render::RenderConfig::default(),
            Arc::new(NoopRunner),
            Arc::new(RecordingSleeper::new()),
            RetryPolicy::none(),
        );
        let config = AgentConfig::new("n1");
        let agent = Agent::new(config, Arc::new(EmbeddedStore::new()), Box::new(dp)).unwrap();
        let shared = agent.shared();
        let (status_tx, _status_rx) = watch::channel(None);
        let mut lp = Loop::new(&agent, status_tx);

        lp.events(vec![update("a", 2), SyncEvent::InSync { revision: 3 }]);
        assert!(!shared.ready(), "in sync, nothing applied yet");
        apply_now(&mut lp).await;
        assert!(shared.ready(), "{:?}", shared.progress().not_ready_reason());

        lp.events(vec![SyncEvent::OutOfSync {
            reason: "gone".into(),
        }]);
        assert!(!shared.ready());
        // The relist after the outage brings a change and says in sync again.
        lp.events(vec![update("b", 7), SyncEvent::InSync { revision: 8 }]);
        let p = shared.progress();
        assert!(p.datastore_in_sync && p.programmed && p.last_ok);
        assert!(!p.ready(), "the relisted change is not applied yet");
        assert!(
            p.not_ready_reason().unwrap().contains("revision 8"),
            "{:?}",
            p.not_ready_reason()
        );
        apply_now(&mut lp).await;
        assert!(shared.ready(), "{:?}", shared.progress().not_ready_reason());
        assert_eq!(shared.progress().revision, 8);
    }
}
