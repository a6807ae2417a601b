//! The election state machine on a fake clock: instants are a fixed base
//! plus offsets, nothing sleeps.

use super::*;

const TIMING: Timing = Timing {
    lease_duration: Duration::from_secs(6),
    renew_deadline: Duration::from_secs(4),
    retry_period: Duration::from_secs(1),
};

fn at(base: Instant, ms: u64) -> Instant {
    base + Duration::from_millis(ms)
}

fn record(holder: Option<&str>) -> Record {
    Record {
        holder: holder.map(str::to_string),
        duration: TIMING.lease_duration,
        transitions: 3,
        acquire_time: None,
    }
}

#[test]
fn the_observation_time_moves_only_when_the_version_changes() {
    let t0 = Instant::now();
    let first = observe(None, "1", record(Some("a")), at(t0, 0));
    assert_eq!(first.at, t0);
    let same = observe(Some(first.clone()), "1", record(Some("a")), at(t0, 5_000));
    assert_eq!(same.at, t0, "an unchanged Lease keeps its first sighting");
    let changed = observe(Some(same), "2", record(Some("a")), at(t0, 5_500));
    assert_eq!(changed.at, at(t0, 5_500));
}

#[test]
fn a_standby_takes_over_only_after_the_lease_stayed_unchanged_for_its_duration() {
    let t0 = Instant::now();
    let seen = observe(None, "7", record(Some("a")), t0);
    assert_eq!(
        step(&seen, "b", at(t0, 6_000)),
        Step::Standby { holder: "a".into() },
        "exactly the duration: not yet"
    );
    assert_eq!(step(&seen, "b", at(t0, 6_001)), Step::TakeOver);
    // The holder renewed just before: counted from the new sighting.
    let renewed = observe(Some(seen), "8", record(Some("a")), at(t0, 5_900));
    assert_eq!(
        step(&renewed, "b", at(t0, 11_000)),
        Step::Standby { holder: "a".into() }
    );
    assert_eq!(step(&renewed, "b", at(t0, 11_901)), Step::TakeOver);
}

#[test]
fn a_released_lease_is_taken_at_once_and_our_own_is_renewed() {
    let t0 = Instant::now();
    let released = observe(None, "3", record(None), t0);
    assert_eq!(step(&released, "b", t0), Step::TakeOver);
    let ours = observe(None, "3", record(Some("b")), t0);
    assert_eq!(step(&ours, "b", at(t0, 60_000)), Step::Renew);
}

#[test]
fn the_lease_timestamps_are_never_read_whatever_the_writers_clock() {
    // The holder's clock is an hour behind, or an hour ahead: the record
    // the election reads is the same, so is the decision.
    let lease = |renew: i64| Lease {
        metadata: ObjectMeta::default(),
        spec: Some(LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(6),
            renew_time: Some(MicroTime(Timestamp::from_second(renew).expect("ts"))),
            ..Default::default()
        }),
    };
    let now = Timestamp::now().as_second();
    let behind = Record::of(&lease(now - 3_600), TIMING.lease_duration);
    let ahead = Record::of(&lease(now + 3_600), TIMING.lease_duration);
    assert_eq!(behind, ahead);
    let t0 = Instant::now();
    let seen = observe(None, "1", behind, t0);
    assert_eq!(
        step(&seen, "b", at(t0, 1_000)),
        Step::Standby { holder: "a".into() }
    );
}

#[test]
fn a_leader_keeps_leading_through_failures_until_its_renew_deadline() {
    let t0 = Instant::now();
    let term = Some(Term { renewed: t0 });
    let (next, kept) = transition(term, &Attempt::Failed, at(t0, 3_999), &TIMING);
    assert_eq!(next, Transition::Keep);
    assert_eq!(kept, term, "a failure does not extend the term");
    let (next, gone) = transition(term, &Attempt::Failed, at(t0, 4_000), &TIMING);
    assert_eq!(next, Transition::Stop(StopReason::DeadlinePassed));
    assert_eq!(gone, None);
    let (next, renewed) = transition(
        term,
        &Attempt::Holds {
            sent: at(t0, 3_000),
        },
        at(t0, 3_200),
        &TIMING,
    );
    assert_eq!(next, Transition::Keep);
    assert_eq!(renewed.map(|t| t.deadline(&TIMING)), Some(at(t0, 7_000)));
}

#[test]
fn a_leader_that_sees_another_holder_stops_and_a_standby_starts_on_acquiring() {
    let t0 = Instant::now();
    let standby = Attempt::Standby {
        holder: Some("a".into()),
    };
    let (next, _) = transition(Some(Term { renewed: t0 }), &standby, t0, &TIMING);
    assert_eq!(next, Transition::Stop(StopReason::Lost));
    assert_eq!(
        transition(None, &standby, t0, &TIMING),
        (Transition::Wait, None)
    );
    assert_eq!(
        transition(None, &Attempt::Failed, t0, &TIMING),
        (Transition::Wait, None)
    );
    let (next, term) = transition(None, &Attempt::Holds { sent: t0 }, at(t0, 200), &TIMING);
    assert_eq!(next, Transition::Start);
    assert_eq!(term, Some(Term { renewed: t0 }));
}

