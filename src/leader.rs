//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's algorithm and record
//! (`tools/leaderelection`), so only one manager reconciles at a time, and a capd-rs manager and
//! a client-go one (CAPD's, under the same Lease name) exclude each other too.
//!
//! A candidate takes the Lease when nobody holds it, or when the holder has not renewed it for
//! the Lease's duration as measured on the candidate's own clock from when it last saw the record
//! change (so clock skew between replicas does not matter). The holder renews every retry
//! period; when renewing keeps failing for the renew deadline it has lost the Lease, and the
//! caller must stop reconciling at once (the renew deadline is shorter than the Lease duration,
//! so it stops before anyone else may start). On shutdown the holder releases the Lease, so a
//! successor starts at once instead of waiting out the duration.

use std::hash::BuildHasher;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::time::Instant;
use tracing::{info, warn};

/// The Lease's name: CAPD's, so a swap between CAPD and capd-rs in one namespace is exclusive.
pub const LEASE_NAME: &str = "controller-leader-election-capd";

/// How a candidate takes part in the election.
#[derive(Clone, Debug)]
pub struct Config {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This candidate's identity (unique per process).
    pub identity: String,
    /// How long a Lease is valid after its last renewal, for the other candidates.
    pub lease_duration: Duration,
    /// How long the holder keeps trying to renew before it gives the Lease up.
    pub renew_deadline: Duration,
    /// The time between tries.
    pub retry_period: Duration,
}

impl Config {
    /// Checks the timings as client-go does: the Lease must outlast the renew deadline, which
    /// must leave room for more than one retry.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_duration <= self.renew_deadline {
            return Err(format!(
                "--leader-elect-lease-duration ({:?}) must be greater than --leader-elect-renew-deadline ({:?})",
                self.lease_duration, self.renew_deadline
            ));
        }
        if self.renew_deadline <= self.retry_period.mul_f64(1.2) {
            return Err(format!(
                "--leader-elect-renew-deadline ({:?}) must be greater than 1.2 x --leader-elect-retry-period ({:?})",
                self.renew_deadline, self.retry_period
            ));
        }
        Ok(())
    }
}

/// The holder could not renew the Lease within the renew deadline: it is no longer the leader.
#[derive(Debug, thiserror::Error)]
#[error("leader election lost: the lease {namespace}/{name} was not renewed within {deadline:?}")]
pub struct LeaseLost {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// The renew deadline that passed.
    pub deadline: Duration,
}

/// client-go's `LeaderElectionRecord`: what the Lease says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Record {
    holder: String,
    lease_duration_seconds: i32,
    acquire_time: Option<Timestamp>,
    renew_time: Option<Timestamp>,
    transitions: i32,
}

impl Record {
    fn of(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Self {
            holder: spec.holder_identity.unwrap_or_default(),
            lease_duration_seconds: spec.lease_duration_seconds.unwrap_or_default(),
            acquire_time: spec.acquire_time.map(|t| t.0),
            renew_time: spec.renew_time.map(|t| t.0),
            transitions: spec.lease_transitions.unwrap_or_default(),
        }
    }

    fn spec(&self) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.holder.clone()),
            lease_duration_seconds: Some(self.lease_duration_seconds),
            acquire_time: self.acquire_time.map(MicroTime),
            renew_time: self.renew_time.map(MicroTime),
            lease_transitions: Some(self.transitions),
            ..LeaseSpec::default()
        }
    }
}

/// The record `me` writes to take or renew the Lease, or `None` while someone else validly
/// holds it. `observed_at` is when this candidate last saw `current` change (its own clock).
fn claim(
    me: &str,
    current: &Record,
    observed_at: Instant,
    now: Instant,
    wall_now: Timestamp,
    lease_duration: Duration,
) -> Option<Record> {
    let valid_until = observed_at
        + Duration::from_secs(u64::try_from(current.lease_duration_seconds).unwrap_or(0));
    let mine = current.holder == me;
    if !current.holder.is_empty() && !mine && valid_until > now {
        return None;
    }
    Some(Record {
        holder: me.to_owned(),
        lease_duration_seconds: i32::try_from(lease_duration.as_secs()).unwrap_or(i32::MAX),
        acquire_time: if mine {
            current.acquire_time
        } else {
            Some(wall_now)
        },
        renew_time: Some(wall_now),
        transitions: if mine {
            current.transitions
        } else {
            current.transitions.saturating_add(1)
        },
    })
}

/// The record that releases the Lease: no holder, valid for one second (client-go's release).
fn released(current: &Record, wall_now: Timestamp) -> Record {
    Record {
        holder: String::new(),
        lease_duration_seconds: 1,
        acquire_time: Some(wall_now),
        renew_time: Some(wall_now),
        transitions: current.transitions,
    }
}

