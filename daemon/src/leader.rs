//! Leader election through a `coordination.k8s.io/v1` Lease, after
//! client-go's `leaderelection`: only the holder runs controllers and
//! syncers; the others take over when it expires.
//!
//! Expiry is judged by when *this* process last saw the Lease change (its
//! own monotonic clock, [`Observed::at`]), never by the timestamps in the
//! Lease: the hosts' clocks need not agree. A leader stops writing when it
//! has not renewed within the renew deadline ([`Term`]), which is shorter
//! than the lease duration, so it has stopped before any standby can count
//! the lease as expired. [`Leading`] is the loop around it: it competes,
//! runs the leader's work while it holds the Lease, and fences it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, Error};
use tokio::time::Instant;

mod leading;

pub use leading::Leading;

/// Pause before re-reading the Lease after a conflicting write.
const CONFLICT_PAUSE: Duration = Duration::from_millis(50);

/// The timings of the election (see `[leader_election]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a lease holds without renewal, counted from its last observed change.
    pub lease_duration: Duration,
    /// How long a leader goes on without a successful renewal; shorter than `lease_duration`.
    pub renew_deadline: Duration,
    /// Pause between attempts.
    pub retry_period: Duration,
}

impl Timing {
    /// How long a leader that passed its renew deadline waits for its work to
    /// end after aborting it: half the margin left before the lease can expire
    /// for another replica.
    pub fn abort_wait(&self) -> Duration {
        self.lease_duration.saturating_sub(self.renew_deadline) / 2
    }
}

/// The fields of the Lease the election reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Who holds it (`None`: released or never held).
    pub holder: Option<String>,
    /// How long it holds without renewal, as its holder wrote it.
    pub duration: Duration,
    /// How many times it changed hands.
    pub transitions: i32,
    /// When the current holder acquired it (informational, never compared).
    pub acquire_time: Option<MicroTime>,
}

impl Record {
    /// The record of `lease`; a missing duration counts as `default`.
    pub fn of(lease: &Lease, default: Duration) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Self {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            duration: spec
                .lease_duration_seconds
                .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
                .unwrap_or(default),
            transitions: spec.lease_transitions.unwrap_or(0),
            acquire_time: spec.acquire_time,
        }
    }
}

/// What this replica last saw of the Lease, and when it saw it change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// `metadata.resourceVersion`: any write changes it.
    pub version: String,
    pub record: Record,
    /// When this process first saw `version` (its own monotonic clock).
    pub at: Instant,
}

/// `prev` updated with the Lease seen at `now` as `version`: the observation
/// time moves only when the version changes.
pub fn observe(prev: Option<Observed>, version: &str, record: Record, now: Instant) -> Observed {
    match prev {
        Some(prev) if prev.version == version => Observed { record, ..prev },
        _ => Observed {
            version: version.to_string(),
            record,
            at: now,
        },
    }
}

/// Whether the lease seen in `observed` has expired at `now`: it has not
/// changed for longer than its duration, by this process's clock.
pub fn expired(observed: &Observed, now: Instant) -> bool {
    now.saturating_duration_since(observed.at) > observed.record.duration
}

/// What to do with the Lease as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// This replica holds it: renew (acquire time and transitions kept).
    Renew,
    /// Nobody holds it, or its holder let it expire: take it over.
    TakeOver,
    /// Another replica holds it and it has not expired.
    Standby { holder: String },
}

/// The step for `identity` given what it observed, at `now`.
pub fn step(observed: &Observed, identity: &str, now: Instant) -> Step {
    match &observed.record.holder {
        Some(holder) if holder == identity => Step::Renew,
        Some(holder) if !expired(observed, now) => Step::Standby {
            holder: holder.clone(),
        },
        _ => Step::TakeOver,
    }
}

/// What one attempt to acquire or renew gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// This replica holds the lease; `sent` is when the successful write was
    /// sent, the earliest another replica can have seen it.
    Holds { sent: Instant },
    /// Another replica holds it.
    Standby { holder: Option<String> },
    /// The attempt failed or timed out: nothing is known.
    Failed,
}

/// What the replica does after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Start the leader's work.
    Start,
    /// Keep leading (renewed, or failed within the renew deadline).
    Keep,
    /// Stop all writes at once and compete again as a standby.
    Stop(StopReason),
    /// Stay a standby.
    Wait,
}

/// Why a leader stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// No successful renewal within the renew deadline.
    DeadlinePassed,
    /// The Lease names another holder.
    Lost,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::DeadlinePassed => "no successful renewal within the renew deadline",
            Self::Lost => "the Lease names another holder",
        })
    }
}

/// A leader's term: when it last renewed, hence when it must stop writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    /// When the last successful renewal (or the acquisition) was sent.
    pub renewed: Instant,
}

impl Term {
    /// When the leader must have stopped writing without another renewal.
    pub fn deadline(&self, timing: &Timing) -> Instant {
        self.renewed + timing.renew_deadline
    }
}

