//! Policy engine benchmark (not a test): prints p50/p99 and ratios against a
//! baseline measured in the same run.
//!
//! 1. One placement with `location-affinity` on a typical Deployment summary
//!    and 10 candidate targets, instantiation and JSON both ways included,
//!    against the same logic run natively on the same request through
//!    `tmc_policy_sdk::testing` (serialize, entry point, decode, host rules).
//! 2. Hot reload of `location-affinity.wasm` (the size is printed): file written -> new generation active,
//!    for never-seen modules (compiled) and for modules seen before (cache).
//!
//! Run: `hack/build-policies.sh && cargo bench -p tmc-policy-host --bench policy_engine`

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use location_affinity::LocationAffinity;
use tmc_policy_host::{HostConfig, PolicyHost, Tier};
use tmc_policy_sdk::{
    LabelSelector, Location, Placement, PlacementRequest, StringMap, Target, Workload, testing,
};

const PLACE_ITERS: usize = 5_000;
const RELOAD_ITERS: usize = 15;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let module_path = root.join("target/policies/location-affinity.wasm");
    let module = std::fs::read(&module_path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read {}: {e}; run hack/build-policies.sh first",
            module_path.display()
        )
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(&root, &module))
}

async fn run(root: &Path, module: &[u8]) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("location-affinity.wasm"), module)?;
    let go = root.join("target/policies/location-affinity-go.wasm");
    if go.exists() {
        std::fs::copy(&go, dir.path().join("location-affinity-go.wasm"))?;
    }
    let host = PolicyHost::new(HostConfig::default())?;
    let report = host.load_dir(dir.path()).await?;
    anyhow::ensure!(report.refused.is_empty(), "refused: {:?}", report.refused);
    // Evaluations are measured on the optimized (Cranelift) code.
    host.wait_optimized().await;
    anyhow::ensure!(
        host.generation()
            .active("location-affinity")
            .is_some_and(|a| a.tier() == Tier::Optimized),
        "location-affinity is not served by optimized code"
    );

    let req = typical_request();
    if let Ok(secs) = std::env::var("TMC_BENCH_PLACE_LOOP_S") {
        // Profiling aid: only `place_blocking` in a loop for that many
        // seconds, of `location-affinity` or of TMC_BENCH_PLACE_POLICY (e.g.
        // `location-affinity-go`), on a blocking thread (WASI calls of Go
        // policies must not run on an async worker thread).
        let until = Instant::now() + Duration::from_secs(secs.parse()?);
        let policy = std::env::var("TMC_BENCH_PLACE_POLICY")
            .unwrap_or_else(|_| "location-affinity".to_string());
        let (host, req) = (host.clone(), req.clone());
        let calls = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
            let mut calls = 0u64;
            while Instant::now() < until {
                host.place_blocking(&policy, &req)?;
                calls += 1;
            }
            Ok(calls)
        })
        .await??;
        println!("{calls} calls");
        return Ok(());
    }
    let input_len = serde_json::to_vec(&req)?.len();
    println!(
        "== placement: location-affinity, 10 candidate targets, request {input_len} bytes JSON"
    );

    let native = sample(PLACE_ITERS, || {
        testing::place::<LocationAffinity>(&req)
            .map(|_| ())
            .map_err(anyhow::Error::msg)
    })?;
    let wasm_blocking = sample(PLACE_ITERS, || {
        host.place_blocking("location-affinity", &req)
            .map(|_| ())
            .map_err(Into::into)
    })?;
    let mut wasm_async = Vec::with_capacity(PLACE_ITERS);
    for _ in 0..PLACE_ITERS / 10 {
        host.place("location-affinity", &req).await?;
    }
    for _ in 0..PLACE_ITERS {
        let t = Instant::now();
        host.place("location-affinity", &req).await?;
        wasm_async.push(t.elapsed());
    }
    let fuel = host.place_blocking("location-affinity", &req)?.fuel_used;
    let (n50, n99) = percentiles(native);
    let (b50, b99) = percentiles(wasm_blocking);
    let (a50, a99) = percentiles(wasm_async);
    println!(
        "native (same JSON path)      p50 {:>9} p99 {:>9}",
        us(n50),
        us(n99)
    );
    println!(
        "wasm place_blocking          p50 {:>9} p99 {:>9}  ratio p50 {:.2}x native",
        us(b50),
        us(b99),
        ratio(b50, n50)
    );
    println!(
        "wasm place (async API)       p50 {:>9} p99 {:>9}  ratio p50 {:.2}x native",
        us(a50),
        us(a99),
        ratio(a50, n50)
    );
    println!("fuel per evaluation: {fuel}");

    let unmetered_host = PolicyHost::new(HostConfig {
        fuel: 0,
        ..HostConfig::default()
    })?;
    unmetered_host.load_dir(dir.path()).await?;
    unmetered_host.wait_optimized().await;
    let unmetered = sample(PLACE_ITERS, || {
        unmetered_host
            .place_blocking("location-affinity", &req)
            .map(|_| ())
            .map_err(Into::into)
    })?;
    let (u50, u99) = percentiles(unmetered);
    println!(
        "wasm place_blocking, no fuel p50 {:>9} p99 {:>9}  ratio p50 {:.2}x native",
        us(u50),
        us(u99),
        ratio(u50, n50)
    );

    // Optional: another build of the same policy (e.g. other opt-level or
    // allocator) at target/policies/location-affinity-alt.wasm, measured in
    // the same run for a fair comparison.
    let alt = root.join("target/policies/location-affinity-alt.wasm");
    if alt.exists() {
        let alt_dir = tempfile::tempdir()?;
        std::fs::copy(&alt, alt_dir.path().join("alt.wasm"))?;
        let alt_host = PolicyHost::new(HostConfig::default())?;
        alt_host.load_dir(alt_dir.path()).await?;
        alt_host.wait_optimized().await;
        let again = sample(PLACE_ITERS, || {
            host.place_blocking("location-affinity", &req)
                .map(|_| ())
                .map_err(Into::into)
        })?;
        let alt_samples = sample(PLACE_ITERS, || {
            alt_host
                .place_blocking("alt", &req)
                .map(|_| ())
                .map_err(Into::into)
        })?;
        let alt_fuel = alt_host.place_blocking("alt", &req)?.fuel_used;
        let (r50, _) = percentiles(again);
        let (x50, x99) = percentiles(alt_samples);
        println!(
            "alt build place_blocking     p50 {:>9} p99 {:>9}  (main build again: p50 {}; alt fuel {alt_fuel})",
            us(x50),
            us(x99),
            us(r50)
        );
    }

    let trivial =
        wat::parse_file(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good-v1.wat"))?;
    let trivial_dir = tempfile::tempdir()?;
    std::fs::write(trivial_dir.path().join("trivial.wasm"), trivial)?;
    let trivial_host = PolicyHost::new(HostConfig::default())?;
    trivial_host.load_dir(trivial_dir.path()).await?;
    trivial_host.wait_optimized().await;
    let fixed = sample(PLACE_ITERS, || {
        trivial_host
            .place_blocking("trivial", &req)
            .map(|_| ())
            .map_err(Into::into)
    })?;
    let (f50, f99) = percentiles(fixed);
    println!(
        "host fixed cost (WAT module answering a constant): p50 {:>9} p99 {:>9}",
        us(f50),
        us(f99)
    );

    if host.generation().active("location-affinity-go").is_some() {
        // The Go runtime calls WASI, whose sync bindings must not run on an
        // async worker thread: measure on a blocking thread.
        let go_host = host.clone();
        let go_req = req.clone();
        let (go_samples, go_fuel) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let samples = sample(2000, || {
                go_host
                    .place_blocking("location-affinity-go", &go_req)
                    .map(|_| ())
                    .map_err(Into::into)
            })?;
            let fuel = go_host
                .place_blocking("location-affinity-go", &go_req)?
                .fuel_used;
            Ok((samples, fuel))
        })
        .await??;
        let (g50, g99) = percentiles(go_samples);
        println!(
            "wasm Go twin place_blocking  p50 {:>9} p99 {:>9}  ratio p50 {:.2}x native (fuel {go_fuel})",
            us(g50),
            us(g99),
            ratio(g50, n50)
        );
    }

    println!(
        "\n== hot reload: {} byte module, file written -> new generation active",
        module.len()
    );
    let reload_dir = tempfile::tempdir()?;
    let reload_host = PolicyHost::new(HostConfig::default())?;
    reload_host.load_dir(reload_dir.path()).await?;
    let _watch = reload_host.watch(reload_dir.path())?;
    let target = reload_dir.path().join("p.wasm");
    let cold = reload_samples(&reload_host, &target, |i| variant(module, i)).await?;
    let warm = reload_samples(&reload_host, &target, |i| variant(module, i % 2)).await?;
    // Baseline in the same run: Cranelift only (tiered compilation off).
    let single_dir = tempfile::tempdir()?;
    let single_host = PolicyHost::new(HostConfig {
        tiered: false,
        ..HostConfig::default()
    })?;
    single_host.load_dir(single_dir.path()).await?;
    let _single_watch = single_host.watch(single_dir.path())?;
    let single = reload_samples(&single_host, &single_dir.path().join("p.wasm"), |i| {
        variant(module, 100 + i)
    })
    .await?;
    let config = reload_host.config();
    println!(
        "settle {:?} after a rename (debounce {:?} after partial writes)",
        config.settle, config.debounce
    );
    let (c50, c99) = percentiles(cold.iter().map(|s| s.active).collect());
    let (o50, o99) = percentiles(cold.iter().map(|s| s.optimized).collect());
    let (w50, w99) = percentiles(warm.iter().map(|s| s.active).collect());
    let (s50, s99) = percentiles(single.iter().map(|s| s.active).collect());
    println!(
        "new module, Cranelift only (tiered off)  p50 {:>9} p99 {:>9}",
        ms(s50),
        ms(s99)
    );
    println!(
        "new module, tiered: active (Winch)       p50 {:>9} p99 {:>9}  ratio p50 {:.2}x Cranelift only",
        ms(c50),
        ms(c99),
        ratio(c50, s50)
    );
    println!(
        "new module, tiered: optimized swapped in p50 {:>9} p99 {:>9}",
        ms(o50),
        ms(o99)
    );
    println!(
        "module seen before (cache)               p50 {:>9} p99 {:>9}  ratio p50 {:.2}x Cranelift only",
        ms(w50),
        ms(w99),
        ratio(w50, s50)
    );
    let baseline_tier = cold.iter().filter(|s| s.tier == Tier::Baseline).count();
    println!(
        "tier at activation: {baseline_tier}/{} new modules baseline; compilations: {} (+{} Cranelift in the background)",
        cold.len(),
        reload_host.compiled_modules(),
        reload_host.optimized_modules()
    );
    Ok(())
}

