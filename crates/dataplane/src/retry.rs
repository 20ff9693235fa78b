//! Retry schedule and the clock it sleeps on. The schedule is a value; the [`Sleeper`] is
//! injected so tests check the schedule without sleeping.

use std::sync::Mutex;
use std::time::Duration;

/// How a failed write is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Pause before each retry; its length is the number of retries.
    pub backoff: Vec<Duration>,
    /// After this many failed attempts in a row, the next attempt re-reads the kernel and
    /// rewrites everything the reconciler owns.
    pub full_rewrite_after: u32,
}

impl RetryPolicy {
    /// `retries` pauses starting at `first`, doubling each time, capped at `max`.
    pub fn exponential(first: Duration, max: Duration, retries: usize) -> Self {
        let mut backoff = Vec::with_capacity(retries);
        let mut d = first;
        for _ in 0..retries {
            backoff.push(d.min(max));
            d = d.saturating_mul(2);
        }
        RetryPolicy {
            backoff,
            full_rewrite_after: 2,
        }
    }

    /// No retries: one attempt per apply.
    pub fn none() -> Self {
        RetryPolicy {
            backoff: Vec::new(),
            full_rewrite_after: 1,
        }
    }
}

impl Default for RetryPolicy {
    /// 50 ms, 100 ms, 200 ms, 400 ms, 800 ms; full rewrite from the third attempt on.
    fn default() -> Self {
        RetryPolicy::exponential(Duration::from_millis(50), Duration::from_secs(2), 5)
    }
}

/// Waits between retries.
pub trait Sleeper: Send + Sync {
    fn sleep(&self, duration: Duration);
}

/// Sleeps the thread (the agent runs the dataplane in a blocking task).
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadSleeper;

impl Sleeper for ThreadSleeper {
    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// Remembers the pauses it was asked for and returns at once.
#[derive(Debug, Default)]
pub struct RecordingSleeper {
    slept: Mutex<Vec<Duration>>,
}

impl RecordingSleeper {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn slept(&self) -> Vec<Duration> {
        self.slept.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Sleeper for RecordingSleeper {
    fn sleep(&self, duration: Duration) {
        if let Ok(mut v) = self.slept.lock() {
            v.push(duration);
        }
    }
}

impl<T: Sleeper + ?Sized> Sleeper for std::sync::Arc<T> {
    fn sleep(&self, duration: Duration) {
        (**self).sleep(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_doubles_and_caps() {
        let p = RetryPolicy::exponential(Duration::from_millis(10), Duration::from_millis(30), 4);
        assert_eq!(
            p.backoff,
            vec![
                Duration::from_millis(10),
                Duration::from_millis(20),
                Duration::from_millis(30),
                Duration::from_millis(30)
            ]
        );
    }
}
