//! `config/monitoring/`: every metric the Grafana dashboard and the
//! Prometheus alert rules use is one tmcd exports (its registry, as
//! `/metrics` serves it), and the alerts the operations guide promises exist.
//! e2e_placement checks the same names against a running tmcd's `/metrics`.

mod common;

use common::monitoring::{alert_rules, dashboard_exprs, defined_names, metric_names, undefined};
use std::time::Duration;

use tmc_daemon::telemetry::metrics::Metrics;

/// tmcd's metrics with one sample in every family (an empty family is not
/// exposed at all, as on a tmcd that has not seen, say, a policy error yet).
fn populated() -> Metrics {
    use tmc_daemon::placement::runner::EvalObserver;
    let m = Metrics::default();
    m.reconciled("Deployment", true, Duration::from_millis(1));
    m.observe("spread", Duration::from_millis(1), true);
    m.decided("Deployment", "changed");
    m.set_pending("Deployment", 1);
    m.set_status_writes_pending("Deployment", 1);
    m.set_status_reports_held("west", 1);
    m.set_target_sync_errors("west", 1);
    m.set_targets([("west", true, Some(Duration::from_secs(2)))]);
    m.set_syncers_failing([("west", 0)]);
    m.set_placements([("spread", 1)]);
    m.set_policies_refused([("spread", false)]);
    m
}

#[test]
fn every_metric_the_dashboard_and_alerts_use_is_exported() {
    let exposition = populated().render();
    let missing = undefined(&exposition);
    assert!(
        missing.is_empty(),
        "used but not exported by tmcd:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_dashboard_and_the_alerts_use_metrics_at_all() {
    // Guards the check above against reading nothing.
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let used: std::collections::BTreeSet<String> =
        exprs.iter().flat_map(|e| metric_names(e)).collect();
    for name in [
        "tmcd_placement_workloads",
        "tmcd_decisions_total",
        "tmcd_policy_evaluation_duration_seconds_bucket",
        "tmcd_target_heartbeat_age_seconds",
        "tmcd_target_ready",
        "tmcd_status_reports_held",
    ] {
        assert!(used.contains(name), "the dashboard lacks {name}: {used:?}");
    }
}

#[test]
fn the_promised_alerts_exist() {
    let alerts: Vec<String> = alert_rules().into_iter().map(|(a, _)| a).collect();
    for alert in [
        "TmcTargetNotReady",
        "TmcPolicyRefused",
        "TmcPlacementFailing",
        "TmcSyncerFailing",
        "TmcNoLeader",
        "TmcLeadershipLost",
    ] {
        assert!(
            alerts.iter().any(|a| a == alert),
            "missing {alert} in {alerts:?}"
        );
    }
}

#[test]
fn names_are_read_from_promql_and_the_exposition() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.99, sum by (le) (rate(tmcd_x_bucket{kind=\"tmcd_no\"}[5m]))) or tmcd_y"
        )
        .into_iter()
        .collect::<Vec<_>>(),
        ["tmcd_x_bucket", "tmcd_y"],
        "label values in quotes are skipped"
    );
    let defined = defined_names(
        "# TYPE tmcd_a counter\n# TYPE tmcd_b gauge\n# TYPE tmcd_c histogram\ntmcd_a_total 1\n",
    );
    for name in [
        "tmcd_a_total",
        "tmcd_b",
        "tmcd_c_bucket",
        "tmcd_c_count",
        "tmcd_c_sum",
    ] {
        assert!(defined.contains(name), "{name}: {defined:?}");
    }
    assert!(
        !defined.contains("tmcd_a"),
        "a counter's samples end in _total"
    );
}