/// One reload: rename -> new generation active, and -> optimized code serving.
struct ReloadSample {
    active: Duration,
    optimized: Duration,
    tier: Tier,
}

/// Writes `make(i)` to `path` (via rename, as deploy tools do) and waits for
/// the generation it produces, then for its optimized code; the next write
/// starts from an idle host.
async fn reload_samples(
    host: &PolicyHost,
    path: &PathBuf,
    make: impl Fn(usize) -> Vec<u8>,
) -> anyhow::Result<Vec<ReloadSample>> {
    let mut out = Vec::with_capacity(RELOAD_ITERS);
    let tmp = path.with_extension("tmp");
    // Prime: the first two variants, so the warm series starts from cached modules.
    for i in 0..RELOAD_ITERS + 2 {
        let bytes = make(i + 1000);
        let before = host.generation().number;
        let mut rx = host.subscribe();
        std::fs::write(&tmp, &bytes)?;
        let t = Instant::now();
        std::fs::rename(&tmp, path)?;
        tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|g| *g > before))
            .await
            .map_err(|_| anyhow::anyhow!("no reload within 30 s"))??;
        let active = t.elapsed();
        let tier = host
            .generation()
            .active("p")
            .map(|a| a.tier())
            .ok_or_else(|| anyhow::anyhow!("p is not active"))?;
        host.wait_optimized().await;
        let optimized = t.elapsed();
        if i >= 2 {
            out.push(ReloadSample {
                active,
                optimized,
                tier,
            });
        }
        // Let the file events of this write drain before the next one.
        tokio::time::sleep(host.config().debounce * 2).await;
    }
    Ok(out)
}

