//! The gauges read from the shared state just before a scrape of
//! `/metrics`: target readiness and heartbeat age, push syncer failures,
//! placement sizes and refused policies (the dashboard and alert rules of
//! `config/monitoring/` read them).

use tmc_policy_host::PolicyStatus;

use crate::placement::selector;
use crate::state::State;

/// Brings every scrape-time gauge of `state.metrics` up to date.
pub fn refresh(state: &State) {
    state.refresh_scrape_gauges();
    let targets = state.targets.state();
    let views: Vec<_> = targets.iter().map(|t| state.target_view(t)).collect();
    state.metrics.set_targets(
        views
            .iter()
            .map(|v| (v.name.as_str(), v.ready, state.heartbeats.age(&v.name))),
    );
    let failing: Vec<(&str, usize)> = views
        .iter()
        .filter_map(|v| Some((v.name.as_str(), state.syncer_health(&v.name)?.failing)))
        .collect();
    state.metrics.set_syncers_failing(failing);
    let placements: Vec<(String, u32)> = state
        .placements
        .state()
        .iter()
        .map(|p| {
            let workloads = p.status.as_ref().map_or(0, |s| s.workload_count);
            (selector::placement_key(p), workloads)
        })
        .collect();
    state
        .metrics
        .set_placements(placements.iter().map(|(key, n)| (key.as_str(), *n)));
    let policies = state.policies.policies();
    state.metrics.set_policies_refused(policies.iter().map(|p| {
        let refused = matches!(
            p.status,
            PolicyStatus::UpdateRefused | PolicyStatus::Refused
        );
        (p.name.as_str(), refused)
    }));
}
