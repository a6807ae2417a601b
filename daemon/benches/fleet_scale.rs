//! fleet_scale: tmcd at fleet size, on a fleet bed (`tmc_tests::fleet_load::FleetSetup`: N targets, logical
//! clusters of a second kcp), every figure beside a baseline measured in the same run.
//!
//! 1. floor: W Deployments created in the control plane's kcp with nobody watching (then deleted);
//! 2. direct: the same W creates made directly on the 3 chosen targets (3 W creates into the fleet kcp, the same
//!    concurrency; then deleted): what writing every copy costs without tmc;
//! 3. tmc: tmcd (this bench binary re-run as `fleet_scale tmcd --config <file>`: the daemon of this very build,
//!    in a process of its own) with N push targets and `replica-spread` over the 3 targets of one region; W
//!    Deployments created in kcp; the time from the first create until every copy exists on the 3 (and, checked
//!    after, nothing on the other N-3), tmcd's RSS, CPU seconds, open watches and sockets, and the CPU seconds of
//!    both kcps during the burst;
//! 4. latency at steady state, with the W placed: L creates one at a time, each timed until a watch on each of
//!    the 3 targets has seen its copy, interleaved with the same create made directly on the 3 targets;
//! 5. restart: tmcd stopped and started again with everything placed; the time until it has reconciled every
//!    workload, and the writes both kcps served meanwhile, by resource (target: none to Deployments);
//! 6. policy change at scale: the placement's `replica-spread` settings replaced (weights 1, 1, 0 over the 3:
//!    every workload re-split onto the first two); the time until the first two hold every workload's whole
//!    replica count (the third keeps its old copies: a scale-down waits for the gainers' availability, which
//!    fleet targets never report);
//! 7. a SyncTarget cut off: the second chosen target, which tmcd reaches through a pausable TCP proxy
//!    (`FleetSetup::route_through_proxy`), is paused and its connections cut; the time until its SyncTarget is
//!    not Ready and until its share is re-placed (the first target holds every workload's whole count, the
//!    placement's eviction grace being TMC_FLEET_GRACE_S), then a check that its copies are all still there.
//!
//! Each phase prints its figures as soon as it ends, so a phase that fails or times out loses only its own.
//! Each phase (burst, latency, policy change, cut-off) also prints the writes both kcps served during it,
//! by resource and verb, per workload, beside the floor (1 decision + k copies + k first status reports + 1
//! aggregate status per workload on k targets), and tmcd's reconciles and decisions per workload. The latency
//! phase splits each create -> copy time at the decision: create -> decision recorded upstream (tmcd) and
//! decision -> copies seen (the syncers).
//!
//! Knobs (environment): TMC_FLEET_TARGETS (100), TMC_FLEET_WORKLOADS (1000), TMC_FLEET_CONCURRENCY (16),
//! TMC_FLEET_LATENCY_N (100), TMC_FLEET_TIMEOUT_S (900), TMC_FLEET_GRACE_S (10). Run: `hack/bench.sh --only
//! fleet`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use tmc_api::crd::SyncTarget;
use tmc_api::decision::state_label;
use tmc_tests::copy_watch::KeysOf;
use tmc_tests::copy_watch::{CopyWatch, key};
use tmc_tests::figures::{
    cpu_seconds, delta, kcp_metrics, kcp_writes, kcp_writes_by_verb, knob, label, load_average,
    percentile_ms, rss_mib, samples, sockets, sum_of,
};
use tmc_tests::fixtures;
use tmc_tests::fleet_load::{self, Copies, FleetSetup};
use tmc_tests::testbed::fleet::Location;
use tmc_tests::testbed::progress;

mod tmcd_child;

struct Knobs {
    targets: usize,
    workloads: usize,
    concurrency: usize,
    latency_n: usize,
    timeout: Duration,
    grace_s: u32,
}

