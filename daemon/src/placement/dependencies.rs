//! Dependencies follow their workload: the decision of a ConfigMap, Secret,
//! ServiceAccount or PersistentVolumeClaim that no placement of its own
//! governs is derived from the workloads of its namespace that reference it
//! (see `tmc_api::dependencies::references`), and recorded on it with the
//! same keys as any decision, so the syncers apply and remove it as they do
//! every object.
//!
//! A dependency must be on every target where a workload that references
//! it has any trace (a state label, a result, a deletion request still
//! pending, a report or a finalizer of that target): a workload being moved
//! off a target keeps its dependencies there until its own copy is gone. A
//! derived copy is asked to go only with positive proof: no referencing
//! workload has a trace on that target, and none is undecided (a placement
//! selects it but it records nothing yet, or another writer wiped its
//! keys). Copies recorded by a placement of the dependency's own (that no
//! longer selects it) are kept, as for any workload no placement selects.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};
use kube::api::DynamicObject;
use tmc_api::decision::{
    STATE_SYNC, TargetResult, deletion_annotation, finalizer, result_annotation, state_label,
};
use tmc_api::dependencies::{self, DependencyKind};
use tmc_api::protocol::{self, Recorded};

use super::plan::{self, Plan, TargetSets};

pub use tmc_api::dependencies::DERIVED;

/// One workload that references the dependency, as the caches show it.
#[derive(Debug, Clone, Default)]
pub struct User {
    /// `Kind namespace/name`, for messages.
    pub name: String,
    /// What it records per target.
    pub recorded: BTreeMap<String, Recorded>,
    /// Its finalizers.
    pub finalizers: Vec<String>,
    /// A placement selects it (so it will be decided, if it is not yet).
    pub governed: bool,
}

impl User {
    /// `obj` (of kind `kind`) as a user of dependency `dependency` named
    /// `name` in its namespace, when its pod template references it;
    /// `governed` tells (only then) whether a placement selects it.
    pub fn of(
        kind: &str,
        obj: &DynamicObject,
        dependency: DependencyKind,
        name: &str,
        governed: impl FnOnce() -> bool,
    ) -> Option<Self> {
        if !dependencies::has_pod_template(kind)
            || !dependencies::references(kind, &obj.data)
                .iter()
                .any(|r| r.kind == dependency && r.name == name)
        {
            return None;
        }
        let no_labels = BTreeMap::new();
        Some(Self {
            name: format!(
                "{kind} {}/{}",
                obj.metadata.namespace.as_deref().unwrap_or_default(),
                obj.metadata.name.as_deref().unwrap_or_default()
            ),
            recorded: protocol::read(
                obj.metadata.labels.as_ref().unwrap_or(&no_labels),
                obj.metadata.annotations.as_ref().unwrap_or(&no_labels),
            ),
            finalizers: obj.metadata.finalizers.clone().unwrap_or_default(),
            governed: governed(),
        })
    }

    /// Targets where the workload has any trace: keys or a finalizer.
    fn traces(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .recorded
            .iter()
            .filter(|(_, r)| r.is_present())
            .map(|(t, _)| t.clone())
            .collect();
        let prefix = finalizer("");
        out.extend(
            self.finalizers
                .iter()
                .filter_map(|f| f.strip_prefix(&prefix))
                .map(str::to_string),
        );
        out
    }
}

/// Where the dependency is needed, from its users.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Needs {
    /// Target -> the users with a trace there.
    pub targets: BTreeMap<String, Vec<String>>,
    /// Users a placement selects that record nothing yet: while there is
    /// one, no derived copy is removed anywhere.
    pub undecided: Vec<String>,
}

impl Needs {
    /// True when some workload references the dependency and is or will be
    /// placed: its decision is derived.
    pub fn is_used(&self) -> bool {
        !self.targets.is_empty() || !self.undecided.is_empty()
    }
}

