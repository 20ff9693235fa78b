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

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use palisade_calc::{CalcStats, Calculator, Update};
use palisade_dataplane::{ApplyReport, CommandRunner, Dataplane, DataplaneError};
use palisade_model::{EndpointId, PolicyId};
use palisade_store::keys::Key;
use palisade_store::{keys, Datastore, Revision, Syncer};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::batch::{Batcher, Decision};
use crate::bindings::Bindings;
use crate::config::{AgentConfig, ConfigError, EndpointMatch};
use crate::drops::DropIndex;
use crate::metrics::ErrorKind;
use crate::revoke::{Revocation, RevocationRecord, Revoker};
use crate::shared::{ApplyTiming, Shared};
use crate::status::{self, EndpointPolicies, NodeStatus};
use crate::translate::{Translated, Translator};
use palisade_dataplane::conntrack::Conntrack;

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
    /// The programmed namespace's conntrack table, with `--established revoke`.
    conntrack: Option<Arc<dyn Conntrack>>,
    /// The bridge table's script in force ([`crate::bridge_guard`]), both dataplanes.
    bridge_table: Arc<std::sync::Mutex<Option<String>>>,
    /// The local endpoints' addresses the bindings were last learned for.
    learned_for: Arc<std::sync::Mutex<BTreeMap<EndpointId, Vec<std::net::IpAddr>>>>,
}

/// What a finished blocking task hands back.
enum Done {
    Apply {
        calc: Box<Calculator>,
        result: Result<ApplyReport, DataplaneError>,
        stats: CalcStats,
        /// `None`: the batch changed no local endpoint or policy, the summary stands.
        summary: Option<Vec<EndpointPolicies>>,
        /// `None` with `summary`: the drop sites stand.
        drop_index: Option<DropIndex>,
        /// With `--established revoke`, after a change: the sweep of conntrack.
        revocation: Option<Box<Result<Revocation, String>>>,
        /// The revision of every policy active on this node, as programmed.
        policies: BTreeMap<String, Revision>,
        elapsed: Duration,
        calc_time: Duration,
        revision: Revision,
    },
    Resync(
        Box<Calculator>,
        Result<ApplyReport, DataplaneError>,
        /// With `--established revoke`: a sweep at every resync too, which catches a flow a
        /// failed sweep left behind.
        Option<Box<Result<Revocation, String>>>,
    ),
}