#[test]
fn every_attempt_is_bounded() {
    let t0 = Instant::now();
    let term = Some(Term {
        renewed: at(t0, 1_000),
    });
    assert_eq!(
        attempt_deadline(term, at(t0, 2_000), &TIMING),
        at(t0, 5_000)
    );
    assert_eq!(attempt_deadline(None, t0, &TIMING), at(t0, 4_000));
    assert_eq!(TIMING.abort_wait(), Duration::from_secs(1));
}

/// One replica of the simulation.
struct Replica {
    name: &'static str,
    term: Option<Term>,
    observed: Option<Observed>,
    next_attempt: u64,
    started: Option<u64>,
    stopped: Option<u64>,
}

/// Two replicas on a fake clock (ms) sharing one Lease; `a` leads and is cut
/// off from the control plane at `cut`; `b` polls with a phase offset.
/// Returns (when a stopped, when b acquired).
fn simulate(cut: u64, phase: u64, timing: &Timing) -> (u64, u64) {
    let t0 = Instant::now();
    let retry = timing.retry_period.as_millis() as u64;
    let mut version = 1u64;
    let mut lease = record(Some("a"));
    let mut a = Replica {
        name: "a",
        term: Some(Term { renewed: t0 }),
        observed: None,
        next_attempt: retry,
        started: Some(0),
        stopped: None,
    };
    let mut b = Replica {
        name: "b",
        term: None,
        observed: None,
        next_attempt: phase,
        started: None,
        stopped: None,
    };
    for ms in 0..60_000u64 {
        let now = at(t0, ms);
        for (replica, reachable) in [(&mut a, ms < cut), (&mut b, true)] {
            // The loop wakes at the renew deadline even while an attempt hangs.
            let deadline_passed = replica.term.is_some_and(|t| now >= t.deadline(&TIMING));
            if ms != replica.next_attempt && !deadline_passed {
                continue;
            }
            let attempt = if !reachable || ms != replica.next_attempt {
                Attempt::Failed
            } else {
                let seen = observe(
                    replica.observed.take(),
                    &version.to_string(),
                    lease.clone(),
                    now,
                );
                let decided = step(&seen, replica.name, now);
                replica.observed = Some(seen);
                match decided {
                    Step::Standby { holder } => Attempt::Standby {
                        holder: Some(holder),
                    },
                    Step::Renew | Step::TakeOver => {
                        version += 1;
                        lease.holder = Some(replica.name.to_string());
                        Attempt::Holds { sent: now }
                    }
                }
            };
            if ms == replica.next_attempt {
                replica.next_attempt = ms + retry;
            }
            let (next, term) = transition(replica.term, &attempt, now, timing);
            replica.term = term;
            match next {
                Transition::Start => replica.started = Some(ms),
                Transition::Stop(_) => replica.stopped = Some(ms),
                Transition::Keep | Transition::Wait => {}
            }
        }
        if let (Some(stopped), Some(started)) = (a.stopped, b.started) {
            return (stopped, started);
        }
    }
    panic!(
        "no takeover within a minute: a stopped {:?}, b started {:?}",
        a.stopped, b.started
    );
}

#[test]
fn a_cut_off_leader_has_stopped_and_aborted_its_work_before_the_standby_takes_over() {
    let abort = TIMING.abort_wait().as_millis() as u64;
    for cut in [1, 500, 999, 1_000, 1_001, 2_345, 7_000] {
        for phase in [0, 1, 250, 500, 999] {
            let (stopped, started) = simulate(cut, phase, &TIMING);
            assert!(
                stopped + abort < started,
                "cut {cut} phase {phase}: a stopped at {stopped} (+{abort} abort wait), b started at {started}"
            );
            // And the takeover is not needlessly late: within a lease
            // duration of b's first sighting of a's last renewal, plus a
            // retry (its next attempt), of the cut.
            assert!(
                started <= cut + 6_000 + 2 * 1_000,
                "cut {cut} phase {phase}: b started at {started}"
            );
        }
    }
}

#[test]
fn the_simulation_catches_a_renew_deadline_longer_than_the_lease() {
    // The check above is not vacuous: with a renew deadline past the lease
    // duration (what check-config refuses), the old leader is still leading
    // when the standby takes over.
    let unsafe_timing = Timing {
        renew_deadline: TIMING.lease_duration + Duration::from_secs(2),
        ..TIMING
    };
    let abort = 0;
    let overlaps = [1, 500, 2_345]
        .iter()
        .flat_map(|cut| [0, 250, 999].map(|phase| (*cut, phase)))
        .filter(|(cut, phase)| {
            let (stopped, started) = simulate(*cut, *phase, &unsafe_timing);
            stopped + abort >= started
        })
        .count();
    assert!(overlaps > 0);
}

/// A fake API server for one Lease: answers GET with the stored lease, PUT
/// with 409 for the first `conflicts` writes (another write landed, bumping
/// the version), then stores it.
mod fake {
    use std::sync::{Arc, Mutex};

    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::json;

