//! Leader election through a `coordination.k8s.io/v1` Lease, as client-go does it: the
//! leader renews `renewTime` every retry period; the others watch the lease record and take
//! over once it has not changed for `leaseDurationSeconds` by their own clock (so clock skew
//! between replicas does not matter); writes are compare-and-swap on the Lease's
//! `resourceVersion`, so two replicas can never both win the same round. A leader that cannot
//! renew for the renew deadline (shorter than the lease duration) stops leading before anyone
//! else may start. A leader shutting down releases the lease so a standby takes over at once.
//!
//! [`decide`] and [`next_spec`] are the pure rules; [`Elector`] is the loop around them.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

/// What a replica saw of the lease, and when (by its own clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    holder: Option<String>,
    renew_time: Option<Timestamp>,
    transitions: Option<i32>,
    /// When this record was first seen.
    pub at: Timestamp,
}

impl Observed {
    fn of(spec: &LeaseSpec, at: Timestamp) -> Self {
        Observed {
            holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.as_ref().map(|t| t.0),
            transitions: spec.lease_transitions,
            at,
        }
    }

    fn same_record(&self, other: &Observed) -> bool {
        self.holder == other.holder
            && self.renew_time == other.renew_time
            && self.transitions == other.transitions
    }
}

/// What to do with the lease this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// There is no Lease object: create it, held by us.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Nobody holds it, or the holder stopped renewing: take it over.
    Acquire,
    /// Someone else holds a live lease until at least `expires` (by our clock).
    Standby { holder: String, expires: Timestamp },
}

/// Decides this round from the lease (`None`: no Lease object), what we observed of it
/// before, who we are and the time. Returns the decision and the observation to keep.
pub fn decide(
    spec: Option<&LeaseSpec>,
    previous: Option<&Observed>,
    me: &str,
    now: Timestamp,
    default_duration: Duration,
) -> (Decision, Option<Observed>) {
    let Some(spec) = spec else {
        return (Decision::Create, None);
    };
    let mut seen = Observed::of(spec, now);
    if let Some(prev) = previous {
        if prev.same_record(&seen) {
            seen.at = prev.at;
        }
    }
    let decision = match seen.holder.as_deref() {
        Some(h) if h == me => Decision::Renew,
        None => Decision::Acquire,
        Some(holder) => {
            let secs = spec
                .lease_duration_seconds
                .filter(|s| *s > 0)
                .map(i64::from)
                .unwrap_or(default_duration.as_secs() as i64);
            let expires = seen
                .at
                .checked_add(SignedDuration::from_secs(secs))
                .unwrap_or(seen.at);
            if now >= expires {
                Decision::Acquire
            } else {
                Decision::Standby {
                    holder: holder.to_string(),
                    expires,
                }
            }
        }
    };
    (decision, Some(seen))
}

/// The lease spec to write for a `Create`, `Renew` or `Acquire` decision (`None` for
/// `Standby`).
pub fn next_spec(
    current: Option<&LeaseSpec>,
    decision: &Decision,
    me: &str,
    now: Timestamp,
    duration: Duration,
) -> Option<LeaseSpec> {
    let base = current.cloned().unwrap_or_default();
    let secs = i32::try_from(duration.as_secs()).unwrap_or(i32::MAX).max(1);
    match decision {
        Decision::Standby { .. } => None,
        Decision::Create => Some(LeaseSpec {
            holder_identity: Some(me.to_string()),
            lease_duration_seconds: Some(secs),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(0),
            ..Default::default()
        }),
        Decision::Renew => Some(LeaseSpec {
            holder_identity: Some(me.to_string()),
            lease_duration_seconds: Some(secs),
            acquire_time: base.acquire_time.clone().or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            ..base
        }),
        Decision::Acquire => Some(LeaseSpec {
            holder_identity: Some(me.to_string()),
            lease_duration_seconds: Some(secs),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(base.lease_transitions.unwrap_or(0).saturating_add(1)),
            ..base
        }),
    }
}

/// The spec that gives the lease up (holder cleared), as client-go's `ReleaseOnCancel`.
pub fn release_spec(current: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        renew_time: Some(MicroTime(now)),
        ..current.clone()
    }
}

