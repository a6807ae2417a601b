//! The human form of an [`ExplainReport`]: a summary and one table row per
//! target.

use std::collections::BTreeMap;

use tmc_policy_sdk::MapEdits;

use super::report::{
    CopyReport, ExplainReport, FollowsReport, PolicyReport, RecordedReport, Verdict,
};
use crate::placement::assignment;
use crate::table;

/// The lines of a dependency that follows the workloads referencing it.
fn follows_text(follows: &FollowsReport) -> String {
    let mut out =
        "placement:   none of its own: it goes where the workloads that reference it are\n"
            .to_string();
    let on: Vec<String> = follows
        .targets
        .iter()
        .map(|(target, users)| format!("{target} ({})", users.join(", ")))
        .collect();
    out.push_str(&format!(
        "follows:     {}\n",
        if on.is_empty() {
            "no target yet".to_string()
        } else {
            on.join("; ")
        }
    ));
    if !follows.undecided.is_empty() {
        out.push_str(&format!(
            "undecided:   {} (until they are placed, no copy of this one is removed)\n",
            follows.undecided.join(", ")
        ));
    }
    out
}

/// `report` as `tmcd explain` prints it.
pub fn render(report: &ExplainReport) -> String {
    let w = &report.workload;
    let mut out = format!(
        "{} {}{}",
        w.kind,
        w.namespace
            .as_deref()
            .map(|ns| format!("{ns}/"))
            .unwrap_or_default(),
        w.name
    );
    if let Some(generation) = w.generation {
        out.push_str(&format!(" (generation {generation})"));
    }
    out.push('\n');
    if let Some(why) = &report.excluded {
        out.push_str(&format!("never placed: {why}\n"));
    }
    match (&report.placement, &report.follows) {
        (Some(name), _) => out.push_str(&format!("placement:   {name}\n")),
        (None, Some(follows)) => out.push_str(&follows_text(follows)),
        (None, None) if report.excluded.is_none() => out.push_str(
            "placement:   none: no ClusterWorkloadPlacement selects this workload; it is not placed\n",
        ),
        (None, None) => {}
    }
    if let Some(policy) = &report.policy {
        out.push_str(&format!(
            "policy:      {} (policy generation {})\n",
            policy_line(policy),
            report.policy_generation
        ));
    }
    for t in &report.transformations {
        out.push_str(&format!("transform:   {}\n", policy_line(t)));
    }
    if let Some(failure) = &report.failure {
        out.push_str(&format!("FAILED:      {failure}\n"));
    }
    if let Some(decision) = &report.decision {
        let on: BTreeMap<String, Option<u32>> = report
            .targets
            .iter()
            .filter(|t| t.verdict == Verdict::Chosen)
            .map(|t| (t.name.clone(), t.replicas))
            .collect();
        let state = if decision.recorded {
            "recorded"
        } else {
            "not recorded yet: tmcd is writing it, or a move is in progress"
        };
        out.push_str(&format!(
            "decision:    {} ({state})\n",
            assignment::describe(&on)
        ));
        if !decision.reason.is_empty() {
            out.push_str(&format!("reason:      {}\n", decision.reason));
        }
    }
    for t in &report.targets {
        for (what, edits) in [("labels", &t.labels), ("annotations", &t.annotations)] {
            if !edits.is_empty() {
                out.push_str(&format!(
                    "edits:       {}: {what} {}\n",
                    t.name,
                    edits_text(edits)
                ));
            }
        }
    }
    if report.targets.is_empty() {
        out.push_str("\nno SyncTargets\n");
        return out;
    }
    let mut rows = vec![
        [
            "TARGET", "VERDICT", "REPLICAS", "FITS", "RECORDED", "COPY", "WHY",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for t in &report.targets {
        rows.push(vec![
            t.name.clone(),
            t.verdict.as_str().to_string(),
            t.replicas.map_or_else(|| "-".into(), |r| r.to_string()),
            t.capacity.map_or_else(|| "-".into(), |c| c.to_string()),
            t.recorded
                .as_ref()
                .map_or_else(|| "-".into(), recorded_text),
            t.copy.as_ref().map_or_else(|| "-".into(), copy_text),
            t.detail.clone(),
        ]);
    }
    out.push('\n');
    out.push_str(&table::render(&rows));
    out
}

fn policy_line(p: &PolicyReport) -> String {
    let digest: String = p
        .digest
        .as_deref()
        .unwrap_or("-")
        .chars()
        .take(16)
        .collect();
    let status = p.status.as_deref().unwrap_or("not loaded");
    format!("{} (digest {digest}, {status})", p.name)
}

fn edits_text(edits: &MapEdits) -> String {
    let mut parts: Vec<String> = edits.set.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.extend(edits.remove.iter().map(|k| format!("-{k}")));
    parts.join(" ")
}

fn recorded_text(r: &RecordedReport) -> String {
    let state = if r.deleting {
        "removing"
    } else if r.sync {
        "Sync"
    } else {
        "undecided"
    };
    match r.replicas {
        Some(n) => format!("{state} ({n})"),
        None => state.to_string(),
    }
}

fn copy_text(c: &CopyReport) -> String {
    if let Some(error) = &c.error {
        return format!("error: {error}");
    }
    let replicas = match (c.available_replicas, c.replicas) {
        (Some(a), Some(r)) => format!("{a}/{r} available"),
        (None, Some(r)) => format!("0/{r} available"),
        _ => String::new(),
    };
    match (&c.waiting, c.in_place) {
        (_, true) if replicas.is_empty() => "in place".into(),
        (_, true) => format!("in place, {replicas}"),
        (Some(why), false) => why.clone(),
        (None, false) => "reported".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explain::{DecisionReport, TargetExplanation, WorkloadRef};

    fn web() -> WorkloadRef {
        WorkloadRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: Some("demo".into()),
            name: "web".into(),
            generation: Some(3),
        }
    }

    #[test]
    fn a_failed_decision_says_the_last_one_stays() {
        let report = ExplainReport {
            workload: web(),
            placement: Some("spread".into()),
            policy: Some(PolicyReport {
                name: "replica-spread".into(),
                digest: None,
                status: None,
            }),
            failure: Some("policy \"replica-spread\" failed: boom; the last decision stays".into()),
            targets: vec![TargetExplanation {
                name: "east".into(),
                verdict: Verdict::Candidate,
                reason: "noDecision".into(),
                detail: "a candidate; the policy failed, so nothing was chosen".into(),
                recorded: Some(RecordedReport {
                    sync: true,
                    replicas: Some(2),
                    ..RecordedReport::default()
                }),
                copy: Some(CopyReport {
                    error: Some("quota exceeded".into()),
                    ..CopyReport::default()
                }),
                ..TargetExplanation::default()
            }],
            ..ExplainReport::default()
        };
        let text = render(&report);
        for line in [
            "Deployment demo/web (generation 3)\n",
            "policy:      replica-spread (digest -, not loaded)",
            "FAILED:      policy \"replica-spread\" failed: boom; the last decision stays\n",
            "east    candidate  -         -     Sync (2)  error: quota exceeded  a candidate;",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        assert!(!text.contains("decision:"), "{text}");
    }

    #[test]
    fn no_placement_is_said_and_a_pending_decision_too() {
        let mut report = ExplainReport {
            workload: web(),
            ..ExplainReport::default()
        };
        assert!(
            render(&report).contains("placement:   none: no ClusterWorkloadPlacement selects"),
            "{}",
            render(&report)
        );
        report.placement = Some("spread".into());
        report.decision = Some(DecisionReport {
            reason: "spread".into(),
            recorded: false,
        });
        report.targets = vec![TargetExplanation {
            name: "east".into(),
            verdict: Verdict::Chosen,
            replicas: Some(3),
            ..TargetExplanation::default()
        }];
        let text = render(&report);
        assert!(
            text.contains("decision:    east (3) (not recorded yet"),
            "{text}"
        );
    }
}
