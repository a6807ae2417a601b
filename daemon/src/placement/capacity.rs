//! `Target.capacity` of one workload on one target: how many replicas of its
//! pod template the target can take, from the free resources its syncer
//! reports (`SyncTarget.status.capacity.available`) and the template's
//! requests, plus the replicas the workload already has there (their
//! requests are already counted as used). Pure functions.

use kube::api::DynamicObject;
use tmc_api::resources::{ResourceAmounts, pod_requests};

use super::workload::has_replicas;

/// What one replica of `obj` requests (its `spec.template.spec`), for kinds
/// with replicas; `None` for other kinds (a Service has no capacity).
pub fn per_replica(kind: &str, obj: &DynamicObject) -> Option<ResourceAmounts> {
    if !has_replicas(kind) {
        return None;
    }
    let spec = obj.data.pointer("/spec/template/spec");
    Some(pod_requests(spec.unwrap_or(&serde_json::Value::Null)))
}

/// Replicas of a workload requesting `per_replica` each that a target with
/// `available` free resources can hold, counting the `current` replicas it
/// holds there already: `free / per_replica` (the minimum over the
/// resources it requests; every replica is one pod) `+ current`. `None`
/// when the target reports no capacity or the workload has no replicas.
pub fn replicas_that_fit(
    available: Option<ResourceAmounts>,
    per_replica: Option<ResourceAmounts>,
    current: Option<u32>,
) -> Option<u32> {
    let more = available?.fits(per_replica?);
    let total = more.saturating_add(u64::from(current.unwrap_or(0)));
    Some(u32::try_from(total).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::{ApiResource, GroupVersionKind};
    use serde_json::json;

    fn free(cpu_millis: u64, memory_bytes: u64, pods: u64) -> Option<ResourceAmounts> {
        Some(ResourceAmounts {
            cpu_millis,
            memory_bytes,
            pods,
        })
    }

    fn deployment(containers: serde_json::Value) -> DynamicObject {
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"));
        DynamicObject::new("web", &ar).data(json!({
            "spec": {"replicas": 4, "template": {"spec": {"containers": containers}}}
        }))
    }

    #[test]
    fn the_tightest_requested_resource_bounds() {
        let web = deployment(
            json!([{"name": "c", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]),
        );
        let per = per_replica("Deployment", &web);
        assert_eq!(
            per,
            free(500, 1 << 30, 1),
            "one pod of 500m and 1Gi per replica"
        );
        assert_eq!(
            replicas_that_fit(free(2000, 8 << 30, 100), per, None),
            Some(4),
            "cpu"
        );
        assert_eq!(
            replicas_that_fit(free(9000, 2 << 30, 100), per, None),
            Some(2),
            "memory"
        );
        assert_eq!(
            replicas_that_fit(free(9000, 8 << 30, 3), per, None),
            Some(3),
            "pods"
        );
        assert_eq!(
            replicas_that_fit(free(499, 8 << 30, 100), per, None),
            Some(0),
            "full"
        );
    }

    #[test]
    fn a_resource_the_template_does_not_request_does_not_bound() {
        let web = deployment(json!([{"name": "c", "resources": {"requests": {"cpu": "1"}}}]));
        let per = per_replica("Deployment", &web);
        assert_eq!(replicas_that_fit(free(3000, 0, 10), per, None), Some(3));
        let bare = per_replica("Deployment", &deployment(json!([{"name": "c"}])));
        assert_eq!(
            replicas_that_fit(free(0, 0, 10), bare, None),
            Some(10),
            "only pods bound"
        );
    }

    #[test]
    fn the_workloads_own_replicas_are_not_lost_capacity() {
        let web = deployment(json!([{"name": "c", "resources": {"requests": {"cpu": "1"}}}]));
        let per = per_replica("Deployment", &web);
        // 3 replicas run there (3 cpu used), 1 cpu still free: it can hold 4.
        assert_eq!(replicas_that_fit(free(1000, 0, 10), per, Some(3)), Some(4));
    }

    #[test]
    fn unknown_capacity_and_kinds_without_replicas_give_none() {
        let web = deployment(json!([]));
        assert_eq!(
            replicas_that_fit(None, per_replica("Deployment", &web), Some(2)),
            None
        );
        assert_eq!(per_replica("Service", &web), None);
        assert_eq!(replicas_that_fit(free(1, 1, 1), None, None), None);
    }
}
