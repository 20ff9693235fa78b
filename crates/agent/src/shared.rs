//! [`Shared`]: what the loop publishes and the HTTP server reads: metrics, readiness, the
//! summary of active policies, and the dataplane itself (for counters).

use std::sync::{Arc, Mutex, MutexGuard};

use palisade_dataplane::Dataplane;

use crate::config::DataplaneKind;
use crate::metrics::Metrics;
use crate::report::CountersReport;
use crate::status::EndpointPolicies;

/// The dataplane, shared between the loop (applies, resyncs) and `/counters`.
pub type SharedDataplane = Arc<Mutex<Box<dyn Dataplane>>>;

/// Where one apply spent its time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyTiming {
    /// The whole apply (calculation, render, reconcile).
    pub total: std::time::Duration,
    /// The calculation (`Calculator::apply_all`).
    pub calc: std::time::Duration,
    /// Reconcile in the dataplane (diff, commands), as it reports.
    pub dataplane: std::time::Duration,
    /// The commands that wrote to the kernel.
    pub write: std::time::Duration,
}

/// Where the agent stands; see [`Shared::progress`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// The datastore copy is in sync.
    pub datastore_in_sync: bool,
    /// At least one apply succeeded.
    pub programmed: bool,
    /// The last apply (or resync) succeeded.
    pub last_ok: bool,
    /// Changes are waiting to be applied.
    pub pending: bool,
    /// Revision of the last successful apply.
    pub revision: i64,
    /// Revision of the datastore's last consistent snapshot (the syncer's last `InSync`):
    /// until an apply at or past it succeeds, the kernel may lack what that (re)list brought.
    pub sync_revision: i64,
    pub last_error: Option<String>,
    /// The last apply wrote to the kernel (it was not already up to date).
    pub last_wrote: bool,
    /// Where the last successful apply spent its time.
    pub last_timing: ApplyTiming,
    pub endpoints: Vec<EndpointPolicies>,
    /// Something outside the datastore keeps the agent from being ready (a bridge sysctl
    /// that is off and that it was told not to set), with what to do.
    pub blocker: Option<String>,
}

impl Progress {
    /// In sync, the snapshot of the last (re)list applied, and the last apply succeeded
    /// (what `/readyz` and the status report).
    pub fn ready(&self) -> bool {
        self.not_ready_reason().is_none()
    }

    /// Why not ready, for `/readyz`.
    pub fn not_ready_reason(&self) -> Option<String> {
        if let Some(b) = &self.blocker {
            Some(b.clone())
        } else if !self.datastore_in_sync {
            Some("datastore not in sync".into())
        } else if !self.programmed && self.last_error.is_none() {
            Some("dataplane not programmed yet".into())
        } else if !self.programmed || !self.last_ok {
            Some(format!(
                "last apply failed: {}",
                self.last_error.as_deref().unwrap_or("unknown error")
            ))
        } else if self.revision < self.sync_revision {
            Some(format!(
                "datastore state at revision {} not applied yet (applied: {})",
                self.sync_revision, self.revision
            ))
        } else {
            None
        }
    }
}

/// State shared between the agent loop and the HTTP server.
pub struct Shared {
    pub node: String,
    pub dataplane_kind: DataplaneKind,
    pub metrics: Metrics,
    pub dataplane: SharedDataplane,
    progress: Mutex<Progress>,
    applied: tokio::sync::watch::Sender<i64>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("node", &self.node)
            .field("dataplane_kind", &self.dataplane_kind)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub fn new(node: String, dataplane_kind: DataplaneKind, dataplane: SharedDataplane) -> Self {
        Shared {
            node,
            dataplane_kind,
            metrics: Metrics::new(),
            dataplane,
            progress: Mutex::new(Progress::default()),
            applied: tokio::sync::watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Progress> {
        // The data stays consistent even if a holder panicked: every update is one assignment.
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn progress(&self) -> Progress {
        self.lock().clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut self.lock());
    }

    /// The revision of the last successful apply, as it changes (for waiting on it).
    pub fn applied(&self) -> tokio::sync::watch::Receiver<i64> {
        self.applied.subscribe()
    }

    pub(crate) fn set_applied(&self, revision: i64) {
        self.applied.send_replace(revision);
    }

    pub fn ready(&self) -> bool {
        self.lock().ready()
    }

    /// Reads the kernel's counters (blocking: runs the dataplane's read commands).
    pub fn counters_blocking(&self) -> Result<CountersReport, String> {
        let counters = {
            let dp = self.dataplane.lock().unwrap_or_else(|e| e.into_inner());
            dp.counters().map_err(|e| e.to_string())?
        };
        let p = self.progress();
        Ok(CountersReport::new(
            &self.node,
            self.dataplane_kind.as_str(),
            p.revision,
            p.endpoints,
            &counters,
        ))
    }
}
