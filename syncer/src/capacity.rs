//! The cluster's capacity as the syncer reports it into
//! `SyncTarget.status.capacity`: the allocatable resources of the Ready,
//! schedulable nodes and the requests of the non-terminal pods bound to them,
//! read with the syncer's downstream client on its own timer, so that a slow
//! list never delays a heartbeat. It never affects readiness.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use serde_json::Value;
use tmc_api::crd::ClusterCapacity;
use tmc_api::resources::{ResourceAmounts, amounts_of, pod_requests};
use tracing::warn;

use crate::heartbeat::CapacityReading;

/// A node counts when its `Ready` condition is `True` and it is not cordoned.
fn counts(node: &Node) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    ready && !cordoned
}

/// A pod holds its requests until it succeeded or failed.
fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Sums `nodes` and `pods` into a capacity (without `observedTime`).
pub fn summarize(nodes: &[Node], pods: &[Pod]) -> ClusterCapacity {
    let counted: Vec<&Node> = nodes.iter().filter(|n| counts(n)).collect();
    let names: BTreeSet<&str> = counted
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    let allocatable = counted
        .iter()
        .map(|n| {
            let map = n.status.as_ref().and_then(|s| s.allocatable.as_ref());
            amounts_of(serde_json::to_value(map).ok().as_ref())
        })
        .fold(ResourceAmounts::default(), ResourceAmounts::plus);
    let requested = pods
        .iter()
        .filter(|p| !terminal(p))
        .filter_map(|p| {
            let spec = p.spec.as_ref()?;
            names.contains(spec.node_name.as_deref()?).then_some(spec)
        })
        .map(|spec| pod_requests(&serde_json::to_value(spec).unwrap_or(Value::Null)))
        .fold(ResourceAmounts::default(), ResourceAmounts::plus);
    ClusterCapacity {
        allocatable,
        requested,
        available: allocatable.minus(requested),
        nodes: u32::try_from(counted.len()).unwrap_or(u32::MAX),
        observed_time: None,
        stale_reason: None,
    }
}

/// Lists the cluster's nodes and pods and sums them (see [`summarize`]).
pub async fn read(downstream: &kube::Client) -> Result<ClusterCapacity, kube::Error> {
    let nodes = Api::<Node>::all(downstream.clone())
        .list(&ListParams::default())
        .await?;
    let pods = Api::<Pod>::all(downstream.clone())
        .list(&ListParams::default().fields("status.phase!=Succeeded,status.phase!=Failed"))
        .await?;
    Ok(summarize(&nodes.items, &pods.items))
}

/// Reads the capacity every `interval` in a task of its own; the heartbeat
/// takes the latest reading ([`Reader::take`]). Dropping it stops the task.
pub struct Reader {
    latest: Arc<Mutex<Option<CapacityReading>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Reader {
    /// Starts reading `downstream`'s capacity now and every `interval`
    /// (each read given at most `interval`, and at least 10 s).
    pub fn spawn(downstream: kube::Client, interval: Duration) -> Self {
        let latest = Arc::new(Mutex::new(None));
        let slot = latest.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval.max(Duration::from_secs(1)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_failure: Option<String> = None;
            loop {
                ticker.tick().await;
                let (reading, again) =
                    once(&downstream, interval.max(Duration::from_secs(10))).await;
                match &reading {
                    // Warn when the reason changes, not on every read of a lasting failure.
                    CapacityReading::Failed(why) if last_failure.as_ref() != Some(why) => {
                        warn!(reason = %why, "the cluster's capacity is not read; keeping the last figures");
                        last_failure = Some(why.clone());
                    }
                    CapacityReading::Failed(_) => {}
                    CapacityReading::Read(_) => last_failure = None,
                }
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(reading);
                if !again {
                    return;
                }
            }
        });
        Self { latest, task }
    }

    /// The reading made since the last call, if any.
    pub fn take(&self) -> Option<CapacityReading> {
        self.latest.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One reading within `budget`, and whether reading again can give more. A
/// failure keeps the last figures, with why; a cluster that does not serve
/// nodes or pods (a 404 answer, as from a kcp logical cluster standing in for
/// a cluster) is said once and not read again.
async fn once(downstream: &kube::Client, budget: Duration) -> (CapacityReading, bool) {
    match tokio::time::timeout(budget, read(downstream)).await {
        Ok(Ok(capacity)) => (CapacityReading::Read(capacity), true),
        Ok(Err(kube::Error::Api(status))) if status.code == 404 => (
            CapacityReading::Failed(
                "the cluster serves no nodes or pods API (404): it has no capacity to report"
                    .into(),
            ),
            false,
        ),
        Ok(Err(err)) => (
            CapacityReading::Failed(format!(
                "cannot list the cluster's nodes and pods: {err} (the syncer's credentials need list on nodes and pods)"
            )),
            true,
        ),
        Err(_) => (
            CapacityReading::Failed(format!(
                "listing the cluster's nodes and pods took longer than {} s",
                budget.as_secs()
            )),
            true,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, ready: bool, cordoned: bool, cpu: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"unschedulable": cordoned},
            "status": {
                "allocatable": {"cpu": cpu, "memory": "1Gi", "pods": "10"},
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
            }
        }))
        .unwrap()
    }

    fn pod(node: Option<&str>, phase: &str, cpu: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {
                "nodeName": node,
                "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": "1Mi"}}}]
            },
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    #[test]
    fn sums_ready_schedulable_nodes_and_the_live_pods_bound_to_them() {
        let nodes = [
            node("a", true, false, "2"),
            node("b", true, false, "500m"),
            node("not-ready", false, false, "64"),
            node("cordoned", true, true, "64"),
        ];
        let pods = [
            pod(Some("a"), "Running", "250m"),
            pod(Some("b"), "Pending", "100m"),
            pod(Some("a"), "Succeeded", "1"),
            pod(Some("cordoned"), "Running", "1"),
            pod(None, "Pending", "1"),
        ];
        let cap = summarize(&nodes, &pods);
        assert_eq!(cap.nodes, 2);
        assert_eq!(
            cap.allocatable,
            ResourceAmounts {
                cpu_millis: 2500,
                memory_bytes: 2 << 30,
                pods: 20
            }
        );
        assert_eq!(
            cap.requested,
            ResourceAmounts {
                cpu_millis: 350,
                memory_bytes: 2 << 20,
                pods: 2
            }
        );
        assert_eq!(cap.available.cpu_millis, 2150);
        assert_eq!(cap.available.pods, 18);
    }

    #[test]
    fn requests_beyond_allocatable_leave_nothing_free() {
        let cap = summarize(
            &[node("a", true, false, "100m")],
            &[pod(Some("a"), "Running", "1")],
        );
        assert_eq!(cap.available.cpu_millis, 0);
    }
}
