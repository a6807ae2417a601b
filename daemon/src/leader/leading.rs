//! The leader's side of the election: [`Leading::compete`] competes for the
//! Lease until shutdown, starts the controllers and push syncers on winning
//! it, and fences and aborts them the moment the renew deadline passes.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tmc_syncer::SyncedKind;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Attempt, Elector, StopReason, Term, Timing, Transition, attempt_deadline, transition};
use crate::controller;
use crate::placement::watch as stores;
use crate::state::State;
use crate::syncers;

/// What the leader runs, and the election around it.
pub struct Leading {
    pub state: Arc<State>,
    /// Reads and the Lease: never fenced.
    pub client: Client,
    /// The leader's writes: through the state's fence.
    pub work_client: Client,
    pub kinds: Vec<SyncedKind>,
    pub stores: Arc<stores::Stores>,
}

/// The leader's running work.
struct Work {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl Leading {
    /// Competes for the lease until `shutdown`; runs the leader's work while
    /// holding it, and stops it at once when the renew deadline passes.
    pub async fn compete(self, mut shutdown: watch::Receiver<bool>) {
        let le = &self.state.config.leader_election;
        if !le.enabled {
            self.start_leading();
            let work = self.spawn_work();
            let _ = shutdown.wait_for(|s| *s).await;
            self.stop_gracefully(work).await;
            return;
        }
        let timing = Timing {
            lease_duration: le.lease_duration(),
            renew_deadline: le.renew_deadline(),
            retry_period: le.retry_period(),
        };
        let mut elector = Elector::new(
            self.client.clone(),
            &le.lease_namespace,
            le.lease_name.get_ref(),
            &self.state.identity,
            timing,
        );
        let mut work: Option<Work> = None;
        let mut term: Option<Term> = None;
        loop {
            let now = Instant::now();
            let attempt = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                res = elector.try_lead(attempt_deadline(term, now, &timing)) => match res {
                    Ok(attempt) => attempt,
                    Err(err) => {
                        tracing::warn!(error = %err, leading = term.is_some(), "lease attempt failed");
                        Attempt::Failed
                    }
                },
            };
            let (next, new_term) = transition(term, &attempt, Instant::now(), &timing);
            term = new_term;
            match next {
                Transition::Start => {
                    tracing::info!(identity = %self.state.identity, "acquired the lease: leading");
                    self.start_leading();
                    work = Some(self.spawn_work());
                }
                Transition::Stop(reason) => {
                    self.fence(work.take(), reason, timing.abort_wait()).await;
                }
                Transition::Keep | Transition::Wait => {}
            }
            // Next attempt after the retry period; a leader wakes at its
            // renew deadline whatever happens.
            let mut wake = Instant::now() + timing.retry_period;
            if let Some(term) = term {
                wake = wake.min(term.deadline(&timing));
            }
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                _ = tokio::time::sleep_until(wake) => {}
            }
            if let Some(t) = term
                && Instant::now() >= t.deadline(&timing)
            {
                term = None;
                self.fence(work.take(), StopReason::DeadlinePassed, timing.abort_wait())
                    .await;
            }
        }
        if let Some(work) = work.take() {
            self.stop_gracefully(work).await;
            let released = tokio::time::timeout(timing.renew_deadline, elector.release()).await;
            match released {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "releasing the lease failed; another replica takes over when it expires")
                }
                Err(_) => tracing::warn!(
                    "releasing the lease timed out; another replica takes over when it expires"
                ),
            }
        }
        self.state.set_leader(false);
    }

    /// Opens the fence and records leadership.
    fn start_leading(&self) {
        self.state.fence.open();
        self.state.set_leader(true);
    }

    /// Stops every write at once: closes the fence (refusing any write still
    /// attempted), then aborts the work and waits at most `wait` for it.
    async fn fence(&self, work: Option<Work>, reason: StopReason, wait: Duration) {
        self.state.fence.close();
        self.state.set_leader(false);
        self.state.metrics.leadership_stops.inc();
        tracing::warn!(identity = %self.state.identity, %reason, "stopped leading: writes fenced, controllers and syncers aborted; competing again as a standby");
        let Some(work) = work else { return };
        let _ = work.stop.send(true);
        work.handle.abort();
        if tokio::time::timeout(wait, work.handle).await.is_err() {
            tracing::warn!(wait = ?wait, "the aborted work did not end in time (its writes stay fenced)");
        }
        self.state.clear_syncers();
    }

    /// Shutdown: lets the work finish gracefully, then closes the fence.
    async fn stop_gracefully(&self, work: Work) {
        let _ = work.stop.send(true);
        let _ = work.handle.await;
        self.state.fence.close();
        self.state.set_leader(false);
    }

    /// Starts the controllers and the push syncers; they stop when the
    /// work's `stop` turns true, or at once when its task is aborted.
    fn spawn_work(&self) -> Work {
        let (stop_tx, stop) = watch::channel(false);
        let state = self.state.clone();
        let client = self.work_client.clone();
        let kinds = self.kinds.clone();
        let stores = self.stores.clone();
        let handle = tokio::spawn(async move {
            let controllers = controller::run(
                state.clone(),
                client.clone(),
                kinds.clone(),
                &stores,
                stop.clone(),
            );
            let push = syncers::run_push(state, client, kinds, stop);
            futures::join!(controllers, push);
        });
        Work {
            stop: stop_tx,
            handle,
        }
    }
}
