//! From a decision to the smallest metadata change of the upstream object,
//! including create-before-delete movement.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use tmc_api::decision::{
    STATE_SYNC, TargetResult, deletion_annotation, finalizer, result_annotation, state_label,
    status_annotation,
};

use tmc_api::protocol::Recorded;

use super::assignment::applied;

/// Metadata edits that record a decision; empty when the object already says it all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Label key -> new value (`None`: remove).
    pub labels: BTreeMap<String, Option<String>>,
    /// Annotation key -> new value (`None`: remove).
    pub annotations: BTreeMap<String, Option<String>>,
    /// The full new finalizer list, when it changes.
    pub finalizers: Option<Vec<String>>,
    /// Targets asked to remove their copy by this plan.
    pub deleting: Vec<String>,
    /// Old holders kept until every newly chosen target has applied its copy.
    pub waiting: Vec<String>,
    /// Kept targets whose replicas go down only once the targets gaining
    /// replicas have them available (scale up before scale down).
    pub holding: Vec<String>,
    /// Chosen targets (other than `holding`) whose copy is not yet in place
    /// for their current result: what `waiting` and `holding` wait on.
    pub unready: Vec<String>,
    /// Deleted SyncTargets whose protocol keys and finalizer this plan removes.
    pub forgotten: Vec<String>,
}

impl Plan {
    /// True when nothing needs writing.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty() && self.finalizers.is_none()
    }

    /// Applies the edits to an object's `labels`, `annotations` and
    /// `finalizers`, as the write does (tests replay plans with it).
    #[cfg(test)]
    pub(crate) fn apply_to(
        &self,
        labels: &mut BTreeMap<String, String>,
        annotations: &mut BTreeMap<String, String>,
        finalizers: &mut Vec<String>,
    ) {
        for (edits, map) in [(&self.labels, labels), (&self.annotations, annotations)] {
            for (k, v) in edits {
                match v {
                    Some(v) => map.insert(k.clone(), v.clone()),
                    None => map.remove(k),
                };
            }
        }
        if let Some(f) = &self.finalizers {
            finalizers.clone_from(f);
        }
    }

    /// A JSON merge patch of the edits, guarded by `resource_version` (a
    /// concurrent change makes the write fail with a conflict and re-queue).
    pub fn merge_patch(&self, resource_version: Option<&str>) -> Value {
        let mut meta = Map::new();
        if let Some(rv) = resource_version {
            meta.insert("resourceVersion".into(), json!(rv));
        }
        if !self.labels.is_empty() {
            meta.insert("labels".into(), json!(self.labels));
        }
        if !self.annotations.is_empty() {
            meta.insert("annotations".into(), json!(self.annotations));
        }
        if let Some(finalizers) = &self.finalizers {
            meta.insert("finalizers".into(), json!(finalizers));
        }
        json!({ "metadata": meta })
    }
}

/// Replicas a target holds now: its recorded result's, while it holds the
/// workload (0 otherwise).
fn held_replicas(rec: &Recorded) -> u32 {
    if !rec.holds() {
        return 0;
    }
    rec.result.as_ref().and_then(|r| r.replicas).unwrap_or(0)
}

/// Edits that keep `target` (recorded as `rec`) holding a copy: a removal
/// asked before is withdrawn (with the report of the removed copy), and the
/// target's finalizer is in `finalizers`.
pub fn keep_target(out: &mut Plan, rec: &Recorded, target: &str, finalizers: &mut Vec<String>) {
    if rec.deleting {
        out.annotations.insert(deletion_annotation(target), None);
        if rec.status_raw {
            out.annotations.insert(status_annotation(target), None);
        }
    }
    let fin = finalizer(target);
    if !finalizers.contains(&fin) {
        finalizers.push(fin);
    }
}

/// Two results ask for the same copy (the policy generation alone does not count).
pub fn same_decision(a: &TargetResult, b: &TargetResult) -> bool {
    a.replicas == b.replicas
        && a.labels == b.labels
        && a.annotations == b.annotations
        && a.placement == b.placement
}

/// The targets the object names that are not simply Ready candidates.
#[derive(Debug, Clone, Copy)]
pub struct TargetSets<'a> {
    /// Not Ready, within the eviction grace period: never asked to delete
    /// (unreachable is no reason).
    pub in_grace: &'a BTreeSet<String>,
    /// SyncTargets confirmed deleted (a GET answered 404): their protocol
    /// keys and finalizer are removed, so an upstream delete never waits on a
    /// syncer that will not come, and a re-created target starts clean.
    pub gone: &'a BTreeSet<String>,
}

