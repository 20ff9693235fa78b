//! The reconciler, shaped like felix's `Table`: it keeps the desired program and a view of
//! what it believes the kernel holds (of its own objects only), writes the difference in one
//! batch, retries with backoff, falls back to rewriting everything after repeated failures,
//! and re-reads the kernel on [`Table::resync`] to repair drift.

use std::sync::Arc;
use std::time::Instant;

use crate::error::DataplaneError;
use crate::exec::Exec;
use crate::report::{ApplyReport, RuleCounter};
use crate::retry::{RetryPolicy, Sleeper};
use crate::runner::CommandRunner;

/// One kernel backend (iptables+ipset, nftables): how to read our objects back and how to
/// write the difference between the desired program and a view of the kernel.
pub trait Backend: Send {
    /// The rendered objects this backend writes.
    type Program: Clone + Send;
    /// Our objects as the kernel holds them.
    type View: Send;

    /// Short name for logs (`iptables`, `nftables`).
    fn name(&self) -> &'static str;
    /// Checks the program before anything is written (`previous`: the program applied last,
    /// whose shared parts need no second check).
    fn validate(program: &Self::Program, previous: &Self::Program) -> Result<(), DataplaneError>;
    /// Checks a program patched in place through [`Table::desired_mut`]; backends whose
    /// patcher checks what it changes check less here.
    fn validate_patched(program: &Self::Program) -> Result<(), DataplaneError> {
        Self::validate(program, program)
    }
    /// Reads our objects (and only ours) back from the kernel.
    fn read(&self, exec: &mut Exec<'_>) -> Result<Self::View, DataplaneError>;
    /// Writes what `program` needs beyond `view` (everything when `full`), filling `report`.
    fn write(
        &self,
        exec: &mut Exec<'_>,
        program: &Self::Program,
        view: &Self::View,
        full: bool,
        report: &mut ApplyReport,
    ) -> Result<(), DataplaneError>;
    /// The view the kernel holds after `program` was written successfully.
    fn project(&self, program: &Self::Program) -> Self::View;
    /// Per-rule counters of our rules, attributed through the program's rule origins.
    fn counters(
        &self,
        exec: &mut Exec<'_>,
        program: &Self::Program,
    ) -> Result<Vec<RuleCounter>, DataplaneError>;
}

/// Reconciles one backend's objects in the kernel with a desired program.
pub struct Table<B: Backend> {
    backend: B,
    runner: Arc<dyn CommandRunner>,
    sleeper: Arc<dyn Sleeper>,
    retry: RetryPolicy,
    desired: B::Program,
    /// What we believe the kernel holds; `None`: unknown, read it before the next write.
    view: Option<B::View>,
    /// The next write rewrites everything we own.
    dirty_all: bool,
}

impl<B: Backend> Table<B> {
    pub fn new(
        backend: B,
        empty: B::Program,
        runner: Arc<dyn CommandRunner>,
        sleeper: Arc<dyn Sleeper>,
        retry: RetryPolicy,
    ) -> Self {
        Table {
            backend,
            runner,
            sleeper,
            retry,
            desired: empty,
            view: None,
            dirty_all: false,
        }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn desired(&self) -> &B::Program {
        &self.desired
    }

    /// Replaces the desired program (validated) and writes the difference.
    pub fn apply(&mut self, program: B::Program) -> Result<ApplyReport, DataplaneError> {
        B::validate(&program, &self.desired)?;
        self.desired = program;
        self.reconcile()
    }

    /// The desired program, to be patched in place and then written with
    /// [`Table::apply_current`].
    pub fn desired_mut(&mut self) -> &mut B::Program {
        &mut self.desired
    }

    /// Checks the desired program (as patched through [`Table::desired_mut`]; what
    /// [`Backend::validate_patched`] leaves out is taken as checked by whoever patched it)
    /// and writes the difference.
    pub fn apply_current(&mut self) -> Result<ApplyReport, DataplaneError> {
        B::validate_patched(&self.desired)?;
        self.reconcile()
    }

    /// Forgets what we believed about the kernel, reads our objects back and repairs any drift.
    pub fn resync(&mut self) -> Result<ApplyReport, DataplaneError> {
        self.view = None;
        self.reconcile()
    }

    /// The next apply or resync rewrites everything this table owns.
    pub fn mark_all_dirty(&mut self) {
        self.dirty_all = true;
        self.view = None;
    }

    /// Per-rule packet and byte counters of the rules we wrote.
    pub fn counters(&self) -> Result<Vec<RuleCounter>, DataplaneError> {
        let mut exec = Exec::new(self.runner.as_ref());
        self.backend.counters(&mut exec, &self.desired)
    }

    fn reconcile(&mut self) -> Result<ApplyReport, DataplaneError> {
        let start = Instant::now();
        let mut report = ApplyReport::default();
        let mut failures: u32 = 0;
        loop {
            report.attempts = failures + 1;
            report.clear_changes();
            let full = self.dirty_all || failures >= self.retry.full_rewrite_after;
            report.full_rewrite = full;
            let runner = Arc::clone(&self.runner);
            let mut exec = Exec::new(runner.as_ref());
            let result = self.attempt(&mut exec, full, &mut report);
            report.commands.append(&mut exec.log);
            match result {
                Ok(()) => {
                    self.view = Some(self.backend.project(&self.desired));
                    self.dirty_all = false;
                    report.duration = start.elapsed();
                    return Ok(report);
                }
                Err(err) => {
                    tracing::warn!(backend = self.backend.name(), attempt = failures + 1, error = %err, "dataplane write failed");
                    // The kernel may hold part of the batch: read it again before retrying.
                    self.view = None;
                    let Some(pause) = self.retry.backoff.get(failures as usize).copied() else {
                        self.dirty_all = true;
                        return Err(DataplaneError::GaveUp {
                            attempts: failures + 1,
                            last: Box::new(err),
                        });
                    };
                    self.sleeper.sleep(pause);
                    failures += 1;
                }
            }
        }
    }

    fn attempt(
        &mut self,
        exec: &mut Exec<'_>,
        full: bool,
        report: &mut ApplyReport,
    ) -> Result<(), DataplaneError> {
        if self.view.is_none() {
            self.view = Some(self.backend.read(exec)?);
        }
        match &self.view {
            Some(view) => self.backend.write(exec, &self.desired, view, full, report),
            None => Ok(()),
        }
    }
}
