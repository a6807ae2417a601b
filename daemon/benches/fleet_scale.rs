//! fleet_scale: tmcd at fleet size, on a fleet bed (`tmc_tests::testbed::fleet`: N targets, logical clusters
//! of a second kcp), every figure beside a baseline measured in the same run.
//!
//! 1. floor: W Deployments created in the control plane's kcp with nobody watching (then deleted);
//! 2. direct: the same W creates made directly on the 3 chosen targets (3 W creates into the fleet kcp, the same
//!    concurrency; then deleted): what writing every copy costs without tmc;
//! 3. tmc: tmcd (the real binary, a child process) with N push targets and `replica-spread` over the 3 targets
//!    of one region; W Deployments created in kcp; the time from the first create until every copy exists on
//!    the 3 (and, checked after, nothing on the other N-3), tmcd's RSS and CPU seconds, and the CPU seconds of
//!    both kcps during the burst.
//!
//! Knobs (environment): TMC_FLEET_TARGETS (100), TMC_FLEET_WORKLOADS (1000), TMC_FLEET_CONCURRENCY (16),
//! TMC_FLEET_TIMEOUT_S (900), TMC_BENCH_TMCD (`release/tmcd` in CARGO_TARGET_DIR, else `target/release/tmcd`).
//! Run: `hack/bench.sh --only fleet`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use tmc_tests::fixtures;
use tmc_tests::fleet_load::{self, Copies};
use tmc_tests::testbed::fleet::Location;
use tmc_tests::testbed::{TestBed, progress};

struct Knobs {
    targets: usize,
    workloads: usize,
    concurrency: usize,
    timeout: Duration,
    tmcd: PathBuf,
}

fn knob(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?} is not a whole number")),
        Err(_) => Ok(default),
    }
}

impl Knobs {
    fn from_env() -> Result<Self> {
        let targets = knob("TMC_FLEET_TARGETS", 100)? as usize;
        if targets < 3 {
            bail!("TMC_FLEET_TARGETS={targets}: the bench places on 3 targets, give at least 3");
        }
        let tmcd = std::env::var_os("TMC_BENCH_TMCD")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::var_os("CARGO_TARGET_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| tmc_tests::testbed::binaries::repo_root().join("target"))
                    .join("release/tmcd")
            });
        if !tmcd.is_file() {
            bail!(
                "{} is missing (fix: cargo build --release -p tmc-daemon --bin tmcd, or set TMC_BENCH_TMCD)",
                tmcd.display()
            );
        }
        Ok(Self {
            targets,
            workloads: knob("TMC_FLEET_WORKLOADS", 1000)? as usize,
            concurrency: knob("TMC_FLEET_CONCURRENCY", 16)?.max(1) as usize,
            timeout: Duration::from_secs(knob("TMC_FLEET_TIMEOUT_S", 900)?),
            tmcd,
        })
    }
}

/// Targets 1, 1 + k and 1 + 2k (k = targets / 3, counted from 0) are in region [`CHOSEN_REGION`], every other
/// target i in `r<i mod 10>`; zones are `<name>-a`.
fn locate(targets: usize) -> impl Fn(usize, &str) -> Location + Copy {
    let k = (targets / 3).max(1);
    move |i, name| Location {
        region: if i % k == 1 % k && i / k < 3 {
            CHOSEN_REGION.to_owned()
        } else {
            format!("r{}", i % 10)
        },
        zone: format!("{name}-a"),
    }
}

const CHOSEN_REGION: &str = "chosen";

fn cpu_seconds(pid: u32) -> Result<f64> {
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

fn rss_mib(pid: u32) -> Result<(f64, f64)> {
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

async fn namespace(client: &kube::Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating namespace {name}")),
    }
}

async fn delete_all(client: &kube::Client, ns: &str) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    api.delete_collection(&Default::default(), &ListParams::default())
        .await
        .with_context(|| format!("deleting the Deployments of namespace {ns}"))?;
    Ok(())
}