/// The plan that makes the object record `chosen` (target -> result), given
/// what it `recorded` and its `finalizers`. Replicas move up before they move
/// down: a kept target that loses replicas keeps its recorded result until
/// every target gaining replicas reports them available. Targets no longer
/// chosen are asked to delete only once every chosen target has
/// [`applied`] its current result at `generation`; an empty choice removes
/// nothing, and neither does a target in grace (see [`TargetSets`]). A
/// withdrawn removal also drops the target's last report, which may describe
/// a copy on its way out. Deleted targets are forgotten.
pub fn plan(
    recorded: &BTreeMap<String, Recorded>,
    finalizers: &[String],
    chosen: &BTreeMap<String, TargetResult>,
    targets: TargetSets<'_>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Result<Plan, serde_json::Error> {
    let mut out = Plan::default();
    let mut new_finalizers = finalizers.to_vec();
    let empty = Recorded::default();
    for target in targets.gone.iter().filter(|t| !chosen.contains_key(*t)) {
        let fin = finalizer(target);
        let rec = recorded.get(target);
        if rec.is_none() && !new_finalizers.contains(&fin) {
            continue;
        }
        new_finalizers.retain(|f| *f != fin);
        if let Some(rec) = rec {
            if rec.state.is_some() {
                out.labels.insert(state_label(target), None);
            }
            if rec.result_raw.is_some() {
                out.annotations.insert(result_annotation(target), None);
            }
            if rec.deleting {
                out.annotations.insert(deletion_annotation(target), None);
            }
            if rec.status_raw {
                out.annotations.insert(status_annotation(target), None);
            }
        }
        out.forgotten.push(target.clone());
    }
    let in_place = |target: &String, result: &TargetResult| {
        let rec = recorded.get(target).unwrap_or(&empty);
        rec.holds()
            && rec
                .result
                .as_ref()
                .is_some_and(|r| same_decision(r, result))
            && applied(rec, generation)
    };
    let shrinks = |target: &String, result: &TargetResult| {
        result.replicas.unwrap_or(0) < recorded.get(target).map_or(0, held_replicas)
    };
    // Until every other chosen target with replicas runs its result, the
    // shrinking ones keep theirs.
    let growth_pending = chosen.iter().any(|(target, result)| {
        result.replicas.unwrap_or(0) > 0 && !shrinks(target, result) && !in_place(target, result)
    });
    for (target, result) in chosen {
        let rec = recorded.get(target).unwrap_or(&empty);
        if rec.state.as_deref() != Some(STATE_SYNC) {
            out.labels
                .insert(state_label(target), Some(STATE_SYNC.to_string()));
        }
        if growth_pending && shrinks(target, result) {
            out.holding.push(target.clone());
        } else {
            if !in_place(target, result) {
                out.unready.push(target.clone());
            }
            if !rec
                .result
                .as_ref()
                .is_some_and(|r| same_decision(r, result))
            {
                out.annotations.insert(
                    result_annotation(target),
                    Some(serde_json::to_string(result)?),
                );
            }
        }
        keep_target(&mut out, rec, target, &mut new_finalizers);
    }
    let all_applied = chosen
        .iter()
        .all(|(target, result)| in_place(target, result));
    for (target, rec) in recorded {
        if chosen.contains_key(target) || !rec.runs_copy() || targets.gone.contains(target) {
            continue;
        }
        if !chosen.is_empty() && all_applied && !targets.in_grace.contains(target) {
            out.annotations.insert(
                deletion_annotation(target),
                Some(now.to_rfc3339_opts(SecondsFormat::Secs, true)),
            );
            out.deleting.push(target.clone());
        } else {
            out.waiting.push(target.clone());
        }
    }
    if new_finalizers != finalizers {
        out.finalizers = Some(new_finalizers);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tmc_api::decision::{finalizer as fin, result_digest, status_annotation};
    use tmc_api::protocol::read;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("time")
    }

    fn result(replicas: u32) -> TargetResult {
        TargetResult {
            replicas: Some(replicas),
            placement: "p".into(),
            ..Default::default()
        }
    }

    struct Obj {
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
        finalizers: Vec<String>,
    }

    impl Obj {
        fn new() -> Self {
            Self {
                labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
                finalizers: vec![],
            }
        }
        fn apply(&mut self, plan: &Plan) {
            plan.apply_to(
                &mut self.labels,
                &mut self.annotations,
                &mut self.finalizers,
            );
        }
        /// An object placed on `targets` (name, replicas), every copy
        /// reported with all its replicas available.
        fn running(targets: &[(&str, u32)]) -> Self {
            let mut obj = Self::new();
            let chosen: BTreeMap<_, _> = targets
                .iter()
                .map(|(t, n)| (t.to_string(), result(*n)))
                .collect();
            obj.apply(&obj.plan(&chosen));
            for (t, n) in targets {
                obj.report(t, *n);
            }
            obj
        }

        /// The target's syncer reports `available` replicas of the result
        /// the object records now.
        fn report(&mut self, target: &str, available: u32) {
            let digest = result_digest(
                self.annotations
                    .get(&result_annotation(target))
                    .map(String::as_str),
            );
            self.annotations.insert(
                status_annotation(target),
                json!({"appliedHash": "h", "observedGeneration": 1, "resultDigest": digest,
                    "status": {"availableReplicas": available}})
                .to_string(),
            );
        }
        fn plan(&self, chosen: &BTreeMap<String, TargetResult>) -> Plan {
            self.plan_with(chosen, &BTreeSet::new())
        }
        fn plan_with(
            &self,
            chosen: &BTreeMap<String, TargetResult>,
            in_grace: &BTreeSet<String>,
        ) -> Plan {
            let recorded = read(&self.labels, &self.annotations);
            plan(
                &recorded,
                &self.finalizers,
                chosen,
                TargetSets {
                    in_grace,
                    gone: &BTreeSet::new(),
                },
                Some(1),
                now(),
            )
            .expect("plan")
        }
    }

    #[test]
    fn first_decision_records_everything_then_nothing_changes() {
        let mut obj = Obj::new();
        let chosen: BTreeMap<_, _> = [
            ("west".to_string(), result(2)),
            ("east".to_string(), result(1)),
        ]
        .into();
        let p = obj.plan(&chosen);
        assert_eq!(p.labels.len(), 2);
        assert_eq!(p.annotations.len(), 2);
        assert_eq!(p.finalizers, Some(vec![fin("east"), fin("west")]));
        obj.apply(&p);
        let again = obj.plan(&chosen);
        assert!(
            again.is_empty(),
            "second pass must write nothing: {again:?}"
        );
        // A new policy generation alone is no change.
        let regen: BTreeMap<_, _> = chosen
            .iter()
            .map(|(t, r)| {
                (
                    t.clone(),
                    TargetResult {
                        policy_generation: Some(9),
                        ..r.clone()
                    },
                )
            })
            .collect();
        assert!(obj.plan(&regen).is_empty());
    }

    #[test]
    fn replicas_move_up_before_they_move_down() {
        let mut obj = Obj::running(&[("west", 2), ("east", 2)]);
        let shift: BTreeMap<_, _> = [
            ("west".to_string(), result(1)),
            ("east".to_string(), result(3)),
        ]
        .into();
        // East grows first; west keeps 2 until east has 3 available.
        let p = obj.plan(&shift);
        assert!(p.annotations.contains_key(&result_annotation("east")));
        assert!(!p.annotations.contains_key(&result_annotation("west")));
        assert_eq!(p.holding, vec!["west".to_string()]);
        obj.apply(&p);
        obj.report("east", 2);
        assert_eq!(obj.plan(&shift).holding, vec!["west".to_string()], "2 of 3");
        obj.report("east", 3);
        let p = obj.plan(&shift);
        assert!(p.holding.is_empty());
        assert!(p.annotations.contains_key(&result_annotation("west")));
        assert!(p.labels.is_empty() && p.finalizers.is_none());
    }

    #[test]
    fn a_report_of_the_previous_result_does_not_count() {
        // {west: 2, east: 2} -> {east: 4}: east still runs its 2 of the old result.
        let mut obj = Obj::running(&[("west", 2), ("east", 2)]);
        let east_only: BTreeMap<_, _> = [("east".to_string(), result(4))].into();
        let p = obj.plan(&east_only);
        obj.apply(&p);
        // The old report (2 available, old result) stays on the object.
        let p = obj.plan(&east_only);
        assert!(p.deleting.is_empty(), "{p:?}");
        assert_eq!(p.waiting, vec!["west".to_string()]);
        obj.report("east", 4);
        assert_eq!(obj.plan(&east_only).deleting, vec!["west".to_string()]);
    }

    #[test]
    fn move_is_create_before_delete() {
        let mut obj = Obj::new();
        obj.apply(&obj.plan(&[("west".to_string(), result(3))].into()));
        obj.report("west", 3);
        let to_east: BTreeMap<_, _> = [("east".to_string(), result(3))].into();
        // East is chosen; west keeps its copy until east reports it applied.
        let p = obj.plan(&to_east);
        assert_eq!(p.waiting, vec!["west".to_string()]);
        assert!(p.deleting.is_empty());
        assert!(!p.annotations.contains_key(&deletion_annotation("west")));
        obj.apply(&p);
        assert!(
            obj.plan(&to_east).is_empty(),
            "nothing new while east is not ready"
        );
        obj.report("east", 0);
        assert!(obj.plan(&to_east).is_empty(), "no available replica yet");
        obj.report("east", 2);
        assert!(obj.plan(&to_east).is_empty(), "2 of 3 available");
        obj.report("east", 3);
        let p = obj.plan(&to_east);
        assert_eq!(p.deleting, vec!["west".to_string()]);
        assert_eq!(
            p.annotations.get(&deletion_annotation("west")),
            Some(&Some("2027-01-15T08:00:00Z".to_string()))
        );
        obj.apply(&p);
        assert!(obj.plan(&to_east).is_empty(), "deletion asked once");
    }

    #[test]
    fn choosing_a_target_again_cancels_its_deletion_and_its_last_report() {
        // A -> B -> A inside the deletion window: A's report may describe a
        // copy on its way out, so B stays until A reports again.
        let mut obj = Obj::new();
        let on_a: BTreeMap<_, _> = [("a".to_string(), result(1))].into();
        let on_b: BTreeMap<_, _> = [("b".to_string(), result(1))].into();
        obj.apply(&obj.plan(&on_a));
        obj.report("a", 1);
        obj.apply(&obj.plan(&on_b));
        obj.report("b", 1);
        let p = obj.plan(&on_b);
        assert_eq!(p.deleting, vec!["a".to_string()]);
        obj.apply(&p);
        let p = obj.plan(&on_a);
        assert_eq!(p.annotations.get(&deletion_annotation("a")), Some(&None));
        assert_eq!(p.annotations.get(&status_annotation("a")), Some(&None));
        assert!(p.deleting.is_empty());
        obj.apply(&p);
        assert_eq!(obj.plan(&on_a).waiting, vec!["b".to_string()]);
        obj.report("a", 1);
        assert_eq!(obj.plan(&on_a).deleting, vec!["b".to_string()]);
    }

    #[test]
    fn a_holder_in_its_grace_period_is_never_asked_to_delete() {
        let mut obj = Obj::new();
        obj.apply(
            &obj.plan(
                &[
                    ("west".to_string(), result(1)),
                    ("east".to_string(), result(1)),
                ]
                .into(),
            ),
        );
        obj.report("west", 1);
        obj.report("east", 1);
        // East went unreachable; the policy put everything on west.
        let west_only: BTreeMap<_, _> = [("west".to_string(), result(2))].into();
        let p = obj.plan_with(&west_only, &["east".to_string()].into());
        assert!(p.deleting.is_empty(), "{p:?}");
        assert_eq!(p.waiting, vec!["east".to_string()]);
        obj.apply(&p);
        obj.report("west", 2);
        // Grace over: now it may go.
        let p = obj.plan_with(&west_only, &BTreeSet::new());
        assert_eq!(p.deleting, vec!["east".to_string()]);
    }

    #[test]
    fn wiped_keys_are_recorded_again_and_an_unchosen_copy_goes_after_the_new_one_runs() {
        let mut obj = Obj::new();
        obj.apply(&obj.plan(&[("west".to_string(), result(2))].into()));
        obj.report("west", 2);
        // `kubectl replace` without tmc's metadata: west's syncer reports the copy it keeps.
        let mut wiped = Obj::new();
        wiped.annotations.insert(
            status_annotation("west"),
            obj.annotations[&status_annotation("west")].clone(),
        );
        let same: BTreeMap<_, _> = [("west".to_string(), result(2))].into();
        let p = wiped.plan(&same);
        assert_eq!(
            p.labels.get(&state_label("west")),
            Some(&Some("Sync".into()))
        );
        assert!(p.deleting.is_empty() && p.waiting.is_empty());
        // Had the policy chosen east instead, west would go only once east runs.
        let east: BTreeMap<_, _> = [("east".to_string(), result(2))].into();
        let p = wiped.plan(&east);
        assert_eq!(p.waiting, vec!["west".to_string()]);
        wiped.apply(&p);
        wiped.report("east", 2);
        assert_eq!(wiped.plan(&east).deleting, vec!["west".to_string()]);
    }

    #[test]
    fn an_empty_choice_deletes_nothing() {
        let mut obj = Obj::new();
        obj.apply(&obj.plan(&[("west".to_string(), result(1))].into()));
        obj.report("west", 1);
        let p = obj.plan(&BTreeMap::new());
        assert!(p.is_empty());
        assert_eq!(p.waiting, vec!["west".to_string()]);
    }

    #[test]
    fn merge_patch_carries_removals_and_resource_version() {
        let mut p = Plan::default();
        p.annotations.insert("a".into(), None);
        p.labels.insert("l".into(), Some("v".into()));
        let patch = p.merge_patch(Some("42"));
        assert_eq!(
            patch,
            json!({"metadata": {"resourceVersion": "42", "labels": {"l": "v"}, "annotations": {"a": null}}})
        );
    }
}
