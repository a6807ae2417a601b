//! What tmcd's benchmarks read and report (`daemon/benches/fleet_scale.rs`, `daemon/benches/tenants_scale.rs`):
//! their knobs from the environment, a process's CPU, memory and sockets from `/proc`, the load average,
//! samples of a Prometheus text exposition and percentiles, and the writes a kcp has served.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};

/// The whole number in environment variable `name`, else `default`.
pub fn knob(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?} is not a whole number")),
        Err(_) => Ok(default),
    }
}

/// utime + stime of process `pid`, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("{path}: field {}", i + 3))
    };
    // utime and stime (fields 14 and 15) in clock ticks of 10 ms.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// VmRSS and VmHWM of process `pid`, in MiB.
pub fn rss_mib(pid: u32) -> Result<(f64, f64)> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |key: &str| -> Result<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .with_context(|| format!("{path}: no {key}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Open sockets of process `pid` (its connections and listeners).
pub fn sockets(pid: u32) -> Result<usize> {
    let dir = format!("/proc/{pid}/fd");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        if let Ok(link) = std::fs::read_link(entry?.path())
            && link.to_string_lossy().starts_with("socket:")
        {
            n += 1;
        }
    }
    Ok(n)
}

/// The 1-minute load average.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// The samples of `metric` in a Prometheus text exposition, as (labels, value).
pub fn samples<'a>(text: &'a str, metric: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(metric)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => r.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        Some((labels, value.trim().parse().ok()?))
    })
}

/// The value of label `key` in a Prometheus label set `a="x",b="y"`.
pub fn label<'a>(labels: &'a str, key: &str) -> &'a str {
    labels
        .split("\",")
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix("=\""))
        .map_or("", |v| v.trim_end_matches('"'))
}

/// The `p`-th percentile (nearest rank) of `samples`, in milliseconds (NaN without samples).
pub fn percentile_ms(samples: &[Duration], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len().max(1)) - 1)
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

/// A kcp's `/metrics` (through its `base` context: not a workspace's URL).
pub async fn kcp_metrics(client: &kube::Client) -> Result<String> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    client
        .request_text(req)
        .await
        .context("GET /metrics of kcp")
}

/// Writes a kcp has served so far (every verb but reads and watches), by `resource[/subresource]`.
pub async fn kcp_writes(client: &kube::Client) -> Result<BTreeMap<String, f64>> {
    Ok(writes(&kcp_metrics(client).await?, false))
}

/// Writes a kcp has served so far, by `resource[/subresource] VERB` (kube's verbs: `POST`, `PUT`, `PATCH`,
/// `APPLY` for a server-side apply, `DELETE`, `DELETECOLLECTION`).
pub async fn kcp_writes_by_verb(client: &kube::Client) -> Result<BTreeMap<String, f64>> {
    Ok(writes(&kcp_metrics(client).await?, true))
}

/// The write requests of `apiserver_request_total` in `text`, by `resource[/subresource]` (and ` VERB` when
/// `by_verb`).
pub fn writes(text: &str, by_verb: bool) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (labels, v) in samples(text, "apiserver_request_total") {
        let verb = label(labels, "verb");
        if matches!(verb, "GET" | "LIST" | "WATCH" | "CONNECT") {
            continue;
        }
        let (res, sub) = (label(labels, "resource"), label(labels, "subresource"));
        let mut key = if sub.is_empty() {
            res.to_owned()
        } else {
            format!("{res}/{sub}")
        };
        if by_verb {
            key = format!("{key} {verb}");
        }
        *out.entry(key).or_insert(0.0) += v;
    }
    out
}

/// The sum of `counts` over the keys that start with `prefix` followed by a space or `/` (a resource, its
/// subresources and verbs), or equal it.
pub fn sum_of(counts: &BTreeMap<String, f64>, prefix: &str) -> f64 {
    counts
        .iter()
        .filter(|(k, _)| {
            k.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '/']))
        })
        .map(|(_, v)| v)
        .sum()
}

/// `after - before`, the resources with a non-zero difference.
pub fn delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d != 0.0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_labels_and_percentiles() {
        let text = "# HELP x\nx{resource=\"a\",verb=\"WATCH\"} 3\nx 2\nxy 9\n";
        let got: Vec<(&str, f64)> = samples(text, "x").collect();
        assert_eq!(got, [("resource=\"a\",verb=\"WATCH\"", 3.0), ("", 2.0)]);
        assert_eq!(label(got[0].0, "verb"), "WATCH");
        assert_eq!(label(got[0].0, "resource"), "a");
        assert_eq!(label(got[0].0, "none"), "");
        let ms: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&ms, 50.0), 50.0);
        assert_eq!(percentile_ms(&ms, 99.0), 99.0);
        assert_eq!(percentile_ms(&ms, 100.0), 100.0);
        assert!(percentile_ms(&[], 50.0).is_nan());
    }

    #[test]
    fn writes_by_resource_and_verb() {
        let text = "apiserver_request_total{code=\"200\",resource=\"deployments\",subresource=\"\",verb=\"APPLY\"} 4\n\
                    apiserver_request_total{code=\"409\",resource=\"deployments\",subresource=\"\",verb=\"APPLY\"} 1\n\
                    apiserver_request_total{code=\"200\",resource=\"deployments\",subresource=\"status\",verb=\"PATCH\"} 2\n\
                    apiserver_request_total{code=\"200\",resource=\"deployments\",subresource=\"\",verb=\"LIST\"} 7\n\
                    apiserver_request_total{code=\"201\",resource=\"deploymentsx\",subresource=\"\",verb=\"POST\"} 3\n";
        let by_verb = writes(text, true);
        assert_eq!(by_verb["deployments APPLY"], 5.0);
        assert_eq!(by_verb["deployments/status PATCH"], 2.0);
        assert_eq!(by_verb.len(), 3);
        assert_eq!(writes(text, false)["deployments"], 5.0);
        assert_eq!(sum_of(&by_verb, "deployments"), 7.0);
        assert_eq!(sum_of(&by_verb, "deployments/status"), 2.0);
    }
}