/// The module with a custom section naming `i`: same code, new digest.
fn variant(module: &[u8], i: usize) -> Vec<u8> {
    let name = b"tmc-bench";
    let payload = format!("{i}");
    let body_len = 1 + name.len() + payload.len();
    let mut out = module.to_vec();
    out.push(0); // custom section id
    out.push(body_len as u8); // < 128: one LEB128 byte
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(payload.as_bytes());
    out
}

fn sample(
    iters: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Duration>> {
    for _ in 0..iters / 10 {
        f()?;
    }
    let mut out = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        f()?;
        out.push(t.elapsed());
    }
    Ok(out)
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.50), at(0.99))
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-12)
}

fn us(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn labels(pairs: &[(&str, &str)]) -> StringMap {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A Deployment with the usual metadata, placed over 10 targets in 4 regions.
fn typical_request() -> PlacementRequest {
    let regions = ["us-west-1", "us-east-1", "eu-central-1", "ap-south-1"];
    let targets = (0..10)
        .map(|i| {
            let region = regions[i % regions.len()];
            let zone = format!("{region}{}", ["a", "b", "c"][i % 3]);
            Target {
                name: format!("cluster-{i:02}"),
                labels: labels(&[
                    ("topology.kubernetes.io/region", region),
                    ("topology.kubernetes.io/zone", &zone),
                    ("env", if i % 5 == 0 { "staging" } else { "prod" }),
                    ("provider", if i % 2 == 0 { "aws" } else { "gcp" }),
                ]),
                location: Location {
                    region: region.into(),
                    zone,
                },
                ready: i != 7,
                schedulable: true,
                capacity: Some(20 + i as u32),
                current: None,
            }
        })
        .collect();
    PlacementRequest {
        workload: Workload {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: "checkout".into(),
            labels: labels(&[
                ("app.kubernetes.io/name", "checkout"),
                ("app.kubernetes.io/part-of", "shop"),
                ("app.kubernetes.io/version", "1.42.0"),
            ]),
            annotations: labels(&[
                ("tmc.kcp.io/regions", "us-west-1, us-east-1, eu-central-1"),
                ("deployment.kubernetes.io/revision", "7"),
            ]),
            replicas: Some(12),
        },
        placement: Placement {
            name: "checkout".into(),
            location_selectors: vec![LabelSelector {
                match_labels: labels(&[("env", "prod")]),
                match_expressions: Vec::new(),
            }],
            location_preferences: vec![LabelSelector {
                match_labels: labels(&[("provider", "aws")]),
                match_expressions: Vec::new(),
            }],
        },
        settings: serde_json::json!({"mode": "preferred", "maxTargets": 5}),
        targets,
    }
}
