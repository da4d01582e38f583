//! Leader election on a `coordination.k8s.io/v1` Lease, so that two operator replicas never
//! reconcile at once, with client-go's semantics:
//!
//! - a candidate judges a Lease expired by its **own** clock: `lease_duration` after it last saw
//!   the Lease record change, never by comparing the holder's `renewTime` with its local time
//!   (clocks differ between nodes);
//! - the holder renews every `retry_period`, each call bounded by a timeout, and **steps down**
//!   when it has not renewed for `renew_deadline`, which is shorter than `lease_duration`: it
//!   stops acting before any other candidate can see the Lease expire;
//! - on shutdown the holder **releases** the Lease (empty holder), so another replica takes over
//!   at once instead of waiting out the lease;
//! - every write carries the resourceVersion it read, so two candidates racing for an expired
//!   Lease cannot both win.

use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::time::Instant;

/// Timing of the election (client-go's defaults are 15 s / 10 s / 2 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a Lease stays valid, for others, after they last saw it change.
    pub lease_duration: Duration,
    /// How long the holder keeps acting without a successful renewal.
    pub renew_deadline: Duration,
    /// How often candidates try and the holder renews; also each API call's timeout.
    pub retry_period: Duration,
}

impl LeaseTiming {
    /// Client-go's proportions for a lease duration: renew deadline ⅔ of it, retry period
    /// ⅐ of it (at least a second).
    pub fn for_duration(lease_duration: Duration) -> LeaseTiming {
        let lease_duration = lease_duration.max(Duration::from_secs(3));
        LeaseTiming {
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: (lease_duration / 7).max(Duration::from_secs(1)),
        }
    }
}

/// What a candidate last saw of the Lease, and when (its own clock).
#[derive(Clone, Debug, PartialEq)]
struct Observed {
    record: (String, Option<String>, Option<String>, i32),
    at: Instant,
}

/// One candidate for leadership.
pub struct LeaderElector {
    api: Api<Lease>,
    lease_name: String,
    identity: String,
    timing: LeaseTiming,
    observed: Mutex<Option<Observed>>,
}

/// Why [`LeaderElector::hold`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostLeadership {
    /// Another candidate holds the Lease now.
    TakenOver,
    /// No successful renewal within the renew deadline (API server unreachable, or this
    /// process was frozen).
    RenewDeadlinePassed,
}

impl LeaderElector {
    pub fn new(
        client: Client,
        namespace: &str,
        lease_name: impl Into<String>,
        identity: impl Into<String>,
        timing: LeaseTiming,
    ) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            lease_name: lease_name.into(),
            identity: identity.into(),
            timing,
            observed: Mutex::new(None),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn timing(&self) -> LeaseTiming {
        self.timing
    }

    /// Records `lease` as seen now if it differs from what was seen before; returns when this
    /// candidate first saw the current record.
    fn observe(&self, spec: &LeaseSpec) -> Instant {
        let record = (
            spec.holder_identity.clone().unwrap_or_default(),
            spec.renew_time.as_ref().map(|t| t.0.to_string()),
            spec.acquire_time.as_ref().map(|t| t.0.to_string()),
            spec.lease_transitions.unwrap_or(0),
        );
        let mut observed = self
            .observed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match observed.as_ref() {
            Some(seen) if seen.record == record => seen.at,
            _ => {
                let at = Instant::now();
                *observed = Some(Observed { record, at });
                at
            }
        }
    }

    /// One attempt, bounded by the retry period: acquires the Lease or renews it; `true` when
    /// this candidate holds it afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        match tokio::time::timeout(self.timing.retry_period, self.attempt()).await {
            Ok(result) => result,
            Err(_) => Err(kube::Error::Service(
                format!(
                    "the Lease request took longer than {:?}",
                    self.timing.retry_period
                )
                .into(),
            )),
        }
    }

    async fn attempt(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let duration_seconds =
            i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let existing = self.api.get_opt(&self.lease_name).await?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.lease_name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            // A conflict: another candidate created it first.
            return self.won(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let seen_since = self.observe(spec);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let held_by_me = holder == self.identity;
        let valid_for = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(duration_seconds)).unwrap_or(0),
        );
        let expired = seen_since.elapsed() >= valid_for;
        if !held_by_me && !holder.is_empty() && !expired {
            return Ok(false);
        }
        if !held_by_me {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(duration_seconds);
        spec.renew_time = Some(MicroTime(now));
        let written = self
            .api
            .replace(&self.lease_name, &PostParams::default(), &lease)
            .await;
        // A conflict: someone else wrote the Lease since we read it, and won this round.
        self.won(written)
    }

    /// Whether a write of the Lease made this candidate its holder: a conflict (409) means
    /// another candidate's write came first; the Lease written is recorded as seen.
    fn won(&self, written: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
        match written {
            Ok(lease) => {
                if let Some(spec) = &lease.spec {
                    self.observe(spec);
                }
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Waits until this candidate holds the Lease, trying every retry period.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "leader election: reading the Lease failed"),
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
    }

    /// Renews every retry period and returns once leadership is lost: another holder, or no
    /// successful renewal within the renew deadline. The caller must then stop acting at once.
    /// `acquired` is when the Lease was last acquired or renewed.
    pub async fn hold(&self, acquired: Instant) -> LostLeadership {
        let mut renewed = acquired;
        loop {
            tokio::time::sleep(self.timing.retry_period).await;
            // Checked before trying: a process that was frozen past the deadline must not act
            // again, even if its Lease has not been taken yet.
            if renewed.elapsed() >= self.timing.renew_deadline {
                return LostLeadership::RenewDeadlinePassed;
            }
            match self.try_acquire_or_renew().await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => return LostLeadership::TakenOver,
                Err(error) => tracing::warn!(%error, "leader election: renewing the Lease failed"),
            }
            if renewed.elapsed() >= self.timing.renew_deadline {
                return LostLeadership::RenewDeadlinePassed;
            }
        }
    }

    /// Gives the Lease up (empty holder, written with the resourceVersion read), so another
    /// candidate takes it at its next try. Does nothing when another candidate holds it.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let call = async {
            let Some(mut lease) = self.api.get_opt(&self.lease_name).await? else {
                return Ok(());
            };
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = Some(String::new());
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            self.api
                .replace(&self.lease_name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        };
        match tokio::time::timeout(self.timing.retry_period, call).await {
            Ok(result) => result,
            Err(_) => Err(kube::Error::Service(
                "releasing the Lease timed out".to_string().into(),
            )),
        }
    }
}
