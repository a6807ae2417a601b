//! Benchmark 4: rename a different placement module into place -> first change on east.

use super::*;

/// Benchmark 4: rename a different placement module into place -> first change on east.
pub async fn reload(env: &env::Env) -> Result<Vec<Row>> {
    let k = env.knobs.reload_workloads;
    let r = env.knobs.replicas;
    objects::namespace(&env.kcp, "reload").await?;
    objects::placement(
        &env.kcp,
        "reload",
        "reload",
        json!({
            "policy": {"name": "mover"},
            "locationPreferences": [
                {"matchLabels": {"topology.kubernetes.io/region": "us-west"}},
                {"matchLabels": {"topology.kubernetes.io/region": "us-east"}},
            ],
        }),
    )
    .await?;
    let keys: Vec<String> = (0..k).map(|i| format!("reload/r-{i:03}")).collect();
    for i in 0..k {
        let d = objects::deployment("reload", &format!("r-{i:03}"), "reload", r, json!({}))?;
        objects::create(&env.kcp, &d).await?;
    }
    let west = env.tracker("west")?;
    let east = env.tracker("east")?;
    west.until("reload workloads on west", env.knobs.timeout, |s| {
        (s.count_present(keys.iter()) == k).then_some(())
    })
    .await?;
    let mut samples = Vec::new();
    for rep in 0..env.knobs.reloads {
        // Even reps: active-passive -> location-affinity (copies appear on east); odd: back.
        let (module, on_east) = if rep % 2 == 0 {
            ("location-affinity", true)
        } else {
            ("active-passive", false)
        };
        let t0 = fixtures::install_policy(&env.policy_dir(), module, "mover")?;
        let first = east
            .until(
                "the first change after the reload",
                env.knobs.timeout,
                |s| {
                    s.changes
                        .iter()
                        .find(|(at, key, _)| *at >= t0 && key.starts_with("reload/"))
                        .map(|(at, _, _)| *at)
                },
            )
            .await?;
        let done = east
            .until("every reload workload moved", env.knobs.timeout, |s| {
                let n = s.count_present(keys.iter());
                (n == if on_east { k } else { 0 }).then(Instant::now)
            })
            .await?;
        samples.push(first - t0);
        progress(&format!(
            "reload {}/{}: -> {module}: first change {} all {} moved {}",
            rep + 1,
            env.knobs.reloads,
            stats::ms(first - t0),
            k,
            stats::ms(done - t0)
        ));
        // Let the file watcher's debounce window pass so reps do not merge.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let p50 = stats::percentile(&samples, 50.0);
    let max = samples.iter().max().copied().unwrap_or_default();
    Ok(vec![Row {
        what: format!(
            "policy rename -> first downstream change (reps={})",
            samples.len()
        ),
        tmc: format!("p50 {} max {}", stats::ms(p50), stats::ms(max)),
        baseline: "-".into(),
        ratio: "-".into(),
        target: "p50 <= 1 s".into(),
    }])
}
