//! Status reports upstream, and the window that coalesces changes of the
//! copy's `.status` alone.

use std::sync::PoisonError;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::core::DynamicObject;
use serde_json::Value;
use tmc_api::decision::TargetStatus;
use tmc_api::protocol::TargetRecord;
use tokio::time::Instant;
use tracing::warn;

use super::cache::Side;
use super::{Engine, ObjectKey, Outcome};
use crate::error::{Error, Result, is_object_not_found};
use crate::gate::GATE_RECHECK;

/// Default of [`Engine::status_coalesce`]: after a status report, changes of
/// the copy's `.status` alone wait this long, so that a rollout's several
/// status updates make one or two kcp writes instead of one each.
pub(crate) const STATUS_COALESCE: Duration = Duration::from_secs(2);

/// The first report of a new copy waits this long (at most the coalescing
/// window), so that it carries the status the cluster's controllers give
/// the new object within moments: one kcp write (and one aggregated status
/// write by tmcd) instead of two. Nothing waits on a first report but a
/// move's create-before-delete, which needs the later ready status anyway.
pub(crate) const FIRST_REPORT_DELAY: Duration = Duration::from_millis(500);

impl Engine {
    /// Reports `err` upstream, keeping what was last applied.
    pub(super) async fn report_error(
        &self,
        key: &ObjectKey,
        up: &Api<DynamicObject>,
        object: &Value,
        err: &Error,
    ) {
        let mut status = TargetRecord::from_value(object, self.target())
            .recorded
            .status
            .unwrap_or_default();
        status.error = Some(err.to_string());
        if let Err(report_err) = self.report(key, up, object, status).await {
            warn!(object = %self.describe(key), error = %report_err, "could not report the sync error upstream");
        }
    }