/// Where the dependency is needed by `users`.
pub fn needs<'a>(users: impl IntoIterator<Item = &'a User>) -> Needs {
    let mut out = Needs::default();
    for user in users {
        let traces = user.traces();
        if traces.is_empty() {
            if user.governed {
                out.undecided.push(user.name.clone());
            }
            continue;
        }
        for target in traces {
            out.targets
                .entry(target)
                .or_default()
                .push(user.name.clone());
        }
    }
    out
}

/// The result recorded for a derived copy: no replicas, no edits.
pub fn derived_result() -> TargetResult {
    TargetResult {
        placement: DERIVED.to_string(),
        ..TargetResult::default()
    }
}

/// True when `rec` is a derived decision (not one of an own placement).
pub fn is_derived(rec: &Recorded) -> bool {
    dependencies::is_derived(rec.result.as_ref())
}

/// The plan that makes the dependency (which records `recorded` and holds
/// `finalizers`) record `needs`: `Sync` with the [`derived_result`] and a
/// finalizer on every needed target (a pending removal withdrawn), a
/// deletion request on every other target it holds with a derived result,
/// unless some user is undecided, and deleted SyncTargets forgotten (as in
/// [`plan::plan`]). Copies of an own placement are left as they are.
pub fn plan(
    recorded: &BTreeMap<String, Recorded>,
    finalizers: &[String],
    needs: &Needs,
    gone: &BTreeSet<String>,
    now: DateTime<Utc>,
) -> Result<Plan, serde_json::Error> {
    let no_grace = BTreeSet::new();
    let gone: BTreeSet<String> = gone
        .iter()
        .filter(|t| !needs.targets.contains_key(*t))
        .cloned()
        .collect();
    // Forgets the deleted targets and nothing else (an empty choice asks no removal).
    let mut out = plan::plan(
        recorded,
        finalizers,
        &BTreeMap::new(),
        TargetSets {
            in_grace: &no_grace,
            gone: &gone,
        },
        None,
        now,
    )?;
    out.waiting.clear();
    let mut new_finalizers = out
        .finalizers
        .clone()
        .unwrap_or_else(|| finalizers.to_vec());
    let derived = derived_result();
    let raw = serde_json::to_string(&derived)?;
    let empty = Recorded::default();
    for target in needs.targets.keys() {
        let rec = recorded.get(target).unwrap_or(&empty);
        if rec.state.as_deref() != Some(STATE_SYNC) {
            out.labels
                .insert(state_label(target), Some(STATE_SYNC.to_string()));
        }
        if !rec
            .result
            .as_ref()
            .is_some_and(|r| plan::same_decision(r, &derived))
        {
            out.annotations
                .insert(result_annotation(target), Some(raw.clone()));
        }
        plan::keep_target(&mut out, rec, target, &mut new_finalizers);
    }
    if needs.undecided.is_empty() {
        for (target, rec) in recorded {
            if needs.targets.contains_key(target)
                || gone.contains(target)
                || rec.deleting
                || !rec.runs_copy()
                || !is_derived(rec)
            {
                continue;
            }
            out.annotations.insert(
                deletion_annotation(target),
                Some(now.to_rfc3339_opts(SecondsFormat::Secs, true)),
            );
            out.deleting.push(target.clone());
        }
    }
    out.finalizers = (new_finalizers != finalizers).then_some(new_finalizers);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use tmc_api::decision::status_annotation;
    use tmc_api::protocol::read;

    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("time")
    }

    /// An object's labels, annotations and finalizers, as plans change them.
    #[derive(Default, Clone)]
    struct Obj {
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
        finalizers: Vec<String>,
    }

    impl Obj {
        fn apply(&mut self, plan: &Plan) {
            plan.apply_to(
                &mut self.labels,
                &mut self.annotations,
                &mut self.finalizers,
            );
        }
        fn recorded(&self) -> BTreeMap<String, Recorded> {
            read(&self.labels, &self.annotations)
        }
        fn plan(&self, needs: &Needs) -> Plan {
            plan(
                &self.recorded(),
                &self.finalizers,
                needs,
                &BTreeSet::new(),
                now(),
            )
            .expect("plan")
        }
        /// A workload placed on `targets` by placement `p`.
        fn workload(targets: &[&str]) -> Self {
            let mut obj = Self::default();
            for t in targets {
                obj.labels.insert(state_label(t), STATE_SYNC.into());
                obj.annotations.insert(
                    result_annotation(t),
                    r#"{"replicas":1,"placement":"p"}"#.into(),
                );
                obj.finalizers.push(finalizer(t));
            }
            obj
        }
        /// The syncer of `target` removed its copy and its keys.
        fn cleaned(&mut self, target: &str) {
            self.labels.remove(&state_label(target));
            self.annotations.remove(&result_annotation(target));
            self.annotations.remove(&deletion_annotation(target));
            self.annotations.remove(&status_annotation(target));
            self.finalizers.retain(|f| *f != finalizer(target));
        }
        fn user(&self, name: &str) -> User {
            User {
                name: name.into(),
                recorded: self.recorded(),
                finalizers: self.finalizers.clone(),
                governed: true,
            }
        }
    }

    fn targets(needs: &Needs) -> Vec<&str> {
        needs.targets.keys().map(String::as_str).collect()
    }

    #[test]
    fn needed_where_any_user_has_a_trace() {
        let web = Obj::workload(&["west", "east"]);
        let mut api = Obj::workload(&["north"]);
        // A move off north in progress: only the deletion request and the
        // finalizer are left there; the dependency stays.
        api.labels.clear();
        api.annotations.clear();
        api.annotations.insert(
            deletion_annotation("north"),
            "2026-01-01T00:00:00Z".to_string(),
        );
        let got = needs([
            &web.user("Deployment demo/web"),
            &api.user("Deployment demo/api"),
        ]);
        assert_eq!(targets(&got), ["east", "north", "west"]);
        assert_eq!(got.targets["north"], ["Deployment demo/api"]);
        assert!(got.undecided.is_empty());
        // A finalizer alone is a trace too.
        let mut fin_only = Obj::default();
        fin_only.finalizers.push(finalizer("south"));
        assert_eq!(targets(&needs([&fin_only.user("x")])), ["south"]);
    }

    #[test]
    fn an_undecided_user_holds_every_removal() {
        let fresh = Obj::default();
        let mut unplaced = fresh.user("Deployment demo/unplaced");
        unplaced.governed = false;
        let got = needs([&fresh.user("Deployment demo/new"), &unplaced]);
        assert_eq!(got.undecided, ["Deployment demo/new"]);
        assert!(got.targets.is_empty() && got.is_used());
        assert!(!needs([&unplaced]).is_used(), "no placement selects it");

        // The dependency runs on west; its last user left west, but a new
        // user is not decided yet: nothing is removed.
        let mut cm = Obj::default();
        cm.apply(&cm.plan(&needs([&Obj::workload(&["west"]).user("a")])));
        let p = cm.plan(&got);
        assert!(p.deleting.is_empty() && p.is_empty(), "{p:?}");
    }

    #[test]
    fn follows_a_move_and_goes_only_when_the_workload_is_gone_there() {
        let mut web = Obj::workload(&["west"]);
        let mut cm = Obj::default();
        let first = cm.plan(&needs([&web.user("web")]));
        assert_eq!(
            first.labels,
            [(state_label("west"), Some(STATE_SYNC.to_string()))].into()
        );
        assert_eq!(first.finalizers, Some(vec![finalizer("west")]));
        assert!(
            first.annotations[&result_annotation("west")]
                .as_deref()
                .is_some_and(|r| r.contains(DERIVED))
        );
        cm.apply(&first);
        assert!(cm.plan(&needs([&web.user("web")])).is_empty(), "recorded");

        // The workload moves to east: west keeps its copy until it is gone.
        let east = Obj::workload(&["east"]);
        web.labels.extend(east.labels.clone());
        web.annotations.extend(east.annotations.clone());
        web.finalizers.extend(east.finalizers.clone());
        web.annotations.insert(
            deletion_annotation("west"),
            "2026-01-01T00:00:00Z".to_string(),
        );
        let during = cm.plan(&needs([&web.user("web")]));
        assert!(during.deleting.is_empty(), "{during:?}");
        assert!(during.labels.contains_key(&state_label("east")));
        cm.apply(&during);

        // West's syncer removed the workload's copy: now the dependency goes.
        web.cleaned("west");
        let after = cm.plan(&needs([&web.user("web")]));
        assert_eq!(after.deleting, ["west"]);
        assert!(after.annotations[&deletion_annotation("west")].is_some());
        cm.apply(&after);
        assert!(cm.plan(&needs([&web.user("web")])).is_empty(), "asked once");

        // The workload comes back to west before the copy went: the removal
        // is withdrawn.
        let mut back = web.clone();
        back.apply(&Plan {
            labels: [(state_label("west"), Some(STATE_SYNC.to_string()))].into(),
            ..Plan::default()
        });
        let withdrawn = cm.plan(&needs([&back.user("web")]));
        assert_eq!(
            withdrawn.annotations.get(&deletion_annotation("west")),
            Some(&None)
        );
    }

    #[test]
    fn a_shared_dependency_stays_while_one_user_remains() {
        let a = Obj::workload(&["west"]);
        let b = Obj::workload(&["west", "east"]);
        let mut cm = Obj::default();
        cm.apply(&cm.plan(&needs([&a.user("a"), &b.user("b")])));
        // b moved off west (its copy there is gone); a still runs there.
        let mut b_moved = b.clone();
        b_moved.cleaned("west");
        assert!(
            cm.plan(&needs([&a.user("a"), &b_moved.user("b")]))
                .is_empty()
        );
        // a is deleted (no longer among the users): west's copy goes, east's stays.
        let p = cm.plan(&needs([&b_moved.user("b")]));
        assert_eq!(p.deleting, ["west"]);
        // No user left at all: every derived copy goes.
        let p = cm.plan(&needs([]));
        assert_eq!(p.deleting, ["east", "west"]);
    }

    #[test]
    fn copies_of_an_own_placement_are_never_removed() {
        // Placed on west by its own placement, which no longer selects it.
        let mut cm = Obj::workload(&["west"]);
        let p = cm.plan(&needs([&Obj::workload(&["east"]).user("web")]));
        assert!(p.deleting.is_empty(), "{p:?}");
        cm.apply(&p);
        assert!(cm.recorded()["west"].holds());
        assert!(is_derived(&cm.recorded()["east"]));
        // West joins the derived targets, then is left: now it may go.
        cm.apply(&cm.plan(&needs([&Obj::workload(&["west", "east"]).user("web")])));
        assert!(is_derived(&cm.recorded()["west"]));
        let p = cm.plan(&needs([&Obj::workload(&["east"]).user("web")]));
        assert_eq!(p.deleting, ["west"]);
    }

    #[test]
    fn deleted_targets_are_forgotten_unless_still_needed() {
        let mut cm = Obj::default();
        cm.apply(&cm.plan(&needs([&Obj::workload(&["west", "gone"]).user("web")])));
        let recorded = cm.recorded();
        let gone: BTreeSet<String> = ["gone".to_string()].into();
        let users = [Obj::workload(&["west"]).user("web")];
        let p = plan(&recorded, &cm.finalizers, &needs(&users), &gone, now()).expect("plan");
        assert_eq!(p.forgotten, ["gone"]);
        assert!(p.deleting.is_empty());
        assert_eq!(p.labels.get(&state_label("gone")), Some(&None));
        assert_eq!(p.finalizers, Some(vec![finalizer("west")]));
    }
}
