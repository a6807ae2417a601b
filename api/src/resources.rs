//! Resource amounts as placement counts them: Kubernetes quantities parsed
//! into integers (CPU in millicores, memory in bytes, pods), the requests of
//! one pod spec, and how many more pods of a given request fit into a free
//! amount. Shared by the syncer (which sums its cluster's nodes and pods into
//! `SyncTarget.status.capacity`) and tmcd (which turns that into a policy's
//! `Target.capacity`), so both read a quantity the same way.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// CPU, memory and pods, as integers.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceAmounts {
    /// CPU in millicores (`1500` is `1.5` or `1500m`).
    #[serde(default)]
    pub cpu_millis: u64,
    /// Memory in bytes.
    #[serde(default)]
    pub memory_bytes: u64,
    /// Pods.
    #[serde(default)]
    pub pods: u64,
}

impl ResourceAmounts {
    /// `self + other`, saturating.
    pub fn plus(self, other: Self) -> Self {
        Self {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
            pods: self.pods.saturating_add(other.pods),
        }
    }

    /// `self - other`, never below zero.
    pub fn minus(self, other: Self) -> Self {
        Self {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
            pods: self.pods.saturating_sub(other.pods),
        }
    }

    /// Each resource the larger of the two.
    pub fn max(self, other: Self) -> Self {
        Self {
            cpu_millis: self.cpu_millis.max(other.cpu_millis),
            memory_bytes: self.memory_bytes.max(other.memory_bytes),
            pods: self.pods.max(other.pods),
        }
    }

    /// How many times `per_item` fits into `self` (the free amounts): the
    /// minimum over the resources `per_item` asks for (a zero request does
    /// not bound); `u64::MAX` when it asks for nothing.
    pub fn fits(self, per_item: Self) -> u64 {
        [
            (self.cpu_millis, per_item.cpu_millis),
            (self.memory_bytes, per_item.memory_bytes),
            (self.pods, per_item.pods),
        ]
        .into_iter()
        .filter(|(_, need)| *need > 0)
        .map(|(free, need)| free / need)
        .min()
        .unwrap_or(u64::MAX)
    }
}

/// A Kubernetes quantity (`"250m"`, `"1.5"`, `"128Mi"`, `"1G"`, `"2e3"`) as a
/// number of base units times `scale` (1000 for CPU in millicores, 1 for
/// bytes), rounded up; `None` when it is not a quantity.
pub fn parse_quantity(text: &str, scale: u64) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => 10f64.powi(exp[1..].parse().ok()?),
        _ => return None,
    };
    let value = number * multiplier * scale as f64;
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    // Tolerate float noise (0.1 * 1000 = 100.00000000000001) before rounding up.
    Some((value - 1e-6).ceil().max(0.0) as u64)
}

/// The amounts in a `{"cpu": "...", "memory": "...", "pods": "..."}` map
/// (requests, allocatable); other resources and unreadable quantities count 0.
pub fn amounts_of(map: Option<&Value>) -> ResourceAmounts {
    let get = |key: &str, scale: u64| {
        map.and_then(|m| m.get(key))
            .and_then(|q| match q {
                Value::String(s) => parse_quantity(s, scale),
                Value::Number(n) => n
                    .as_f64()
                    .and_then(|n| parse_quantity(&n.to_string(), scale)),
                _ => None,
            })
            .unwrap_or(0)
    };
    ResourceAmounts {
        cpu_millis: get("cpu", 1000),
        memory_bytes: get("memory", 1),
        pods: get("pods", 1),
    }
}

/// What one pod of `pod_spec` (a PodSpec as JSON) requests, as the scheduler
/// counts it: the sum of its containers' requests or the largest init
/// container's, whichever is larger per resource, plus its `overhead`, and
/// one pod.
pub fn pod_requests(pod_spec: &Value) -> ResourceAmounts {
    let containers = |key: &str| {
        pod_spec
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| amounts_of(c.pointer("/resources/requests")))
            .collect::<Vec<_>>()
    };
    let sum = containers("containers")
        .into_iter()
        .fold(ResourceAmounts::default(), ResourceAmounts::plus);
    let init = containers("initContainers")
        .into_iter()
        .fold(ResourceAmounts::default(), ResourceAmounts::max);
    let overhead = amounts_of(pod_spec.get("overhead"));
    ResourceAmounts {
        pods: 1,
        ..sum.max(init).plus(overhead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities_parse_like_kubernetes() {
        assert_eq!(parse_quantity("250m", 1000), Some(250));
        assert_eq!(parse_quantity("1.5", 1000), Some(1500));
        assert_eq!(parse_quantity("2", 1000), Some(2000));
        assert_eq!(parse_quantity("0.1", 1000), Some(100));
        assert_eq!(parse_quantity("128Mi", 1), Some(128 * 1024 * 1024));
        assert_eq!(parse_quantity("1G", 1), Some(1_000_000_000));
        assert_eq!(parse_quantity("2e3", 1), Some(2000));
        assert_eq!(parse_quantity("110", 1), Some(110));
        assert_eq!(parse_quantity("1m", 1), Some(1), "rounded up");
        assert_eq!(parse_quantity("lots", 1), None);
        assert_eq!(parse_quantity("5Xi", 1), None);
        assert_eq!(parse_quantity("-1", 1), None);
    }

    #[test]
    fn pod_requests_sum_containers_against_the_largest_init_container() {
        let spec = json!({
            "containers": [
                {"resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                {"resources": {"requests": {"cpu": "200m"}}},
                {"name": "no-requests"}
            ],
            "initContainers": [{"resources": {"requests": {"cpu": "1", "memory": "1Mi"}}}],
            "overhead": {"memory": "1Mi"}
        });
        assert_eq!(
            pod_requests(&spec),
            ResourceAmounts {
                cpu_millis: 1000,
                memory_bytes: 65 * 1024 * 1024,
                pods: 1
            }
        );
        assert_eq!(
            pod_requests(&json!({})),
            ResourceAmounts {
                pods: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn fits_is_the_minimum_over_requested_resources() {
        let free = ResourceAmounts {
            cpu_millis: 1000,
            memory_bytes: 10,
            pods: 7,
        };
        let per = |cpu, mem, pods| ResourceAmounts {
            cpu_millis: cpu,
            memory_bytes: mem,
            pods,
        };
        assert_eq!(free.fits(per(300, 0, 1)), 3, "cpu bounds");
        assert_eq!(free.fits(per(100, 0, 1)), 7, "pods bound");
        assert_eq!(free.fits(per(0, 4, 1)), 2, "memory bounds");
        assert_eq!(free.fits(per(0, 0, 0)), u64::MAX, "nothing asked");
        assert_eq!(free.fits(per(2000, 0, 1)), 0, "full");
    }
}