    /// Writes the status annotation upstream when it changed. The first
    /// report of a copy waits [`FIRST_REPORT_DELAY`]; a change of the copy's
    /// `.status` alone is held back for `status_coalesce` after the previous
    /// report (the object is looked at again then); a new apply, generation
    /// or error of a copy already reported is reported at once.
    pub(super) async fn report(
        &self,
        key: &ObjectKey,
        up: &Api<DynamicObject>,
        object: &Value,
        status: TargetStatus,
    ) -> Result<Outcome> {
        let record = TargetRecord::from_value(object, self.target());
        let Some(patch) = record.status_patch(&status) else {
            return Ok(Outcome::Done);
        };
        let previous = record.recorded.status;
        let first = previous.is_none() && status.error.is_none();
        let status_only = previous.is_some_and(|previous| {
            previous.applied_hash == status.applied_hash
                && previous.observed_generation == status.observed_generation
                && previous.error == status.error
        });
        let now = Instant::now();
        {
            let mut holds = self
                .report_hold
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let until = if first {
                let delay = FIRST_REPORT_DELAY.min(self.status_coalesce);
                Some(*holds.entry(key.clone()).or_insert(now + delay))
            } else if status_only {
                holds.get(key).copied()
            } else {
                None
            };
            if let Some(until) = until
                && until > now
            {
                return Ok(Outcome::After(until - now));
            }
        }
        if (first || status_only) && self.gate_holds(key, now) {
            return Ok(Outcome::After(GATE_RECHECK));
        }
        match up
            .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(updated) => {
                self.remember(Side::Upstream, key, self.as_stored(updated));
                self.report_hold
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(key.clone(), now + self.status_coalesce);
                self.report_gated
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(key);
                Ok(Outcome::Done)
            }
            // Deleted meanwhile: nothing to report on.
            Err(err) if is_object_not_found(&err, &key.name) => Ok(Outcome::Done),
            Err(err) => Err(Error::upstream(
                format!("report status of {}", self.describe(key)),
                err,
            )),
        }
    }

    /// How many reports the gate holds back now.
    pub(crate) fn reports_held(&self) -> usize {
        self.report_gated
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// True when the report gate holds `key`'s report back, which it does
    /// for at most the gate's `max_hold` from the first time it held it.
    fn gate_holds(&self, key: &ObjectKey, now: Instant) -> bool {
        let Some(gate) = &self.report_gate else {
            return false;
        };
        let mut gated = self
            .report_gated
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !gate.hold() {
            gated.remove(key);
            return false;
        }
        let since = *gated.entry(key.clone()).or_insert(now);
        now.duration_since(since) < gate.max_hold()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;
    use kube::runtime::watcher::Event;
    use serde_json::{Value, json};

    use super::super::test_support::{
        cached_engine, dynamic, engine, fake, fake_upstream_ok, key, live_copy, methods,
        namespace_ensured, placed,
    };
    use super::{FIRST_REPORT_DELAY, STATUS_COALESCE};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use kube::core::DynamicObject;
    use kube::runtime::reflector::store::Writer;

    use crate::copy::build_copy;
    use crate::engine::Outcome;
    use crate::gate::{GATE_RECHECK, ReportGate};
    use tmc_api::decision::TargetStatus;

    /// The bound of the test gate.
    const MAX_HOLD: Duration = Duration::from_secs(30);

    #[tokio::test(start_paused = true)]
    async fn status_only_changes_are_coalesced_but_applies_are_reported_at_once() {
        let (up, up_log) = fake_upstream_ok();
        let (down, down_log) = fake(|_, _| None);
        let engine = engine(up.clone(), down.clone());
        let bare = placed(json!({}));
        let hash = build_copy(&bare, &engine.ctx, None, None, Utc::now())
            .unwrap()
            .hash;
        let reported = |status: Value| {
            let s = TargetStatus {
                applied_hash: hash.clone(),
                observed_generation: Some(1),
                status: Some(status),
                error: None,
                ..TargetStatus::default()
            };
            placed(json!({"status.workload.kcp.io/west": serde_json::to_string(&s).unwrap()}))
        };
        let object = reported(json!({"replicas": 1}));
        let copy_v1 = live_copy(&engine, &bare, json!({"replicas": 1, "readyReplicas": 1}));
        let (engine, mut up_cache, mut down_cache) =
            cached_engine(up, down, Some(&object), Some(&copy_v1));
        namespace_ensured(&engine);
        // No report in the last window: written at once.
        assert_eq!(engine.reconcile(&key()).await.unwrap(), Outcome::Done);
        assert_eq!(methods(&up_log), ["PATCH"]);
        // The watch delivers our report; then the copy's status changes again: held back.
        up_cache.apply_watcher_event(&Event::Apply(dynamic(&reported(
            json!({"replicas": 1, "readyReplicas": 1}),
        ))));
        let mut copy_v2 = copy_v1.clone();
        copy_v2["status"]["availableReplicas"] = json!(1);
        down_cache.apply_watcher_event(&Event::Apply(dynamic(&copy_v2)));
        let outcome = engine.reconcile(&key()).await.unwrap();
        assert!(
            matches!(outcome, Outcome::After(d) if d > Duration::ZERO && d <= STATUS_COALESCE),
            "{outcome:?}"
        );
        assert_eq!(methods(&up_log), ["PATCH"], "held back");
        // Once the window is over, the latest status is written.
        tokio::time::advance(STATUS_COALESCE).await;
        assert_eq!(engine.reconcile(&key()).await.unwrap(), Outcome::Done);
        assert_eq!(methods(&up_log), ["PATCH", "PATCH"]);
        // A new decision (other content) inside the next window is applied and reported at once.
        assert!(down_log.lock().unwrap().is_empty(), "nothing applied yet");
        let mut changed =
            reported(json!({"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}));
        changed["metadata"]["resourceVersion"] = json!("9");
        changed["metadata"]["annotations"]["result.workload.kcp.io/west"] =
            json!("{\"replicas\":2}");
        up_cache.apply_watcher_event(&Event::Apply(dynamic(&changed)));
        // The downstream fake refuses connections: the error is reported at once, too.
        assert!(engine.reconcile(&key()).await.is_err());
        assert_eq!(methods(&up_log), ["PATCH", "PATCH", "PATCH"]);
    }

    /// A gate that holds while `open` is false.
    struct Gate(Arc<AtomicBool>);
    impl ReportGate for Gate {
        fn hold(&self) -> bool {
            !self.0.load(Ordering::SeqCst)
        }
        fn max_hold(&self) -> Duration {
            MAX_HOLD
        }
    }

    /// An engine whose copy is applied and whose first report is due (its
    /// delay over), behind a gate that holds while `open` is false; the
    /// upstream request log and the caches' writers (keep them alive).
    async fn first_report_due(
        open: Arc<AtomicBool>,
    ) -> (
        super::Engine,
        Arc<Mutex<Vec<String>>>,
        (Writer<DynamicObject>, Writer<DynamicObject>),
    ) {
        let (up, up_log) = fake_upstream_ok();
        let (down, _) = fake(|_, _| None);
        let engine = engine(up.clone(), down.clone());
        let object = placed(json!({}));
        let copy = live_copy(&engine, &object, json!({"observedGeneration": 1}));
        let (mut engine, up_cache, down_cache) =
            cached_engine(up, down, Some(&object), Some(&copy));
        namespace_ensured(&engine);
        engine.report_gate = Some(Arc::new(Gate(open)));
        // The first pass starts the first-report delay.
        assert_eq!(
            engine.reconcile(&key()).await.unwrap(),
            Outcome::After(FIRST_REPORT_DELAY)
        );
        tokio::time::advance(FIRST_REPORT_DELAY).await;
        (engine, up_log, (up_cache, down_cache))
    }

    #[tokio::test(start_paused = true)]
    async fn the_gate_holds_a_first_report_until_it_opens() {
        let open = Arc::new(AtomicBool::new(false));
        let (engine, up_log, _caches) = first_report_due(open.clone()).await;
        assert_eq!(
            engine.reconcile(&key()).await.unwrap(),
            Outcome::After(GATE_RECHECK)
        );
        assert!(methods(&up_log).is_empty(), "held by the gate: {up_log:?}");
        open.store(true, Ordering::SeqCst);
        assert_eq!(engine.reconcile(&key()).await.unwrap(), Outcome::Done);
        assert_eq!(methods(&up_log), ["PATCH"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_gate_that_never_opens_holds_a_report_no_longer_than_its_bound() {
        let (engine, up_log, _caches) = first_report_due(Arc::new(AtomicBool::new(false))).await;
        let mut held = Duration::ZERO;
        while let Outcome::After(d) = engine.reconcile(&key()).await.unwrap() {
            assert!(held <= MAX_HOLD, "held {held:?}, past the bound");
            tokio::time::advance(d).await;
            held += d;
        }
        assert!(held >= MAX_HOLD, "released after {held:?}");
        assert_eq!(methods(&up_log), ["PATCH"]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_report_of_a_copy_waits_for_its_first_status() {
        // The helper checks the wait; an open gate then holds nothing.
        let (engine, up_log, _caches) = first_report_due(Arc::new(AtomicBool::new(true))).await;
        assert!(methods(&up_log).is_empty(), "held back: {up_log:?}");
        assert_eq!(engine.reconcile(&key()).await.unwrap(), Outcome::Done);
        assert_eq!(methods(&up_log), ["PATCH"]);
    }
}