impl Agent {
    /// Checks the configuration; the dataplane is used only once the agent runs.
    pub fn new(
        config: AgentConfig,
        store: Arc<dyn Datastore>,
        dataplane: Box<dyn Dataplane>,
    ) -> Result<Agent, AgentError> {
        config.validate()?;
        crate::alloc::limit_arenas();
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
            conntrack: None,
            bridge_table: Arc::default(),
            learned_for: Arc::default(),
        })
    }

    /// Revokes established connections the new rules deny (`--established revoke`) in this
    /// conntrack table, which must be the programmed namespace's.
    pub fn with_conntrack(mut self, table: Arc<dyn Conntrack>) -> Self {
        self.conntrack = Some(table);
        self
    }

    /// Learns where local pods' addresses may enter (anti-spoofing) and checks the bridge
    /// sysctls through `runner`, which must run commands in the namespace the dataplane
    /// programs.
    pub fn with_kernel(mut self, runner: Arc<dyn CommandRunner>) -> Self {
        self.shared.set_kernel(Arc::clone(&runner));
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
            if let (Some(_), Some(runner)) = (&self.conntrack, &self.kernel) {
                let runner = Arc::clone(runner);
                let strict = tokio::task::spawn_blocking(move || {
                    crate::sysctl::strict_tcp_pickup(runner.as_ref())
                })
                .await
                .map_err(|e| AgentError::TaskFailed(e.to_string()))?;
                match strict {
                    Ok(true) => tracing::info!(sysctl = crate::sysctl::TCP_LOOSE, "set to 0 so that revoked TCP connections cannot be picked up again in mid-stream"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "revoking established connections"),
                }
            }
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
    /// The datastore revision of every policy received (for the realization status).
    policy_revisions: HashMap<PolicyId, Revision>,
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
            policy_revisions: HashMap::new(),
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
            self.note_policy_revision(&ev);
            match self.translator.translate(ev) {
                Translated::Update(u) => {
                    note_addresses(shared, &u);
                    self.queue.push(u);
                    self.batcher.changed();
                    self.seen(revision);
                }
                Translated::Ignore => {}
                Translated::Invalid { update, key, error } => {
                    tracing::warn!(%key, %error, "undecodable object in the datastore; treated as deleted");
                    shared.metrics.error(ErrorKind::InvalidObject);
                    if let Some(u) = update {
                        note_addresses(shared, &u);
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

    /// Remembers at which revision each policy was received (forgets deleted ones).
    fn note_policy_revision(&mut self, ev: &palisade_store::SyncEvent) {
        use palisade_store::SyncEvent;
        match ev {
            SyncEvent::Update {
                value: Some(record),
                revision,
                ..
            } => {
                if let Some(p) = record.object.as_policy() {
                    self.policy_revisions.insert(p.id.clone(), *revision);
                }
            }
            SyncEvent::Update {
                key, value: None, ..
            }
            | SyncEvent::Invalid { key, .. } => {
                if let Ok(Key::Policy {
                    tier,
                    namespace,
                    name,
                }) = Key::parse(key)
                {
                    self.policy_revisions.remove(&PolicyId {
                        tier,
                        namespace,
                        name,
                    });
                }
            }
            _ => {}
        }
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
        let policy_revisions = self.policy_revisions.clone();
        let dataplane = Arc::clone(&self.agent.shared.dataplane);
        // Without a change to the desired state the dataplane has nothing to do, unless the
        // last apply failed or this is the first apply after (re)gaining sync.
        let p = self.agent.shared.progress();
        let force = std::mem::take(&mut self.force_next) || !p.programmed || !p.last_ok;
        let log_drops = self.agent.config.render.drop_log_group.is_some();
        let learner = self.learner();
        let revoker = self.revoker();
        self.running = Some(tokio::task::spawn_blocking(move || {
            let t = std::time::Instant::now();
            let deltas = calc.apply_all(updates);
            let calc_time = t.elapsed();
            let endpoints_changed = force || deltas.iter().any(|d| !d.is_set_change());
            let mut dp = dataplane.lock().unwrap_or_else(|e| e.into_inner());
            // New bindings are written with the batch (patched like any set member change).
            let rebound = endpoints_changed && learner.learn(calc.state(), dp.as_mut(), false);
            let result = if deltas.is_empty() && !force && !rebound {
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
            let drop_index = (endpoints_changed && log_drops).then(|| DropIndex::of(calc.state()));
            // A change can only deny more where the desired state changed.
            let changed = force || !deltas.is_empty();
            let revocation = revoker
                .filter(|_| changed)
                .and_then(|r| r.after(calc.state(), &result));
            let policies = status::programmed(calc.state(), &policy_revisions);
            let elapsed = t.elapsed();
            if force {
                // A full render (and, the first time, the initial list) has just freed tens
                // of MiB: give them back (after the timing; the next apply waits anyway).
                crate::alloc::release_free_memory();
            }
            Done::Apply {
                calc,
                result,
                stats,
                summary,
                drop_index,
                revocation,
                policies,
                elapsed,
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
        let revoker = self.revoker();
        self.running = Some(tokio::task::spawn_blocking(move || {
            let mut dp = dataplane.lock().unwrap_or_else(|e| e.into_inner());
            learner.learn(calc.state(), dp.as_mut(), true);
            let result = dp.apply_state(calc.state()).and_then(|rebuilt| {
                if !rebuilt.wrote_nothing() {
                    tracing::warn!(chains = ?rebuilt.chains_rewritten, sets = ?rebuilt.sets_updated, "the full render at resync differed from the incremental program");
                }
                dp.resync()
            });
            drop(dp);
            let revocation = revoker.and_then(|r| r.after(calc.state(), &result));
            crate::alloc::release_free_memory();
            Done::Resync(calc, result, revocation)
        }));
    }

    fn learner(&self) -> Learner {
        Learner {
            runner: self.agent.kernel.clone(),
            bindings: Arc::clone(&self.agent.bindings),
            families: (self.agent.config.render.ipv4, self.agent.config.render.ipv6),
            bridge_table: Some(Arc::clone(&self.agent.bridge_table)),
            addresses: Arc::clone(&self.agent.learned_for),
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
                drop_index,
                revocation,
                policies,
                elapsed,
                calc_time,
                revision,
            } => {
                if let Some(r) = revocation {
                    self.revoked(*r);
                }
                self.calc = Some(calc);
                m.apply_duration.observe(elapsed.as_secs_f64());
                match result {
                    Ok(report) => {
                        if report.wrote_nothing() {
                            // Nothing changed in the kernel: the next change need not wait.
                            self.batcher.succeeded_without_writing();
                        } else {
                            self.batcher.succeeded();
                        }
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
                            p.policies = policies;
                        });
                        if let Some(index) = drop_index {
                            shared.drops.set_index(index);
                        }
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
            Done::Resync(calc, result, revocation) => {
                self.calc = Some(calc);
                if let Some(r) = revocation {
                    self.revoked(*r);
                }
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
            policies: p.policies,
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

/// Keeps the address book of `/drops` current (every pod, local or remote).
fn note_addresses(shared: &Shared, update: &Update) {
    match update {
        Update::EndpointUpsert(ep) => shared.drops.endpoint_upsert(ep),
        Update::EndpointRemove(id) => shared.drops.endpoint_remove(id),
        _ => {}
    }
}

/// Learns the bindings of the local pods' addresses in a blocking task.
struct Learner {
    runner: Option<Arc<dyn CommandRunner>>,
    bindings: Arc<std::sync::Mutex<Bindings>>,
    families: (bool, bool),
    bridge_table: Option<Arc<std::sync::Mutex<Option<String>>>>,
    /// The local endpoints' addresses at the last pass.
    addresses: Arc<std::sync::Mutex<BTreeMap<EndpointId, Vec<std::net::IpAddr>>>>,
}

impl Learner {
    /// Reads the kernel and hands the dataplane the bindings of `state`'s endpoints; true
    /// when they changed (the next apply must then render everything).
    /// `always`: also when the local endpoints' addresses are what they were at the last
    /// pass (resyncs: an interface may have moved); otherwise only when they changed.
    fn learn(
        &self,
        state: &palisade_calc::DesiredState,
        dp: &mut dyn Dataplane,
        always: bool,
    ) -> bool {
        let Some(runner) = &self.runner else {
            return false;
        };
        let endpoints: BTreeMap<EndpointId, Vec<std::net::IpAddr>> = state
            .endpoints
            .values()
            .map(|e| (e.id.clone(), e.ips.clone()))
            .collect();
        {
            let mut seen = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
            if !always && *seen == endpoints {
                return false;
            }
            *seen = endpoints.clone();
        }
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

impl Loop<'_> {
    /// With `--established revoke`: what a sweep needs, to take into a blocking task.
    fn revoker(&self) -> Option<Revoker> {
        let table = self.agent.conntrack.clone()?;
        Some(Revoker::new(table, self.agent.config.render.clone()))
    }

    /// Counts a conntrack sweep and reports its revocations in the drop stream.
    fn revoked(&self, r: Result<Revocation, String>) {
        let shared = &self.agent.shared;
        match r {
            Ok(r) => {
                shared
                    .metrics
                    .conntrack_checked
                    .inc_by(r.report.checked as u64);
                shared
                    .metrics
                    .conntrack_revoked
                    .inc_by(r.report.removed as u64);
                if r.report.removed > 0 {
                    tracing::info!(
                        checked = r.report.checked,
                        removed = r.report.removed,
                        "revoked established connections the new rules deny"
                    );
                    let time = crate::drops::now_rfc3339();
                    let record = shared.drops.with_book(|book| {
                        RevocationRecord::of(&r, &self.agent.config.node, time, |ip| book.name(ip))
                    });
                    shared.drops.push_line(&record);
                }
            }
            Err(e) => {
                shared.metrics.error(ErrorKind::Conntrack);
                tracing::warn!(error = %e, "cannot revoke established connections; they go on");
            }
        }
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