impl Knobs {
    fn from_env() -> Result<Self> {
        let targets = knob("TMC_FLEET_TARGETS", 100)? as usize;
        if targets < 3 {
            bail!("TMC_FLEET_TARGETS={targets}: the bench places on 3 targets, give at least 3");
        }
        Ok(Self {
            targets,
            workloads: knob("TMC_FLEET_WORKLOADS", 1000)? as usize,
            concurrency: knob("TMC_FLEET_CONCURRENCY", 16)?.max(1) as usize,
            latency_n: knob("TMC_FLEET_LATENCY_N", 100)? as usize,
            timeout: Duration::from_secs(knob("TMC_FLEET_TIMEOUT_S", 900)?),
            grace_s: u32::try_from(knob("TMC_FLEET_GRACE_S", 10)?)
                .context("TMC_FLEET_GRACE_S is too large")?,
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
/// The namespace tmc places (its copies keep the name downstream).
const PLACED: &str = "placed";
/// The namespace of the direct latency baseline on the chosen targets.
const DIRECT_LATENCY: &str = "lat-direct";

/// Watch requests a kcp serves now.
async fn open_watches(client: &kube::Client) -> Result<f64> {
    let text = kcp_metrics(client).await?;
    Ok(samples(&text, "apiserver_longrunning_requests")
        .filter(|(l, _)| label(l, "verb") == "WATCH")
        .map(|(_, v)| v)
        .sum())
}

/// The [`CopyWatch`] keys of Deployment `ns/name` on each of `targets`.
fn on_each(targets: &[String], ns: &str, name: &str) -> Vec<String> {
    targets.iter().map(|t| key(t, ns, name)).collect()
}

/// Deletes every Deployment of namespace `ns` and waits until none is left. A collection of 10,000 takes the
/// server longer than its request timeout, which then drops the connection while the deletes go on; the
/// request is made again (for what is left) until the list is empty.
async fn delete_all(client: &kube::Client, ns: &str) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let deleted = api
            .delete_collection(&Default::default(), &ListParams::default())
            .await;
        let left = api
            .list_metadata(&ListParams::default().limit(1))
            .await
            .with_context(|| format!("listing the Deployments of namespace {ns}"))?;
        if left.items.is_empty() {
            return Ok(());
        }
        let why = deleted
            .err()
            .map_or_else(|| "some left".to_owned(), |e| e.to_string());
        if Instant::now() > deadline {
            bail!("Deployments left in namespace {ns} after 30 minutes (last delete: {why})");
        }
        progress(&format!("deleting the Deployments of {ns}: {why}; again"));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// What both kcps and tmcd have counted so far: writes by `resource[/subresource] VERB`, and tmcd's
/// reconciles (`reconciles`) and decisions by outcome (`decisions <outcome>`).
struct Counts {
    kcp: BTreeMap<String, f64>,
    fleet: BTreeMap<String, f64>,
    tmcd: BTreeMap<String, f64>,
    at: Instant,
}

async fn counts(kcp: &kube::Client, fleet: &kube::Client, admin: &str) -> Result<Counts> {
    let text = tmcd_child::metrics(admin).await?;
    let mut tmcd = BTreeMap::new();
    tmcd.insert(
        "reconciles".to_owned(),
        samples(&text, "tmcd_reconciles_total")
            .map(|(_, v)| v)
            .sum(),
    );
    for (labels, v) in samples(&text, "tmcd_decisions_total") {
        *tmcd
            .entry(format!("decisions {}", label(labels, "outcome")))
            .or_insert(0.0) += v;
    }
    Ok(Counts {
        kcp: kcp_writes_by_verb(kcp).await?,
        fleet: kcp_writes_by_verb(fleet).await?,
        tmcd,
        at: Instant::now(),
    })
}

/// One phase's writes and tmcd's work, per workload, for the report.
struct Phase {
    name: &'static str,
    /// The workloads the phase is about.
    workloads: usize,
    secs: f64,
    kcp: BTreeMap<String, f64>,
    fleet: BTreeMap<String, f64>,
    tmcd: BTreeMap<String, f64>,
    /// Whether the phase places workloads for the first time (the floor of issue 13 applies) or moves placed
    /// ones (a decision and the copies that change: no fixed floor per workload).
    first_placement: bool,
}

impl Phase {
    /// `before` -> `after`, less the Deployment creates the bench itself made (`own_kcp` into kcp, `own_fleet`
    /// into the fleet kcp: the user's creates and the direct baseline's).
    fn new(
        name: &'static str,
        workloads: usize,
        before: &Counts,
        after: &Counts,
        own_kcp: f64,
        own_fleet: f64,
    ) -> Self {
        let mut kcp = delta(&before.kcp, &after.kcp);
        let mut fleet = delta(&before.fleet, &after.fleet);
        for (map, own) in [(&mut kcp, own_kcp), (&mut fleet, own_fleet)] {
            if own > 0.0 {
                let left = map.get("deployments POST").copied().unwrap_or(0.0) - own;
                if left == 0.0 {
                    map.remove("deployments POST");
                } else {
                    map.insert("deployments POST".into(), left);
                }
            }
        }
        Self {
            name,
            workloads,
            secs: after.at.duration_since(before.at).as_secs_f64(),
            kcp,
            fleet,
            tmcd: delta(&before.tmcd, &after.tmcd),
            first_placement: true,
        }
    }

    /// The phase moves workloads already placed: its report gives no first-placement floor.
    fn re_placing(mut self) -> Self {
        self.first_placement = false;
        self
    }

    /// Prints the phase's writes, per workload and in total, with the floor for `k` targets and the background
    /// expected from `idle` (writes in `idle_secs` of a running, idle tmcd).
    fn print(
        &self,
        k: usize,
        idle: (&BTreeMap<String, f64>, &BTreeMap<String, f64>),
        idle_secs: f64,
    ) {
        let n = self.workloads.max(1) as f64;
        let per = |m: &BTreeMap<String, f64>| -> String {
            m.iter()
                .map(|(key, v)| format!("{key} {:.2}", v / n))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let background = |m: &BTreeMap<String, f64>| -> String {
            m.iter()
                .map(|(key, v)| format!("{key} {:.0}", v * self.secs / idle_secs))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "  writes, {} ({} workloads, {:.1} s):",
            self.name, self.workloads, self.secs
        );
        let (kcp_floor, fleet_floor) = if self.first_placement {
            (
                format!(
                    "floor {}: 1 decision + {k} first status reports + 1 aggregate status",
                    2 + k
                ),
                format!("floor {k}: one copy per target"),
            )
        } else {
            (
                "a re-placement: 1 decision + the status reports of the copies that change"
                    .to_owned(),
                "a re-placement: one write per copy that changes".to_owned(),
            )
        };
        println!(
            "    kcp, Deployments per workload {:.2} ({kcp_floor}); events {:.2}",
            sum_of(&self.kcp, "deployments") / n,
            sum_of(&self.kcp, "events") / n
        );
        println!(
            "    fleet kcp, Deployments per workload {:.2} ({fleet_floor})",
            sum_of(&self.fleet, "deployments") / n
        );
        println!(
            "    tmcd per workload: {} (floor: 1 reconcile, 1 decision changed)",
            per(&self.tmcd)
        );
        println!("    kcp per workload: {}", per(&self.kcp));
        println!("    fleet kcp per workload: {}", per(&self.fleet));
        println!(
            "    kcp total {:?}; background at the idle rate: kcp {}; fleet kcp {}",
            self.kcp,
            background(idle.0),
            background(idle.1)
        );
        println!("    fleet kcp total {:?}", self.fleet);
    }
}

/// Waits until, for every workload of `expected`, the copies on `targets` sum to its replicas; returns when.
async fn until_held_by(
    targets: &[(String, kube::Client)],
    expected: &Copies,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<()>,
) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let observed = fleet_load::copies_on(targets, PLACED).await?;
        let short: Vec<&String> = expected
            .iter()
            .filter(|(name, desired)| {
                targets
                    .iter()
                    .map(|(t, _)| {
                        observed
                            .get(t)
                            .and_then(|c| c.get(*name))
                            .copied()
                            .unwrap_or(0)
                    })
                    .sum::<i32>()
                    != **desired
            })
            .map(|(name, _)| name)
            .collect();
        if short.is_empty() {
            return Ok(Instant::now());
        }
        alive()?;
        if Instant::now() > deadline {
            let names: Vec<&String> = targets.iter().map(|(t, _)| t).collect();
            bail!(
                "after {timeout:?}, {} workloads are not wholly on {names:?}, e.g. {:?}",
                short.len(),
                &short[..short.len().min(5)]
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// tmcd's live bytes by its allocator's count (`tmcd_memory_allocated_bytes`), in MiB; NaN if not reported.
async fn allocated_mib(admin: &str) -> Result<f64> {
    let text = tmcd_child::metrics(admin).await?;
    Ok(samples(&text, "tmcd_memory_allocated_bytes")
        .map(|(_, v)| v / f64::from(1 << 20))
        .next()
        .unwrap_or(f64::NAN))
}

/// The status of SyncTarget `name`'s Ready condition, if any.
async fn ready_of(kcp: &kube::Client, name: &str) -> Result<Option<String>> {
    let t = Api::<SyncTarget>::all(kcp.clone()).get(name).await?;
    Ok(t.status
        .unwrap_or_default()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(tmcd_child::ARG) {
        return tmcd_child::run("fleet_scale", &args);
    }
    tokio::runtime::Runtime::new()?.block_on(bench())
}

async fn bench() -> Result<()> {
    let knobs = Knobs::from_env()?;
    let (n, w, c) = (knobs.targets, knobs.workloads, knobs.concurrency);
    let myself = std::env::current_exe().context("the bench binary's own path")?;
    progress(&format!("tmcd: {} tmcd (this binary)", myself.display()));
    let mut setup = FleetSetup::start(n, locate(n), CHOSEN_REGION).await?;
    let (kcp, chosen) = (setup.kcp.clone(), setup.chosen.clone());
    // tmcd reaches the second chosen target through a proxy of its own, to cut it off in phase 7.
    let cut = chosen[1].clone();
    let proxy = setup.route_through_proxy(&cut).await?;
    let admin = setup.admin.clone();
    let kcp_base = setup.bed.kcp()?.client("base").await?;
    let fleet_base = setup.bed.fleet()?.kcp().client("base").await?;
    let mut chosen_clients = Vec::new();
    for name in &chosen {
        let target = setup.bed.fleet()?.target(name).context("chosen target")?;
        chosen_clients.push((name.clone(), target.client().await?));
    }
    let expected: Copies = (0..w)
        .map(|i| (format!("w{i:05}"), 3 + (i % 5) as i32))
        .collect();
    let pids: BTreeMap<String, u32> = setup.bed.pids().into_iter().collect();
    let cpu = |name: &str| pids.get(name).map_or(Ok(f64::NAN), |p| cpu_seconds(*p));
    let load_at_start = load_average();
    let s = |d: Duration| d.as_secs_f64();

    // 1. The control plane's floor: the same creates into kcp, nobody watching.
    fleet_load::ensure_namespace(&kcp, "floor").await?;
    progress(&format!("floor: {w} creates into kcp, concurrency {c}"));
    let floor = fleet_load::create_deployments(&kcp, "floor", &expected, json!({}), c).await?;
    delete_all(&kcp, "floor").await?;

    // 2. Direct: every copy written straight to the chosen targets, the same concurrency.
    progress(&format!(
        "direct: {} creates on {chosen:?}, concurrency {c}",
        w * chosen.len()
    ));
    for (_, client) in &chosen_clients {
        fleet_load::ensure_namespace(client, "direct").await?;
        fleet_load::ensure_namespace(client, DIRECT_LATENCY).await?;
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
    .try_collect::<Vec<()>>()
    .await?;
    let direct = direct_started.elapsed();
    for (_, client) in &chosen_clients {
        delete_all(client, "direct").await?;
    }
    // Each phase prints its figures as it ends: a phase that fails loses only its own.
    println!(
        "benchmark fleet_scale ({n} targets, {w} workloads on {chosen:?}, concurrency {c}, tmcd {})",
        myself.display()
    );
    println!("  load average (1 min) at the start: {load_at_start}");
    println!(
        "  floor: {w} creates into kcp alone              {:8.1} s",
        s(floor)
    );
    println!(
        "  direct: {} creates on the 3 targets            {:8.1} s",
        w * chosen.len(),
        s(direct)
    );

    // 3. tmc.
    let watches0 = (
        open_watches(&kcp_base).await?,
        open_watches(&fleet_base).await?,
    );
    let tmcd_args = || {
        [
            tmcd_child::ARG.into(),
            "--config".into(),
            setup.config.clone().into_os_string(),
        ]
    };
    let mut tmcd = setup.bed.spawn("tmcd", &myself, tmcd_args())?;
    let tmcd_pid = tmcd.pid();
    let ready = setup.place(PLACED, knobs.timeout).await;
    tmcd.ensure_running()
        .context("tmcd exited; see tmcd.log in the bed dir")?;
    let ready = ready?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss_idle, _) = rss_mib(tmcd_pid)?;
    let cpu_idle = cpu_seconds(tmcd_pid)?;
    let watches1 = (
        open_watches(&kcp_base).await?,
        open_watches(&fleet_base).await?,
    );
    let sockets_idle = sockets(tmcd_pid)?;
    let (kcp0, fleet0, tmcd0) = (cpu("kcp")?, cpu("fleet-kcp")?, cpu_idle);

    progress(&format!("tmc: {w} creates into kcp, placed on {chosen:?}"));
    let load_burst = load_average();
    let counts_burst = counts(&kcp_base, &fleet_base, &admin).await?;
    let burst = Instant::now();
    let created = fleet_load::create_deployments(&kcp, PLACED, &expected, json!({}), c).await?;
    let deadline = burst + knobs.timeout;
    let placed = loop {
        let observed = fleet_load::copies_on(&chosen_clients, PLACED).await?;
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
    let settled =
        tmcd_child::settled(&setup.admin, w as f64, knobs.timeout, || Ok(())).await? + placed;
    let burst_phase = Phase::new(
        "burst (first create -> settled)",
        w,
        &counts_burst,
        &counts(&kcp_base, &fleet_base, &admin).await?,
        w as f64,
        0.0,
    );
    let (rss, hwm) = rss_mib(tmcd_pid)?;
    // Nothing anywhere else.
    let everywhere = fleet_load::copies_by_target(&setup.bed, PLACED).await?;
    let problems = fleet_load::spread_problems(&expected, &chosen, &everywhere, 5);
    if !problems.is_empty() {
        bail!("copies where they do not belong: {problems:?}");
    }
    println!("  load average (1 min) at the burst: {load_burst}");
    println!(
        "  tmc: {w} creates into kcp (tmcd running)       {:8.1} s",
        s(created)
    );
    println!(
        "  tmc: first create -> every copy on the 3        {:8.1} s  = {:.1}x floor, {:.1}x direct",
        s(placed),
        s(placed) / s(floor),
        s(placed) / s(direct)
    );
    println!(
        "  tmc: first create -> tmcd settled (0 queued)    {:8.1} s",
        s(settled)
    );
    println!(
        "  tmcd start -> {n} SyncTargets Ready             {:8.1} s",
        s(ready)
    );
    println!("  tmcd VmRSS idle ({n} targets, 0 workloads)       {rss_idle:8.1} MiB");
    println!(
        "  tmcd VmRSS / VmHWM after the burst             {rss:8.1} / {hwm:.1} MiB (allocated {:.1} MiB)",
        allocated_mib(&admin).await?
    );
    println!(
        "  tmcd CPU: start+idle / burst                   {cpu_idle:8.1} / {:.1} s",
        tmcd1 - tmcd0
    );
    println!(
        "  watches opened by tmcd (kcp / fleet kcp)       {:8.0} / {:.0}",
        watches1.0 - watches0.0,
        watches1.1 - watches0.1
    );
    println!("  tmcd sockets, idle                             {sockets_idle:8}");
    println!(
        "  kcp CPU during the burst (control plane)       {:8.1} s",
        kcp1 - kcp0
    );
    println!(
        "  fleet kcp CPU during the burst                 {:8.1} s",
        fleet1 - fleet0
    );
    // The background: the writes of a running tmcd with everything placed and nothing to do.
    let quiet = Duration::from_secs(10);
    let (k0, f0) = (kcp_writes(&kcp_base).await?, kcp_writes(&fleet_base).await?);
    tokio::time::sleep(quiet).await;
    let (k1, f1) = (kcp_writes(&kcp_base).await?, kcp_writes(&fleet_base).await?);
    let (idle_kcp, idle_fleet) = (delta(&k0, &k1), delta(&f0, &f1));
    println!(
        "  running idle, the writes in {} s: kcp {idle_kcp:?}, fleet kcp {idle_fleet:?}",
        quiet.as_secs()
    );
    let idle = (&idle_kcp, &idle_fleet);
    burst_phase.print(chosen.len(), idle, quiet.as_secs_f64());

    // 4. Latency at steady state, tmc and direct interleaved.
    let seen = CopyWatch::start(&chosen_clients);
    // When each workload's decision (a state label for each of the 3) is seen upstream.
    let decided = {
        let chosen = chosen.clone();
        let keys: KeysOf = Box::new(move |d: &Deployment| {
            let labels = d.metadata.labels.as_ref();
            if chosen
                .iter()
                .all(|t| labels.is_some_and(|l| l.contains_key(&state_label(t))))
            {
                vec![key(
                    "decided",
                    d.metadata.namespace.as_deref().unwrap_or_default(),
                    d.metadata.name.as_deref().unwrap_or_default(),
                )]
            } else {
                Vec::new()
            }
        });
        CopyWatch::start_keyed(vec![(kcp.clone(), keys)])
    };
    seen.all(&on_each(&chosen, PLACED, "w00000"), knobs.timeout)
        .await?;
    let l = knobs.latency_n;
    progress(&format!(
        "latency: {l} creates one at a time, tmc and direct interleaved"
    ));
    let load_latency = load_average();
    let counts_latency = counts(&kcp_base, &fleet_base, &admin).await?;
    let (mut tmc_lat, mut direct_lat) = (Vec::with_capacity(l), Vec::with_capacity(l));
    let (mut to_decided, mut to_first, mut decided_to_all) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..l {
        let name = format!("l{i:05}");
        let d = fixtures::deployment(DIRECT_LATENCY, &name, 3, json!({}), json!({}))?;
        let t0 = Instant::now();
        futures::future::try_join_all(chosen_clients.iter().map(|(_, client)| {
            let (api, d) = (
                Api::<Deployment>::namespaced(client.clone(), DIRECT_LATENCY),
                &d,
            );
            async move { api.create(&PostParams::default(), d).await }
        }))
        .await
        .with_context(|| format!("creating {DIRECT_LATENCY}/{name} on the chosen targets"))?;
        direct_lat.push(
            seen.all(&on_each(&chosen, DIRECT_LATENCY, &name), knobs.timeout)
                .await?
                - t0,
        );
        let d = fixtures::deployment(PLACED, &name, 3, json!({}), json!({}))?;
        let t0 = Instant::now();
        Api::<Deployment>::namespaced(kcp.clone(), PLACED)
            .create(&PostParams::default(), &d)
            .await
            .with_context(|| format!("creating {PLACED}/{name} in kcp"))?;
        let keys = on_each(&chosen, PLACED, &name);
        let all = seen.all(&keys, knobs.timeout).await?;
        tmc_lat.push(all - t0);
        let at = decided
            .all(&[key("decided", PLACED, &name)], knobs.timeout)
            .await?;
        to_decided.push(at.saturating_duration_since(t0));
        decided_to_all.push(all.saturating_duration_since(at));
        if let Some(first) = keys.iter().filter_map(|k| seen.seen(k)).min() {
            to_first.push(first - t0);
        }
    }
    tmcd_child::settled(&setup.admin, (w + l) as f64, knobs.timeout, || Ok(())).await?;
    let latency_phase = Phase::new(
        "steady state (the latency run)",
        l,
        &counts_latency,
        &counts(&kcp_base, &fleet_base, &admin).await?,
        l as f64,
        (l * chosen.len()) as f64,
    );
    decided.stop();
    let (rss_steady, hwm_steady) = rss_mib(tmcd_pid)?;
    let cpu_steady = cpu_seconds(tmcd_pid)?;
    println!("  load average (1 min) at the latency run: {load_latency}");
    let p50_p99 = |samples: &[Duration]| {
        format!(
            "{:8.1} / {:.1} ms",
            percentile_ms(samples, 50.0),
            percentile_ms(samples, 99.0)
        )
    };
    println!(
        "  create -> copy seen on all 3, p50 / p99 (n={l})   {}  (direct on the 3: {})",
        p50_p99(&tmc_lat),
        p50_p99(&direct_lat).trim_start()
    );
    println!(
        "  create -> decision seen upstream, p50 / p99     {}",
        p50_p99(&to_decided)
    );
    println!(
        "  create -> first copy seen, p50 / p99           {}",
        p50_p99(&to_first)
    );
    println!(
        "  decision seen -> copy seen on all 3, p50 / p99 {}",
        p50_p99(&decided_to_all)
    );
    println!(
        "  tmcd VmRSS / VmHWM after the latency run       {rss_steady:8.1} / {hwm_steady:.1} MiB"
    );
    println!("  tmcd CPU seconds so far                        {cpu_steady:8.1} s");
    latency_phase.print(chosen.len(), idle, quiet.as_secs_f64());

    // 5. Restart with everything placed.
    progress("restart: tmcd stopped and started again");
    drop(tmcd);
    let load_restart = load_average();
    let (k2, f2) = (kcp_writes(&kcp_base).await?, kcp_writes(&fleet_base).await?);
    let mut tmcd = setup.bed.spawn("tmcd", &myself, tmcd_args())?;
    let reconciled =
        tmcd_child::settled(&setup.admin, (w + l) as f64, knobs.timeout, || Ok(())).await;
    tmcd.ensure_running()
        .context("restarted tmcd exited; see tmcd.log in the bed dir")?;
    let reconciled = reconciled?;
    // The syncers compare what they hold with their targets on their own schedule: give them the quiet window.
    tokio::time::sleep(quiet).await;
    let (k3, f3) = (kcp_writes(&kcp_base).await?, kcp_writes(&fleet_base).await?);
    let (restart_kcp, restart_fleet) = (delta(&k2, &k3), delta(&f2, &f3));
    let restart_pid = tmcd.pid();
    let (rss_restart, _) = rss_mib(restart_pid)?;
    let cpu_restart = cpu_seconds(restart_pid)?;
    let everywhere = fleet_load::copies_by_target(&setup.bed, PLACED).await?;
    let mut all_expected = expected.clone();
    all_expected.extend((0..l).map(|i| (format!("l{i:05}"), 3)));
    let problems = fleet_load::spread_problems(&all_expected, &chosen, &everywhere, 5);
    if !problems.is_empty() {
        bail!("after the restart: {problems:?}");
    }
    let all_n = all_expected.len();
    println!("  load average (1 min) at the restart: {load_restart}");
    println!(
        "  restart: start -> {} workloads reconciled       {:8.1} s  (VmRSS {rss_restart:.1} MiB, allocated {:.1} MiB, CPU {cpu_restart:.1} s)",
        w + l,
        s(reconciled),
        allocated_mib(&admin).await?
    );
    println!(
        "  restart: writes until reconciled + {} s, to kcp {restart_kcp:?}",
        quiet.as_secs()
    );
    println!("  restart: the same, to the fleet kcp {restart_fleet:?}");

    // 6. A policy change for every workload: replica-spread's weights 1, 1, 0 over the 3.
    progress(&format!(
        "policy change: replica-spread weights 1, 1, 0 over {chosen:?} for the {all_n} workloads"
    ));
    let (done, _) = tmcd_child::progress(&admin).await?;
    let counts_reload = counts(&kcp_base, &fleet_base, &admin).await?;
    let load_reload = load_average();
    let weights: serde_json::Map<String, serde_json::Value> = chosen
        .iter()
        .zip([1, 1, 0])
        .map(|(t, w)| (t.clone(), json!(w)))
        .collect();
    let t_reload = Instant::now();
    setup
        .apply_placement(
            PLACED,
            json!({"name": "replica-spread", "settings": {"weights": weights}}),
            Some(knobs.grace_s),
        )
        .await?;
    let reloaded = until_held_by(&chosen_clients[..2], &all_expected, knobs.timeout, || {
        tmcd.ensure_running()
    })
    .await?
        - t_reload;
    tmcd_child::settled(&admin, done + all_n as f64, knobs.timeout, || Ok(())).await?;
    let reload_settled = t_reload.elapsed();
    let reload_phase = Phase::new(
        "policy change (apply -> settled)",
        all_n,
        &counts_reload,
        &counts(&kcp_base, &fleet_base, &admin).await?,
        0.0,
        0.0,
    )
    .re_placing();
    let third = fleet_load::copies_on(&chosen_clients[2..], PLACED).await?;
    let third_held = third
        .values()
        .flat_map(|c| c.values())
        .filter(|r| **r > 0)
        .count();
    println!("  load average (1 min) at the policy change: {load_reload}");
    println!(
        "  policy change: apply -> every workload wholly on {:?}  {:8.1} s  ({:.1} workloads/s); -> tmcd settled {:.1} s; {} still hold a copy with replicas on {} (scale-down waits for availability)",
        &chosen[..2],
        s(reloaded),
        all_n as f64 / s(reloaded),
        s(reload_settled),
        third_held,
        chosen[2]
    );
    reload_phase.print(chosen.len(), idle, quiet.as_secs_f64());

    // 7. The second target cut off.
    progress(&format!(
        "cut-off: {cut} paused and its connections cut, eviction grace {} s",
        knobs.grace_s
    ));
    let (done, _) = tmcd_child::progress(&admin).await?;
    let counts_cut = counts(&kcp_base, &fleet_base, &admin).await?;
    let load_cut = load_average();
    let t_cut = Instant::now();
    proxy.pause();
    proxy.cut();
    let not_ready = {
        let (kcp, cut, timeout) = (kcp.clone(), cut.clone(), knobs.timeout);
        tokio::spawn(async move {
            loop {
                if let Ok(ready) = ready_of(&kcp, &cut).await
                    && ready.as_deref() != Some("True")
                {
                    return Some(t_cut.elapsed());
                }
                if t_cut.elapsed() > timeout {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let replaced = until_held_by(&chosen_clients[..1], &all_expected, knobs.timeout, || {
        tmcd.ensure_running()
    })
    .await?
        - t_cut;
    let not_ready = not_ready.await.context("the Ready poll")?;
    let cut_settled = match tmcd_child::settled(
        &admin,
        done + all_n as f64,
        Duration::from_secs(120),
        || Ok(()),
    )
    .await
    {
        Ok(_) => format!("{:.1} s", t_cut.elapsed().as_secs_f64()),
        Err(e) => format!("not settled: {e:#}"),
    };
    let cut_phase = Phase::new(
        "cut-off (cut -> re-placed)",
        all_n,
        &counts_cut,
        &counts(&kcp_base, &fleet_base, &admin).await?,
        0.0,
        0.0,
    )
    .re_placing();
    println!("  load average (1 min) at the cut-off: {load_cut}");
    println!(
        "  cut-off of {cut} ({all_n} workloads on it): -> Ready not True {}; -> every workload wholly on {} {:.1} s ({:.1} workloads/s after the grace of {} s); tmcd settled: {cut_settled}",
        not_ready.map_or("never seen".to_owned(), |d| format!("{:.1} s", s(d))),
        chosen[0],
        s(replaced),
        all_n as f64
            / (s(replaced) - not_ready.map_or(0.0, s) - f64::from(knobs.grace_s)).max(0.001),
        knobs.grace_s
    );
    cut_phase.print(chosen.len(), idle, quiet.as_secs_f64());
    // Read directly, not through the proxy: nothing was deleted on the cut-off target.
    let on_cut = fleet_load::copies_on(&chosen_clients[1..2], PLACED).await?;
    let kept = on_cut.get(&cut).map_or(0, |c| c.len());
    if kept != all_n {
        bail!("the cut-off target {cut} holds {kept} of the {all_n} copies: some were deleted");
    }
    let everywhere = fleet_load::copies_by_target(&setup.bed, PLACED).await?;
    let elsewhere: usize = everywhere
        .iter()
        .filter(|(t, _)| !chosen.contains(t))
        .map(|(_, c)| c.len())
        .sum();
    if elsewhere != 0 {
        bail!("{elsewhere} copies on targets outside {chosen:?} after the cut-off");
    }
    let by_target: Vec<String> = chosen
        .iter()
        .map(|t| {
            let c = everywhere.get(t).cloned().unwrap_or_default();
            format!(
                "{t} {} copies, {} replicas",
                c.len(),
                c.values().sum::<i32>()
            )
        })
        .collect();

    println!(
        "  cut-off: copies kept on {cut} (read directly) {kept} of {all_n}; outside the chosen 3: {elsewhere}; {}",
        by_target.join("; ")
    );
    seen.stop();
    proxy.resume();
    drop(tmcd);
    setup.bed.shutdown();
    Ok(())
}