/// Deployments in `ns` on each of `clients`, by target name.
async fn copies_on(
    clients: &[(String, kube::Client)],
    ns: &str,
) -> Result<BTreeMap<String, Copies>> {
    let mut out = BTreeMap::new();
    for (name, client) in clients {
        let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let list = api.list(&ListParams::default()).await?;
        let copies = list
            .items
            .into_iter()
            .map(|d| {
                let r = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                (d.metadata.name.unwrap_or_default(), r)
            })
            .collect();
        out.insert(name.clone(), copies);
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<()> {
    let knobs = Knobs::from_env()?;
    let (n, w, c) = (knobs.targets, knobs.workloads, knobs.concurrency);
    let mut bed = TestBed::builder()
        .workspace("root:tmc")
        .fleet(n)
        .start()
        .await?;
    bed.install_kube_crds().await?;
    let kcp = bed.kcp_client().await?;
    let names = bed.fleet()?.names();
    let locate = locate(n);
    let chosen: Vec<String> = names
        .iter()
        .enumerate()
        .filter(|(i, name)| locate(*i, name).region == CHOSEN_REGION)
        .map(|(_, name)| name.clone())
        .collect();
    let mut chosen_clients = Vec::new();
    for name in &chosen {
        let target = bed.fleet()?.target(name).context("chosen target")?;
        chosen_clients.push((name.clone(), target.client().await?));
    }
    let expected: Copies = (0..w)
        .map(|i| (format!("w{i:05}"), 3 + (i % 5) as i32))
        .collect();
    let pids: BTreeMap<String, u32> = bed.pids().into_iter().collect();
    let cpu = |name: &str| pids.get(name).map_or(Ok(f64::NAN), |p| cpu_seconds(*p));

    // 1. The control plane's floor: the same creates into kcp, nobody watching.
    namespace(&kcp, "floor").await?;
    progress(&format!("floor: {w} creates into kcp, concurrency {c}"));
    let floor = fleet_load::create_deployments(&kcp, "floor", &expected, json!({}), c).await?;
    delete_all(&kcp, "floor").await?;

    // 2. Direct: every copy written straight to the chosen targets, the same concurrency.
    progress(&format!(
        "direct: {} creates on {chosen:?}, concurrency {c}",
        w * chosen.len()
    ));
    for (_, client) in &chosen_clients {
        namespace(client, "direct").await?;
    }
    let direct_started = Instant::now();
    futures::stream::iter(chosen_clients.iter().flat_map(|(_, client)| {
        expected
            .iter()
            .map(move |(name, replicas)| (client, name, *replicas))
    }))
    .map(|(client, name, replicas)| async move {
        let d = fixtures::deployment("direct", name, replicas, json!({}), json!({}))?;
        Api::<Deployment>::namespaced(client.clone(), "direct")
            .create(&PostParams::default(), &d)
            .await
            .with_context(|| format!("creating direct/{name}"))?;
        Ok::<_, anyhow::Error>(())
    })
    .buffer_unordered(c)
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .collect::<Result<Vec<()>>>()?;
    let direct = direct_started.elapsed();
    for (_, client) in &chosen_clients {
        delete_all(client, "direct").await?;
    }

    // 3. tmc.
    let policies = bed.dir().join("policies");
    std::fs::create_dir_all(&policies)?;
    fixtures::install_policy(&policies, "replica-spread", "replica-spread")?;
    let config = bed.dir().join("tmc.toml");
    let text = fleet_load::tmc_toml(
        &bed,
        "tmc-fleet",
        locate,
        "[sync]\nresources = [\"deployments.apps\"]\n\n[policies]\ndirectory = \"policies\"\n\n\
         [admin]\naddress = \"127.0.0.1:0\"\n\n[leader_election]\nenabled = false\n",
    )?;
    std::fs::write(&config, text)?;
    let tmcd_started = Instant::now();
    let mut tmcd = bed.spawn("tmcd", &knobs.tmcd, ["--config".into(), config.clone()])?;
    let tmcd_pid = tmcd.pid();
    let ready = fleet_load::wait_targets_ready(&kcp, &names, knobs.timeout).await;
    tmcd.ensure_running()
        .context("tmcd exited; see tmcd.log in the bed dir")?;
    ready?;
    let ready_after = tmcd_started.elapsed();
    fixtures::apply_placement(
        &kcp,
        "fleet-bench",
        "spread",
        json!({
            "policy": {"name": "replica-spread"},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "placed"}},
            "locationSelectors": [{"matchLabels": {"topology.kubernetes.io/region": CHOSEN_REGION}}],
        }),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss_idle, _) = rss_mib(tmcd_pid)?;
    let cpu_idle = cpu_seconds(tmcd_pid)?;
    namespace(&kcp, "placed").await?;
    let (kcp0, fleet0, tmcd0) = (cpu("kcp")?, cpu("fleet-kcp")?, cpu_idle);

    progress(&format!("tmc: {w} creates into kcp, placed on {chosen:?}"));
    let burst = Instant::now();
    let created = fleet_load::create_deployments(&kcp, "placed", &expected, json!({}), c).await?;
    let deadline = burst + knobs.timeout;
    let placed = loop {
        let observed = copies_on(&chosen_clients, "placed").await?;
        let problems = fleet_load::spread_problems(&expected, &chosen, &observed, 3);
        if problems.is_empty() {
            break burst.elapsed();
        }
        tmcd.ensure_running()
            .context("tmcd exited; see tmcd.log in the bed dir")?;
        if Instant::now() > deadline {
            bail!("not all copies after {:?}: {problems:?}", knobs.timeout);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (kcp1, fleet1, tmcd1) = (cpu("kcp")?, cpu("fleet-kcp")?, cpu_seconds(tmcd_pid)?);
    let (rss, hwm) = rss_mib(tmcd_pid)?;
    // Nothing anywhere else.
    let everywhere = fleet_load::copies_by_target(&bed, "placed").await?;
    let problems = fleet_load::spread_problems(&expected, &chosen, &everywhere, 5);
    if !problems.is_empty() {
        bail!("copies where they do not belong: {problems:?}");
    }

    let s = |d: Duration| d.as_secs_f64();
    println!("benchmark fleet_scale ({n} targets, {w} workloads on {chosen:?}, concurrency {c})");
    println!(
        "  floor: {w} creates into kcp alone            {:8.1} s",
        s(floor)
    );
    println!(
        "  direct: {} creates on the 3 targets          {:8.1} s",
        w * chosen.len(),
        s(direct)
    );
    println!(
        "  tmc: {w} creates into kcp (tmcd running)     {:8.1} s",
        s(created)
    );
    println!(
        "  tmc: first create -> every copy on the 3      {:8.1} s  = {:.1}x floor, {:.1}x direct",
        s(placed),
        s(placed) / s(floor),
        s(placed) / s(direct)
    );
    println!(
        "  tmcd start -> {n} SyncTargets Ready           {:8.1} s",
        s(ready_after)
    );
    println!("  tmcd VmRSS idle ({n} targets, 0 workloads)     {rss_idle:8.1} MiB");
    println!("  tmcd VmRSS / VmHWM after the burst           {rss:8.1} / {hwm:.1} MiB");
    println!(
        "  tmcd CPU: start+idle / burst                 {cpu_idle:8.1} / {:.1} s",
        tmcd1 - tmcd0
    );
    println!(
        "  kcp CPU during the burst (control plane)     {:8.1} s",
        kcp1 - kcp0
    );
    println!(
        "  fleet kcp CPU during the burst               {:8.1} s",
        fleet1 - fleet0
    );
    drop(tmcd);
    bed.shutdown();
    Ok(())
}