    use super::*;

    pub struct Server {
        pub lease: Mutex<Lease>,
        pub conflicts: Mutex<u32>,
        pub puts: Mutex<u32>,
    }

    fn reply(status: StatusCode, body: serde_json::Value) -> Response<Body> {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string().into_bytes()))
            .expect("response")
    }

    pub fn client(server: Arc<Server>) -> Client {
        let svc = tower::service_fn(move |req: Request<Body>| {
            let server = server.clone();
            async move {
                let method = req.method().clone();
                let bytes = req.into_body().collect_bytes().await?;
                let mut lease = server.lease.lock().expect("lock");
                let answer = if method == Method::GET {
                    reply(StatusCode::OK, serde_json::to_value(&*lease)?)
                } else if method == Method::PUT {
                    *server.puts.lock().expect("lock") += 1;
                    let mut conflicts = server.conflicts.lock().expect("lock");
                    let sent: Lease = serde_json::from_slice(&bytes)?;
                    let current = lease.metadata.resource_version.clone().unwrap_or_default();
                    if *conflicts > 0 {
                        // Someone else's write (here: the holder's own, answered too late) bumped the version.
                        *conflicts -= 1;
                        let next = current.parse::<u64>().unwrap_or(0) + 1;
                        lease.metadata.resource_version = Some(next.to_string());
                        reply(
                            StatusCode::CONFLICT,
                            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                   "message": "the object has been modified", "reason": "Conflict", "code": 409}),
                        )
                    } else if sent.metadata.resource_version.as_deref() != Some(current.as_str()) {
                        reply(
                            StatusCode::CONFLICT,
                            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                   "message": "stale resourceVersion", "reason": "Conflict", "code": 409}),
                        )
                    } else {
                        let next = current.parse::<u64>().unwrap_or(0) + 1;
                        *lease = sent;
                        lease.metadata.resource_version = Some(next.to_string());
                        reply(StatusCode::OK, serde_json::to_value(&*lease)?)
                    }
                } else {
                    reply(StatusCode::METHOD_NOT_ALLOWED, json!({}))
                };
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(answer)
            }
        });
        Client::new(svc, "default")
    }

    pub fn held_by(holder: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("tmcd".into()),
                namespace: Some("default".into()),
                resource_version: Some("1".into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(6),
                lease_transitions: Some(2),
                ..Default::default()
            }),
        }
    }
}

#[tokio::test]
async fn a_conflict_on_our_own_renewal_is_re_read_and_retried_not_taken_as_lost() {
    let server = std::sync::Arc::new(fake::Server {
        lease: std::sync::Mutex::new(fake::held_by("me")),
        conflicts: std::sync::Mutex::new(2),
        puts: std::sync::Mutex::new(0),
    });
    let mut elector = Elector::new(
        fake::client(server.clone()),
        "default",
        "tmcd",
        "me",
        TIMING,
    );
    let before = Instant::now();
    let attempt = elector
        .try_lead(Instant::now() + TIMING.renew_deadline)
        .await
        .expect("renewed");
    assert!(
        matches!(attempt, Attempt::Holds { sent } if sent >= before),
        "{attempt:?}"
    );
    assert_eq!(
        *server.puts.lock().expect("lock"),
        3,
        "two conflicts, then the renewal"
    );
    let lease = server.lease.lock().expect("lock").clone();
    let spec = lease.spec.expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("me"));
    assert_eq!(
        spec.lease_transitions,
        Some(2),
        "a renewal, not a transition"
    );
}

#[tokio::test]
async fn a_standby_does_not_write_a_lease_held_by_another() {
    let server = std::sync::Arc::new(fake::Server {
        lease: std::sync::Mutex::new(fake::held_by("other")),
        conflicts: std::sync::Mutex::new(0),
        puts: std::sync::Mutex::new(0),
    });
    let mut elector = Elector::new(
        fake::client(server.clone()),
        "default",
        "tmcd",
        "me",
        TIMING,
    );
    let attempt = elector
        .try_lead(Instant::now() + TIMING.renew_deadline)
        .await
        .expect("read");
    assert_eq!(
        attempt,
        Attempt::Standby {
            holder: Some("other".into())
        }
    );
    assert_eq!(*server.puts.lock().expect("lock"), 0);
    assert!(elector.observed().is_some());
}

#[tokio::test]
async fn an_attempt_that_hangs_gives_up_at_its_deadline() {
    let svc = tower::service_fn(|_req: http::Request<kube::client::Body>| async {
        std::future::pending::<Result<http::Response<kube::client::Body>, std::convert::Infallible>>()
            .await
    });
    let mut elector = Elector::new(Client::new(svc, "default"), "default", "tmcd", "me", TIMING);
    let started = std::time::Instant::now();
    let err = elector
        .try_lead(Instant::now() + Duration::from_millis(200))
        .await
        .expect_err("times out");
    assert!(matches!(err, ElectionError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("default/tmcd"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
}
