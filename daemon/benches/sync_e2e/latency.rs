//! Benchmark 1: create -> seen downstream, one at a time, tmc and direct interleaved.

use super::*;

/// Benchmark 1: create -> seen downstream, one at a time, tmc and direct interleaved.
pub async fn latency(env: &env::Env) -> Result<Vec<Row>> {
    let n = env.knobs.latency_n;
    let west = env.cluster("west")?;
    objects::namespace(&env.kcp, "lat").await?;
    objects::namespace(west, "lat-base").await?;
    objects::placement(
        &env.kcp,
        "lat",
        "lat",
        json!({
            "policy": {"name": "affinity"},
            "locationSelectors": [{"matchLabels": {"topology.kubernetes.io/region": "us-west"}}],
        }),
    )
    .await?;
    // Warm-up: the placement is observed and the downstream namespace exists before timing.
    let r = env.knobs.replicas;
    objects::create(
        &env.kcp,
        &objects::deployment("lat", "warm", "lat", r, json!({}))?,
    )
    .await?;
    seen_at(env, "west", "lat/warm").await?;
    progress(&format!("latency: {n} creates, tmc and direct interleaved"));
    let (mut tmc, mut base) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut traces = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("l-{i:05}");
        let d = objects::deployment("lat-base", &name, "lat", r, json!({}))?;
        let t0 = Instant::now();
        objects::create(west, &d).await?;
        base.push(seen_at(env, "west", &format!("lat-base/{name}")).await? - t0);
        let d = objects::deployment("lat", &name, "lat", r, json!({}))?;
        let (t0, created) = (Instant::now(), chrono::Utc::now());
        objects::create(&env.kcp, &d).await?;
        let key = format!("lat/{name}");
        let took = seen_at(env, "west", &key).await? - t0;
        tmc.push(took);
        let seen = created + chrono::Duration::from_std(took).unwrap_or_default();
        traces.push(breakdown::Trace { key, created, seen });
        if (i + 1) % 50 == 0 {
            progress(&format!(
                "latency: {}/{n}, tmc p50 {} direct p50 {}",
                i + 1,
                stats::ms(stats::percentile(&tmc, 50.0)),
                stats::ms(stats::percentile(&base, 50.0))
            ));
        }
    }
    let mut rows = Vec::new();
    for (p, target) in [(50.0, "<= 50 ms"), (99.0, "<= 300 ms")] {
        let (t, b) = (stats::percentile(&tmc, p), stats::percentile(&base, p));
        rows.push(Row {
            what: format!("create -> on west, p{p} (n={n})"),
            tmc: stats::ms(t),
            baseline: stats::ms(b),
            ratio: stats::ratio(t.as_secs_f64(), b.as_secs_f64()),
            target: target.into(),
        });
    }
    let (placed, applied, seen) = breakdown::stages(&env.tmcd.log, "lat", &traces)?;
    for (stage, samples) in [
        ("create -> tmcd placed it (watch, policy, patch)", placed),
        ("placed -> syncer applied the copy", applied),
        ("applied -> seen by the watch on west", seen),
    ] {
        rows.push(Row {
            what: format!("  {stage}, p50/p99 (n={})", samples.len()),
            tmc: format!(
                "{} / {}",
                stats::ms(stats::percentile(&samples, 50.0)),
                stats::ms(stats::percentile(&samples, 99.0))
            ),
            baseline: "-".into(),
            ratio: "-".into(),
            target: "-".into(),
        });
    }
    let max = (
        tmc.iter().max().copied().unwrap_or_default(),
        base.iter().max().copied().unwrap_or_default(),
    );
    rows.push(Row {
        what: "create -> on west, max".into(),
        tmc: stats::ms(max.0),
        baseline: stats::ms(max.1),
        ratio: stats::ratio(max.0.as_secs_f64(), max.1.as_secs_f64()),
        target: "-".into(),
    });
    Ok(rows)
}
