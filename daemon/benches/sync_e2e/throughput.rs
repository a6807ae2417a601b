//! Benchmark 2: a burst of Deployments over two targets, tmc and direct.

use super::*;

/// Creates `objects` on their `(client, cluster)` with bounded concurrency, and waits
/// until every one is seen on its cluster; returns the time the creates took and
/// the time until all were seen.
async fn burst(
    env: &env::Env,
    items: Vec<(kube::Client, String, Deployment)>,
) -> Result<(Duration, Duration)> {
    let mut want: HashMap<String, Vec<String>> = HashMap::new();
    for (_, cluster, d) in &items {
        let key = format!(
            "{}/{}",
            d.metadata.namespace.as_deref().unwrap_or(""),
            d.metadata.name.as_deref().unwrap_or("")
        );
        want.entry(cluster.clone()).or_default().push(key);
    }
    let total = items.len();
    let cpu0 = env.cpu_times();
    let t0 = Instant::now();
    futures::stream::iter(items)
        .map(|(client, _, d)| async move { objects::create(&client, &d).await })
        .buffer_unordered(env.knobs.concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    let created = t0.elapsed();
    progress(&format!("  {total} created in {}", stats::ms(created)));
    let mut last = t0;
    for (cluster, keys) in &want {
        let at = env
            .tracker(cluster)?
            .until(
                &format!("{} deployments", keys.len()),
                env.knobs.timeout,
                |s| {
                    if s.count_present(keys.iter()) < keys.len() {
                        return None;
                    }
                    keys.iter().filter_map(|k| s.first.get(k)).max().copied()
                },
            )
            .await?;
        last = last.max(at);
    }
    let cpu: Vec<String> = env
        .cpu_times()
        .into_iter()
        .filter_map(|(name, end)| {
            let start = cpu0.iter().find(|(n, _)| *n == name)?.1;
            let used = end.saturating_sub(start);
            (used >= Duration::from_millis(100))
                .then(|| format!("{name} {:.1}", used.as_secs_f64()))
        })
        .collect();
    progress(&format!("  CPU seconds used meanwhile: {}", cpu.join(", ")));
    Ok((created, last - t0))
}

/// Benchmark 2: a burst of Deployments over two targets, tmc and direct.
pub async fn throughput(env: &env::Env) -> Result<Vec<Row>> {
    let n = env.knobs.throughput_n;
    let r = env.knobs.replicas;
    objects::namespace(&env.kcp, "tput").await?;
    for c in ["west", "east"] {
        objects::namespace(env.cluster(c)?, "tput-base").await?;
    }
    objects::placement(
        &env.kcp,
        "tput",
        "tput",
        json!({"policy": {"name": "affinity"}}),
    )
    .await?;
    let region = |i: usize| {
        if i.is_multiple_of(2) {
            ("west", "us-west")
        } else {
            ("east", "us-east")
        }
    };
    // Warm-up: one per target, so downstream namespaces exist before timing.
    for i in 0..2 {
        let (cluster, reg) = region(i);
        let ann = json!({"tmc.kcp.io/regions": reg});
        let name = format!("warm-{cluster}");
        objects::create(
            &env.kcp,
            &objects::deployment("tput", &name, "tput", r, ann)?,
        )
        .await?;
        seen_at(env, cluster, &format!("tput/{name}")).await?;
    }
    progress(&format!(
        "throughput: direct, {n} deployments, concurrency {}",
        env.knobs.concurrency
    ));
    let mut items = Vec::with_capacity(n);
    for i in 0..n {
        let (cluster, _) = region(i);
        let d = objects::deployment("tput-base", &format!("t-{i:05}"), "tput", r, json!({}))?;
        items.push((env.cluster(cluster)?.clone(), cluster.to_string(), d));
    }
    let (_, base) = burst(env, items).await?;
    progress(&format!("throughput: direct took {}", stats::ms(base)));
    let cpu0 = env.tmcd.cpu()?;
    progress(&format!("throughput: through tmc, {n} deployments"));
    let mut items = Vec::with_capacity(n);
    for i in 0..n {
        let (cluster, reg) = region(i);
        let ann = json!({"tmc.kcp.io/regions": reg});
        let d = objects::deployment("tput", &format!("t-{i:05}"), "tput", r, ann)?;
        items.push((env.kcp.clone(), cluster.to_string(), d));
    }
    let (created, tmc) = burst(env, items).await?;
    let cpu = env.tmcd.cpu()? - cpu0;
    for line in tmcd_counters(env).await {
        progress(&format!("throughput: tmcd metric {line}"));
    }
    progress(&format!(
        "throughput: tmc took {} (tmcd CPU {:.2} s)",
        stats::ms(tmc),
        cpu.as_secs_f64()
    ));
    let per_s = |d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    Ok(vec![
        Row {
            what: format!(
                "{n} creates -> all on 2 targets (c={})",
                env.knobs.concurrency
            ),
            tmc: format!("{:.2} s", tmc.as_secs_f64()),
            baseline: format!("{:.2} s", base.as_secs_f64()),
            ratio: stats::ratio(tmc.as_secs_f64(), base.as_secs_f64()),
            target: "<= 30 s".into(),
        },
        Row {
            what: format!("  {n} creates into kcp: with tmcd / kcp alone"),
            tmc: format!("{:.2} s", created.as_secs_f64()),
            baseline: format!("{:.2} s", env.kcp_alone.as_secs_f64()),
            ratio: stats::ratio(created.as_secs_f64(), env.kcp_alone.as_secs_f64()),
            target: "-".into(),
        },
        Row {
            what: "  objects/s".into(),
            tmc: format!("{:.0}/s", per_s(tmc)),
            baseline: format!("{:.0}/s", per_s(base)),
            ratio: stats::ratio(per_s(tmc), per_s(base)),
            target: "-".into(),
        },
        Row {
            what: "  tmcd CPU during the burst".into(),
            tmc: format!("{:.2} s", cpu.as_secs_f64()),
            baseline: "-".into(),
            ratio: "-".into(),
            target: "-".into(),
        },
    ])
}