/// Timing and names of the election.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    pub lease_name: String,
    pub lease_namespace: String,
    pub identity: String,
    /// How long a lease lives without renewal (client-go default 15 s).
    pub lease_duration: Duration,
    /// A leader that could not renew for this long steps down (10 s); below `lease_duration`.
    pub renew_deadline: Duration,
    /// How often the leader renews and the others check (2 s).
    pub retry_period: Duration,
}

impl ElectionConfig {
    pub fn new(lease_name: &str, lease_namespace: &str, identity: &str) -> Self {
        ElectionConfig {
            lease_name: lease_name.to_string(),
            lease_namespace: lease_namespace.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// The election loop: publishes `true` on its channel while this replica leads.
pub struct Elector {
    api: Api<Lease>,
    cfg: ElectionConfig,
    observed: Option<Observed>,
}

impl Elector {
    pub fn new(client: kube::Client, cfg: ElectionConfig) -> Self {
        Elector {
            api: Api::namespaced(client, &cfg.lease_namespace),
            cfg,
            observed: None,
        }
    }

    /// One round: reads the lease, decides, writes. `Ok(true)` if we hold the lease now.
    pub async fn round(&mut self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let lease = self.api.get_opt(&self.cfg.lease_name).await?;
        let spec = lease.as_ref().and_then(|l| l.spec.as_ref());
        let (decision, observed) = decide(
            spec,
            self.observed.as_ref(),
            &self.cfg.identity,
            now,
            self.cfg.lease_duration,
        );
        self.observed = observed;
        let Some(new_spec) = next_spec(
            spec,
            &decision,
            &self.cfg.identity,
            now,
            self.cfg.lease_duration,
        ) else {
            return Ok(false);
        };
        let result = match lease {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.lease_name.clone()),
                        namespace: Some(self.cfg.lease_namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(new_spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            // `replace` sends the resourceVersion we read: the API server refuses it (409)
            // if anyone wrote the lease since.
            Some(mut lease) => {
                lease.spec = Some(new_spec);
                self.api
                    .replace(&self.cfg.lease_name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => {
                if decision == Decision::Acquire || decision == Decision::Create {
                    info!(identity = %self.cfg.identity, lease = %self.cfg.lease_name, "acquired the lease");
                }
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up if we hold it.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.cfg.lease_name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_ref() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        lease.spec = Some(release_spec(spec, Timestamp::now()));
        self.api
            .replace(&self.cfg.lease_name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }

    /// Runs until `shutdown` turns true, then releases the lease if held.
    pub async fn run(mut self, leader: watch::Sender<bool>, mut shutdown: watch::Receiver<bool>) {
        let mut last_renew: Option<tokio::time::Instant> = None;
        loop {
            let round = tokio::time::timeout(self.cfg.renew_deadline / 2, self.round()).await;
            let leading = match round {
                Ok(Ok(held)) => {
                    if held {
                        last_renew = Some(tokio::time::Instant::now());
                    }
                    held
                }
                Ok(Err(e)) => {
                    warn!(error = %e, lease = %self.cfg.lease_name, "lease round failed");
                    *leader.borrow() && within(last_renew, self.cfg.renew_deadline)
                }
                Err(_) => {
                    warn!(lease = %self.cfg.lease_name, "lease round timed out");
                    *leader.borrow() && within(last_renew, self.cfg.renew_deadline)
                }
            };
            if leading != *leader.borrow() {
                if leading {
                    info!(identity = %self.cfg.identity, "leading");
                } else {
                    info!(identity = %self.cfg.identity, "not leading");
                }
                leader.send_replace(leading);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.retry_period) => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        if *leader.borrow() {
            leader.send_replace(false);
            if let Err(e) = self.release().await {
                warn!(error = %e, "could not release the lease");
            }
        }
    }
}

fn within(last: Option<tokio::time::Instant>, deadline: Duration) -> bool {
    last.is_some_and(|t| t.elapsed() < deadline)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(15);

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn held(holder: &str, renew: i64, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(t(0))),
            renew_time: Some(MicroTime(t(renew))),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    #[test]
    fn no_lease_means_create() {
        let (d, obs) = decide(None, None, "a", t(0), D);
        assert_eq!(d, Decision::Create);
        assert!(obs.is_none());
        let spec = next_spec(None, &d, "a", t(0), D).unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.lease_duration_seconds, Some(15));
    }

    #[test]
    fn our_own_lease_is_renewed_keeping_acquire_time_and_transitions() {
        let spec = held("a", 5, 3);
        let (d, _) = decide(Some(&spec), None, "a", t(100), D);
        assert_eq!(d, Decision::Renew);
        let next = next_spec(Some(&spec), &d, "a", t(100), D).unwrap();
        assert_eq!(next.renew_time, Some(MicroTime(t(100))));
        assert_eq!(next.acquire_time, Some(MicroTime(t(0))));
        assert_eq!(next.lease_transitions, Some(3));
    }

    #[test]
    fn a_live_lease_of_another_holder_means_standby() {
        let spec = held("b", 0, 1);
        let (d, obs) = decide(Some(&spec), None, "a", t(3), D);
        assert_eq!(
            d,
            Decision::Standby {
                holder: "b".into(),
                expires: t(18)
            }
        );
        assert_eq!(obs.unwrap().at, t(3));
        assert!(next_spec(Some(&spec), &d, "a", t(3), D).is_none());
    }

    #[test]
    fn expiry_counts_from_when_we_saw_the_record_not_from_its_timestamp() {
        // The holder's clock is far behind ours: its renewTime looks ancient, but the record
        // is fresh to us, so we wait a full lease duration before taking over.
        let spec = held("b", -10_000, 1);
        let (d, obs) = decide(Some(&spec), None, "a", t(0), D);
        assert!(matches!(d, Decision::Standby { .. }), "{d:?}");
        let (d, obs) = decide(Some(&spec), obs.as_ref(), "a", t(14), D);
        assert!(matches!(d, Decision::Standby { .. }), "{d:?}");
        let (d, obs) = decide(Some(&spec), obs.as_ref(), "a", t(15), D);
        assert_eq!(d, Decision::Acquire);
        let next = next_spec(Some(&spec), &d, "a", t(15), D).unwrap();
        assert_eq!(next.holder_identity.as_deref(), Some("a"));
        assert_eq!(next.lease_transitions, Some(2));
        assert_eq!(next.acquire_time, Some(MicroTime(t(15))));
        assert_eq!(obs.unwrap().at, t(0));
    }

    #[test]
    fn a_renewal_seen_restarts_the_clock() {
        let (_, obs) = decide(Some(&held("b", 0, 1)), None, "a", t(0), D);
        let (d, obs) = decide(Some(&held("b", 10, 1)), obs.as_ref(), "a", t(10), D);
        assert!(matches!(d, Decision::Standby { .. }));
        assert_eq!(obs.as_ref().unwrap().at, t(10));
        let (d, _) = decide(Some(&held("b", 10, 1)), obs.as_ref(), "a", t(24), D);
        assert!(matches!(d, Decision::Standby { .. }), "{d:?}");
        let (d, _) = decide(Some(&held("b", 10, 1)), obs.as_ref(), "a", t(25), D);
        assert_eq!(d, Decision::Acquire);
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let released = release_spec(&held("b", 0, 4), t(1));
        assert_eq!(released.holder_identity, None);
        let (d, _) = decide(Some(&released), None, "a", t(1), D);
        assert_eq!(d, Decision::Acquire);
        let next = next_spec(Some(&released), &d, "a", t(1), D).unwrap();
        assert_eq!(next.lease_transitions, Some(5));
        assert_eq!(next.lease_duration_seconds, Some(15));
        // An empty holder string counts as released too.
        let mut empty = held("", 0, 4);
        empty.holder_identity = Some(String::new());
        assert_eq!(
            decide(Some(&empty), None, "a", t(1), D).0,
            Decision::Acquire
        );
    }

    #[test]
    fn the_lease_duration_in_the_object_wins_over_the_default() {
        let mut spec = held("b", 0, 1);
        spec.lease_duration_seconds = Some(60);
        let (_, obs) = decide(Some(&spec), None, "a", t(0), D);
        let (d, _) = decide(Some(&spec), obs.as_ref(), "a", t(30), D);
        assert!(matches!(d, Decision::Standby { .. }), "{d:?}");
        let (d, _) = decide(Some(&spec), obs.as_ref(), "a", t(60), D);
        assert_eq!(d, Decision::Acquire);
    }
}