/// One candidate in the election.
pub struct Elector {
    api: Api<Lease>,
    config: Config,
    /// The Lease as last read or written (its resourceVersion guards the next write).
    lease: Option<Lease>,
    /// The record last seen, and when it was first seen (this process's clock).
    observed: Option<(Record, Instant)>,
}

impl Elector {
    /// A candidate for `config`'s Lease.
    pub fn new(client: kube::Client, config: Config) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            lease: None,
            observed: None,
        }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.config.identity
    }

    /// A reference to the Lease, for events about it.
    pub fn lease_reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some("coordination.k8s.io/v1".into()),
            kind: Some("Lease".into()),
            name: Some(self.config.name.clone()),
            namespace: Some(self.config.namespace.clone()),
            uid: self.lease.as_ref().and_then(|l| l.metadata.uid.clone()),
            ..ObjectReference::default()
        }
    }

    /// Whether this candidate held the Lease at its last look.
    pub fn is_leader(&self) -> bool {
        self.observed
            .as_ref()
            .is_some_and(|(record, _)| record.holder == self.config.identity)
    }

    fn observe(&mut self, lease: Lease, now: Instant) -> Record {
        let record = Record::of(&lease);
        if self.observed.as_ref().map(|(r, _)| r) != Some(&record) {
            self.observed = Some((record.clone(), now));
        }
        self.lease = Some(lease);
        record
    }

    /// One try to take or renew the Lease: `Ok(true)` when this candidate holds it now.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = Instant::now();
        let Some(lease) = self.api.get_opt(&self.config.name).await? else {
            let record = claim(
                &self.config.identity,
                &Record::default(),
                now,
                now,
                Timestamp::now(),
                self.config.lease_duration,
            )
            .unwrap_or_default();
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(record.spec()),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(created, now);
                    Ok(true)
                }
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let (current, observed_at) = {
            let record = self.observe(lease.clone(), now);
            let at = self.observed.as_ref().map_or(now, |(_, at)| *at);
            (record, at)
        };
        let Some(record) = claim(
            &self.config.identity,
            &current,
            observed_at,
            now,
            Timestamp::now(),
            self.config.lease_duration,
        ) else {
            return Ok(false);
        };
        self.write(lease, &record, now).await
    }

    /// Writes `record` over `lease` (guarded by its resourceVersion); a conflict means someone
    /// else wrote first: `Ok(false)`.
    async fn write(
        &mut self,
        lease: Lease,
        record: &Record,
        now: Instant,
    ) -> Result<bool, kube::Error> {
        let lease = Lease {
            spec: Some(record.spec()),
            ..lease
        };
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.observe(written, now);
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this candidate holds the Lease, trying every retry period (with client-go's
    /// jitter, so candidates do not try in lockstep).
    pub async fn acquire(&mut self) {
        let (namespace, name) = (&self.config.namespace, &self.config.name);
        info!(lease = %format!("{namespace}/{name}"), identity = %self.config.identity, "attempting to acquire leader lease");
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => warn!(error = %e, "cannot read or write the leader lease; retrying"),
            }
            tokio::time::sleep(jittered(self.config.retry_period)).await;
        }
        let (namespace, name) = (&self.config.namespace, &self.config.name);
        info!(lease = %format!("{namespace}/{name}"), identity = %self.config.identity, "successfully acquired lease");
    }

    /// Renews the Lease every retry period for as long as it can; returns when a renewal has
    /// kept failing for the renew deadline (or someone else took the Lease).
    pub async fn renew_until_lost(&mut self) -> LeaseLost {
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            let deadline = Instant::now() + self.config.renew_deadline;
            loop {
                match tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await {
                    Ok(Ok(true)) => break,
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => warn!(error = %e, "cannot renew the leader lease; retrying"),
                    Err(_) => return self.lost(),
                }
                let next = Instant::now() + self.config.retry_period;
                if next >= deadline {
                    return self.lost();
                }
                tokio::time::sleep_until(next).await;
            }
        }
    }

    fn lost(&self) -> LeaseLost {
        LeaseLost {
            namespace: self.config.namespace.clone(),
            name: self.config.name.clone(),
            deadline: self.config.renew_deadline,
        }
    }

    /// Gives the Lease up if this candidate holds it, so a successor takes it at once.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(lease) = self.lease.clone().filter(|_| self.is_leader()) else {
            return Ok(());
        };
        let record = released(&Record::of(&lease), Timestamp::now());
        if self.write(lease, &record, Instant::now()).await? {
            info!(lease = %format!("{}/{}", self.config.namespace, self.config.name), "released the leader lease");
        }
        Ok(())
    }
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// `period` stretched by a random factor between 1 and 2.2 (client-go's `JitterUntil` with a
/// jitter factor of 1.2).
fn jittered(period: Duration) -> Duration {
    let random =
        std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now());
    let fraction = (random >> 11) as f64 / (1_u64 << 53) as f64;
    period.mul_f64(1.0 + 1.2 * fraction)
}

