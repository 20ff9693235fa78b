//! [`Batcher`]: when to apply. Pure (time comes in as an argument), so its rules are tested
//! without a clock:
//!
//! * nothing is applied before the datastore is in sync ([`Batcher::set_in_sync`]), and
//!   nothing while it is out of sync again (the last programmed state stays: fail static);
//! * the first change after a quiet period is applied at once;
//! * under load, applies start at most once per `interval`; changes that arrive while an
//!   apply runs are coalesced into the next one;
//! * an apply that wrote nothing to the dataplane (its events changed nothing the node
//!   enforces: an object rewritten unchanged, another node's status) does not count against
//!   the interval: the change after it is applied as if it had not run, not up to `interval`
//!   later;
//! * a failed apply is retried after a growing delay (doubling from `interval`, capped).

use std::time::{Duration, Instant};

/// What the loop should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to apply (or not allowed to yet): wait for the next event.
    Idle,
    /// Start an apply now.
    ApplyNow,
    /// Something is pending: wake up at this instant and ask again.
    WaitUntil(Instant),
}

/// The batching state machine; see the module docs.
#[derive(Debug, Clone)]
pub struct Batcher {
    interval: Duration,
    max_retry: Duration,
    in_sync: bool,
    pending: bool,
    applying: bool,
    last_start: Option<Instant>,
    /// `last_start` before the running apply started (restored if it writes nothing).
    previous_start: Option<Instant>,
    /// After a failure: not before this instant.
    retry_at: Option<Instant>,
    failures: u32,
}

impl Batcher {
    /// Applies at most once per `interval`; failed applies are retried after at most
    /// `max_retry`.
    pub fn new(interval: Duration, max_retry: Duration) -> Self {
        Batcher {
            interval,
            max_retry: max_retry.max(interval),
            in_sync: false,
            pending: false,
            applying: false,
            last_start: None,
            previous_start: None,
            retry_at: None,
            failures: 0,
        }
    }

    /// The datastore copy is (or is no longer) a consistent snapshot.
    pub fn set_in_sync(&mut self, in_sync: bool) {
        self.in_sync = in_sync;
    }

    pub fn in_sync(&self) -> bool {
        self.in_sync
    }

    /// The desired state changed (or must be written again).
    pub fn changed(&mut self) {
        self.pending = true;
    }

    pub fn pending(&self) -> bool {
        self.pending
    }

    pub fn applying(&self) -> bool {
        self.applying
    }

    /// Consecutive failed applies.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// What to do at `now`.
    pub fn poll(&self, now: Instant) -> Decision {
        if !self.in_sync || !self.pending || self.applying {
            return Decision::Idle;
        }
        let mut earliest = self.last_start.map(|t| t + self.interval);
        if let Some(r) = self.retry_at {
            earliest = Some(earliest.map_or(r, |e| e.max(r)));
        }
        match earliest {
            Some(t) if t > now => Decision::WaitUntil(t),
            _ => Decision::ApplyNow,
        }
    }

    /// The loop starts an apply at `now`: everything pending so far goes into it.
    pub fn start(&mut self, now: Instant) {
        self.pending = false;
        self.applying = true;
        self.previous_start = self.last_start.replace(now);
    }

    /// The apply that started last succeeded.
    pub fn succeeded(&mut self) {
        self.applying = false;
        self.failures = 0;
        self.retry_at = None;
    }

    /// The apply that started last succeeded without writing anything to the dataplane: it
    /// does not count against the interval.
    pub fn succeeded_without_writing(&mut self) {
        self.succeeded();
        self.last_start = self.previous_start;
    }