/// The election state machine: `term` (leading or not) and the result of an
/// attempt at `now` give the transition and the new term.
pub fn transition(
    term: Option<Term>,
    attempt: &Attempt,
    now: Instant,
    timing: &Timing,
) -> (Transition, Option<Term>) {
    match (term, attempt) {
        (None, Attempt::Holds { sent }) => (Transition::Start, Some(Term { renewed: *sent })),
        (None, _) => (Transition::Wait, None),
        (Some(_), Attempt::Holds { sent }) => (Transition::Keep, Some(Term { renewed: *sent })),
        (Some(_), Attempt::Standby { .. }) => (Transition::Stop(StopReason::Lost), None),
        (Some(term), Attempt::Failed) if now >= term.deadline(timing) => {
            (Transition::Stop(StopReason::DeadlinePassed), None)
        }
        (Some(term), Attempt::Failed) => (Transition::Keep, Some(term)),
    }
}

/// When the attempt starting at `now` must give up: a leader's renew
/// deadline, a standby's `now + renew_deadline`.
pub fn attempt_deadline(term: Option<Term>, now: Instant, timing: &Timing) -> Instant {
    match term {
        Some(term) => term.deadline(timing),
        None => now + timing.renew_deadline,
    }
}

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    /// The attempt did not finish before its deadline.
    #[error(
        "reading or writing Lease {lease} took longer than {after:?} (fix: check the connection to the control plane)"
    )]
    Timeout { lease: String, after: Duration },
    /// The control plane refused or failed a request.
    #[error("reading or writing Lease {lease}: {source}")]
    Api {
        lease: String,
        #[source]
        source: Error,
    },
}

/// One replica's view of the lease.
pub struct Elector {
    api: Api<Lease>,
    namespaces: Api<Namespace>,
    namespace: String,
    name: String,
    identity: String,
    timing: Timing,
    observed: Option<Observed>,
}

impl Elector {
    /// An elector for lease `namespace/name` as `identity`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: Timing,
    ) -> Self {
        Self {
            api: Api::namespaced(client.clone(), namespace),
            namespaces: Api::all(client),
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            timing,
            observed: None,
        }
    }

    /// The timings.
    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// What this replica last saw of the Lease.
    pub fn observed(&self) -> Option<&Observed> {
        self.observed.as_ref()
    }

    /// One attempt to acquire or renew the lease, given up at `deadline`; a
    /// conflicting write (409) is re-read and decided again within it.
    pub async fn try_lead(&mut self, deadline: Instant) -> Result<Attempt, ElectionError> {
        let started = Instant::now();
        match tokio::time::timeout_at(deadline, self.attempt()).await {
            Ok(Ok(attempt)) => Ok(attempt),
            Ok(Err(source)) => Err(ElectionError::Api {
                lease: self.lease(),
                source,
            }),
            Err(_) => Err(ElectionError::Timeout {
                lease: self.lease(),
                after: deadline.saturating_duration_since(started),
            }),
        }
    }

    async fn attempt(&mut self) -> Result<Attempt, Error> {
        loop {
            let Some(mut lease) = self.api.get_opt(&self.name).await? else {
                self.ensure_namespace().await?;
                let now = Timestamp::now();
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(now, now, 0)),
                };
                let sent = Instant::now();
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(created) => return Ok(self.wrote(&created, sent)),
                    Err(Error::Api(e)) if e.code == 409 => {
                        tokio::time::sleep(CONFLICT_PAUSE).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            };
            let now = Instant::now();
            let version = lease.metadata.resource_version.clone().unwrap_or_default();
            let record = Record::of(&lease, self.timing.lease_duration);
            let observed = observe(self.observed.take(), &version, record, now);
            let step = step(&observed, &self.identity, now);
            let record = observed.record.clone();
            self.observed = Some(observed);
            let wall = Timestamp::now();
            let spec = match step {
                Step::Standby { holder } => {
                    return Ok(Attempt::Standby {
                        holder: Some(holder),
                    });
                }
                Step::Renew => {
                    let acquired = record.acquire_time.map(|t| t.0).unwrap_or(wall);
                    self.spec(acquired, wall, record.transitions)
                }
                Step::TakeOver => self.spec(wall, wall, record.transitions.saturating_add(1)),
            };
            lease.spec = Some(spec);
            let sent = Instant::now();
            match self
                .api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
            {
                Ok(written) => return Ok(self.wrote(&written, sent)),
                // Someone wrote since the read (another replica, or our own
                // earlier write whose answer was lost): read again.
                Err(Error::Api(e)) if e.code == 409 => {
                    tracing::debug!(lease = %self.lease(), "lease write conflicted; re-reading");
                    tokio::time::sleep(CONFLICT_PAUSE).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Records our own successful write sent at `sent`.
    fn wrote(&mut self, lease: &Lease, sent: Instant) -> Attempt {
        self.observed = Some(Observed {
            version: lease.metadata.resource_version.clone().unwrap_or_default(),
            record: Record::of(lease, self.timing.lease_duration),
            at: sent,
        });
        Attempt::Holds { sent }
    }

    /// Gives the lease up if this replica holds it, so another takes over at once.
    pub async fn release(&self) -> Result<(), Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }

    fn lease(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn spec(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(i32::MAX),
            ),
            // Informational: no replica compares these across hosts.
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    async fn ensure_namespace(&self) -> Result<(), Error> {
        if self.namespaces.get_opt(&self.namespace).await?.is_some() {
            return Ok(());
        }
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(self.namespace.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        match self.namespaces.create(&PostParams::default(), &ns).await {
            Ok(_) => Ok(()),
            Err(Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests;