/// A unique identity for this process: the host name and a random UUID, as controller-runtime
/// makes it (`<hostname>_<uuid>`).
pub fn identity() -> String {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| read("/proc/sys/kernel/hostname"));
    let mut unique = read("/proc/sys/kernel/random/uuid");
    if unique.is_empty() {
        unique = format!(
            "{}-{}",
            std::process::id(),
            Timestamp::now().as_nanosecond()
        );
    }
    format!("{host}_{unique}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(holder: &str, seconds: i32, transitions: i32) -> Record {
        Record {
            holder: holder.into(),
            lease_duration_seconds: seconds,
            acquire_time: Some(Timestamp::from_second(100).unwrap()),
            renew_time: Some(Timestamp::from_second(200).unwrap()),
            transitions,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn another_holder_is_respected_for_the_duration_seen_from_here() {
        let seen = Instant::now();
        let wall = Timestamp::from_second(300).unwrap();
        let held = record("other", 15, 3);
        let at = |secs| seen + Duration::from_secs(secs);
        assert_eq!(
            claim("me", &held, seen, at(14), wall, Duration::from_secs(15)),
            None
        );
        let taken = claim("me", &held, seen, at(16), wall, Duration::from_secs(15)).unwrap();
        assert_eq!(taken.holder, "me");
        assert_eq!(taken.transitions, 4);
        assert_eq!(taken.acquire_time, Some(wall));
        assert_eq!(taken.renew_time, Some(wall));
        assert_eq!(taken.lease_duration_seconds, 15);
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_or_empty_lease_is_taken_at_once() {
        let now = Instant::now();
        let wall = Timestamp::from_second(300).unwrap();
        let free = released(&record("other", 15, 3), wall);
        assert_eq!(free.holder, "");
        assert_eq!(free.lease_duration_seconds, 1);
        assert_eq!(free.transitions, 3);
        let taken = claim("me", &free, now, now, wall, Duration::from_secs(15)).unwrap();
        assert_eq!((taken.holder.as_str(), taken.transitions), ("me", 4));
        let first = claim(
            "me",
            &Record::default(),
            now,
            now,
            wall,
            Duration::from_secs(15),
        )
        .unwrap();
        assert_eq!(first.transitions, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_holder_renews_keeping_its_acquire_time_and_transitions() {
        let now = Instant::now();
        let wall = Timestamp::from_second(300).unwrap();
        let mine = record("me", 15, 3);
        let renewed = claim("me", &mine, now, now, wall, Duration::from_secs(15)).unwrap();
        assert_eq!(renewed.acquire_time, mine.acquire_time);
        assert_eq!(renewed.transitions, 3);
        assert_eq!(renewed.renew_time, Some(wall));
    }

    #[test]
    fn timings_are_checked_as_client_go_checks_them() {
        let config = |lease, renew, retry| Config {
            namespace: "ns".into(),
            name: LEASE_NAME.into(),
            identity: "me".into(),
            lease_duration: Duration::from_secs(lease),
            renew_deadline: Duration::from_secs(renew),
            retry_period: Duration::from_secs(retry),
        };
        assert_eq!(config(15, 10, 2).validate(), Ok(()));
        assert!(
            config(10, 10, 2)
                .validate()
                .unwrap_err()
                .contains("--leader-elect-lease-duration")
        );
        assert!(
            config(15, 2, 2)
                .validate()
                .unwrap_err()
                .contains("1.2 x --leader-elect-retry-period")
        );
    }

    #[test]
    fn records_round_trip_through_the_lease_spec() {
        let original = record("me", 15, 3);
        let lease = Lease {
            metadata: ObjectMeta::default(),
            spec: Some(original.spec()),
        };
        assert_eq!(Record::of(&lease), original);
        assert_eq!(Record::of(&Lease::default()), Record::default());
    }

    #[test]
    fn jitter_stays_between_one_and_two_point_two_periods() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(2));
            assert!(
                d >= Duration::from_secs(2) && d <= Duration::from_millis(4400),
                "{d:?}"
            );
        }
    }

    #[test]
    fn identities_are_unique_per_call() {
        assert_ne!(identity(), identity());
        assert!(identity().contains('_'));
    }
}