    /// The apply that started last failed at `now`: its changes are pending again and are
    /// retried after `interval × 2^failures` (capped).
    pub fn failed(&mut self, now: Instant) {
        self.applying = false;
        self.pending = true;
        self.failures = self.failures.saturating_add(1);
        let factor = 1u32.checked_shl(self.failures.min(16)).unwrap_or(u32::MAX);
        let delay = self.interval.saturating_mul(factor).min(self.max_retry);
        self.retry_at = Some(now + delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn batcher() -> (Batcher, Instant) {
        let mut b = Batcher::new(50 * MS, 1000 * MS);
        b.set_in_sync(true);
        (b, Instant::now())
    }

    #[test]
    fn nothing_is_applied_before_in_sync() {
        let mut b = Batcher::new(50 * MS, 1000 * MS);
        let t0 = Instant::now();
        b.changed();
        assert_eq!(b.poll(t0), Decision::Idle);
        assert_eq!(b.poll(t0 + 10_000 * MS), Decision::Idle);
        b.set_in_sync(true);
        assert_eq!(b.poll(t0 + 10_000 * MS), Decision::ApplyNow);
    }

    #[test]
    fn out_of_sync_holds_applies_until_in_sync_again() {
        let (mut b, t0) = batcher();
        b.set_in_sync(false);
        b.changed();
        assert_eq!(b.poll(t0), Decision::Idle);
        b.set_in_sync(true);
        assert_eq!(b.poll(t0), Decision::ApplyNow);
    }

    #[test]
    fn first_change_after_idle_applies_at_once() {
        let (mut b, t0) = batcher();
        assert_eq!(b.poll(t0), Decision::Idle, "nothing pending");
        b.changed();
        assert_eq!(b.poll(t0), Decision::ApplyNow);
        b.start(t0);
        b.succeeded();
        // Long after: again at once.
        b.changed();
        assert_eq!(b.poll(t0 + 500 * MS), Decision::ApplyNow);
    }

    #[test]
    fn under_load_at_most_one_apply_per_interval() {
        let (mut b, t0) = batcher();
        let mut starts = Vec::new();
        // An event every millisecond for 300 ms; applies take 5 ms.
        let mut running_until: Option<Instant> = None;
        for ms in 0..300u64 {
            let now = t0 + Duration::from_millis(ms);
            if running_until.is_some_and(|t| t <= now) {
                b.succeeded();
                running_until = None;
            }
            b.changed();
            if b.poll(now) == Decision::ApplyNow {
                b.start(now);
                starts.push(ms);
                running_until = Some(now + 5 * MS);
            }
        }
        assert_eq!(starts, vec![0, 50, 100, 150, 200, 250]);
    }

    #[test]
    fn events_during_an_apply_are_coalesced_into_the_next() {
        let (mut b, t0) = batcher();
        b.changed();
        b.start(t0);
        for _ in 0..100 {
            b.changed();
        }
        assert_eq!(b.poll(t0 + 10 * MS), Decision::Idle, "one apply at a time");
        // The apply took 80 ms: longer than the interval, so the next starts at once.
        b.succeeded();
        assert_eq!(b.poll(t0 + 80 * MS), Decision::ApplyNow);
        b.start(t0 + 80 * MS);
        b.succeeded();
        assert_eq!(
            b.poll(t0 + 81 * MS),
            Decision::Idle,
            "all coalesced into one"
        );
    }

    #[test]
    fn an_apply_that_wrote_nothing_does_not_delay_the_next_change() {
        let (mut b, t0) = batcher();
        // A real change at 0, an unchanged rewrite at 10 ms (applied at 50 ms, writing
        // nothing), a real change at 55 ms: applied at once, not at 100 ms.
        b.changed();
        b.start(t0);
        b.succeeded();
        b.changed();
        assert_eq!(b.poll(t0 + 10 * MS), Decision::WaitUntil(t0 + 50 * MS));
        b.start(t0 + 50 * MS);
        b.succeeded_without_writing();
        b.changed();
        assert_eq!(b.poll(t0 + 55 * MS), Decision::ApplyNow);
        // One that wrote does count: the next waits for the interval.
        b.start(t0 + 55 * MS);
        b.succeeded();
        b.changed();
        assert_eq!(b.poll(t0 + 60 * MS), Decision::WaitUntil(t0 + 105 * MS));
        // Nor does a no-op right after a real apply let the one after it in early.
        b.start(t0 + 105 * MS);
        b.succeeded();
        b.changed();
        b.start(t0 + 155 * MS);
        b.succeeded_without_writing();
        b.changed();
        assert_eq!(
            b.poll(t0 + 156 * MS),
            Decision::ApplyNow,
            "105 ms + 50 ms is past"
        );
    }

    #[test]
    fn a_short_apply_waits_out_the_interval() {
        let (mut b, t0) = batcher();
        b.changed();
        b.start(t0);
        b.changed();
        b.succeeded();
        assert_eq!(b.poll(t0 + 5 * MS), Decision::WaitUntil(t0 + 50 * MS));
        assert_eq!(b.poll(t0 + 50 * MS), Decision::ApplyNow);
    }

    #[test]
    fn failures_retry_with_growing_capped_delay() {
        let (mut b, t0) = batcher();
        b.changed();
        b.start(t0);
        b.failed(t0);
        assert!(b.pending());
        assert_eq!(b.poll(t0), Decision::WaitUntil(t0 + 100 * MS));
        b.start(t0 + 100 * MS);
        b.failed(t0 + 100 * MS);
        assert_eq!(b.poll(t0 + 100 * MS), Decision::WaitUntil(t0 + 300 * MS));
        for _ in 0..10 {
            b.start(t0);
            b.failed(t0);
        }
        assert_eq!(b.poll(t0), Decision::WaitUntil(t0 + 1000 * MS), "capped");
        b.start(t0 + 1000 * MS);
        b.succeeded();
        assert_eq!(b.failures(), 0);
        b.changed();
        assert_eq!(b.poll(t0 + 1100 * MS), Decision::ApplyNow);
    }
}
