//! tenants_scale: tmcd serving T tenant workspaces through tmc's APIExport against the same load in one
//! workspace, in one run, on one bed (issue 12, `docs/tenancy.md`): kcp with the inventory `root:tmc`
//! (SyncTargets, tmc's export, Deployments installed for single-workspace mode), physical clusters `west` and
//! `east`, push mode, `deployments.apps` only, `location-affinity` (required) with each workload's
//! `tmc.kcp.io/regions` annotation alternating `us-west` / `us-east` (so every workload has one copy, half on
//! each cluster), 0 replicas (no pods: kwok's churn stays out of the figures), leader election off.
//!
//! tmcd is this bench binary re-run as a child (`tenants_scale tmcd --config <file>`): the daemon of this very
//! build, in a process of its own (its RSS and CPU are its own), as `daemon/benches/fleet_scale.rs` does.
//!
//! 1. single: tmcd in single-workspace mode over `root:tmc`; one placement there; W = T x P Deployments
//!    created in namespace `bench` of `root:tmc`, C in flight; the time from the first create until a watch
//!    on the clusters has seen every copy, and until tmcd is settled (nothing queued, every status written);
//!    then L more created one at a time, each timed until the watch sees its copy; tmcd's VmRSS and its
//!    `tmcd_watches` gauge (summed over resources). Then the W + L are deleted with tmcd running, the bench
//!    waits until their copies are gone from both clusters (timed, informational) and stops tmcd.
//! 2. tenants: tmcd in export mode (`[control_plane] export = "tmc"`), started with the bed's first tenant
//!    bound; `tmcd_watches` read; the other T - 1 tenant workspaces bound while it runs (timed: not part of
//!    the figures), each granted every target (one SyncTargetGrant per tenant) and given its own placement
//!    (the same spec); `tmcd_watches` read again; P Deployments created in namespace `bench` of each tenant
//!    (the same W in all, the same C in flight across tenants, interleaved tenant by tenant); the same timings,
//!    each tenant's copies awaited in its own downstream namespace
//!    (`tmc_api::tenancy::downstream_namespace(<logical cluster>, "bench")`); the same latency, workload k in
//!    tenant k mod T; RSS and watches.
//!
//! The table prints each figure for single and tenants and the ratio tenants / single (issue 12's target:
//! within 1.5x; watches independent of the number of workspaces).
//!
//! Knobs (environment): TMC_TENANTS (50), TMC_TENANT_WORKLOADS (P, 20), TMC_TENANT_LATENCY_N (50),
//! TMC_TENANT_CONCURRENCY (16), TMC_TENANT_TIMEOUT_S (900), TMC_TENANT_BIND_CONCURRENCY (4: workspaces bound
//! at a time). Run: `hack/bench.sh --only tenants`. tmcd's logs are copied to
//! `target/bench/tenants_scale-tmcd-{single,tenants}.log`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use serde_json::json;
use tmc_api::decision::STATE_LABEL_PREFIX;
use tmc_api::tenancy::{LogicalCluster, downstream_namespace};
use tmc_daemon::admin::status::StatusReport;
use tmc_tests::copy_watch::{CopyWatch, KeysOf, key};
use tmc_tests::figures::{
    cpu_seconds, delta, kcp_writes, knob, label, load_average, percentile_ms, rss_mib, samples,
};
use tmc_tests::fixtures;
use tmc_tests::fleet_load;
use tmc_tests::tenant_load;
use tmc_tests::testbed::binaries::repo_root;
use tmc_tests::testbed::tenants::EXPORT;
use tmc_tests::testbed::{Supervised, TestBed, ports, progress};

mod tmcd_child;

struct Knobs {
    tenants: usize,
    per_tenant: usize,
    latency_n: usize,
    concurrency: usize,
    timeout: Duration,
    bind_concurrency: usize,
}

impl Knobs {
    fn from_env() -> Result<Self> {
        let tenants = knob("TMC_TENANTS", 50)? as usize;
        if tenants < 1 {
            bail!("TMC_TENANTS=0: give at least 1 tenant");
        }
        Ok(Self {
            tenants,
            per_tenant: knob("TMC_TENANT_WORKLOADS", 20)? as usize,
            latency_n: knob("TMC_TENANT_LATENCY_N", 50)? as usize,
            concurrency: knob("TMC_TENANT_CONCURRENCY", 16)?.max(1) as usize,
            timeout: Duration::from_secs(knob("TMC_TENANT_TIMEOUT_S", 900)?),
            bind_concurrency: knob("TMC_TENANT_BIND_CONCURRENCY", 4)?.max(1) as usize,
        })
    }
}

/// The namespace of every workload, in `root:tmc` (single) and in each tenant workspace.
const NS: &str = "bench";
/// The name of the placement (one in `root:tmc`, one per tenant).
const PLACEMENT: &str = "bench";
/// The clusters and their regions; workload j of a tenant goes to `CLUSTERS[j % 2]`.
const CLUSTERS: [(&str, &str); 2] = [("west", "us-west"), ("east", "us-east")];
/// The gauge of the watch streams tmcd holds open, by resource.
const WATCHES: &str = "tmcd_watches";

/// tmcd's open watch streams, by resource.
type Watches = BTreeMap<String, f64>;

/// The sum over resources, then each resource: `7 (deployments.apps 2, ...)`.
fn describe(w: &Watches) -> String {
    let each: Vec<String> = w.iter().map(|(r, n)| format!("{r} {n:.0}")).collect();
    format!("{:.0} ({})", w.values().sum::<f64>(), each.join(", "))
}

/// One workload of the bench: the tenant it belongs to (its index), its name and where it must land.
struct Workload {
    tenant: usize,
    name: String,
    cluster: &'static str,
    region: &'static str,
}

impl Workload {
    fn new(tenant: usize, name: String, j: usize) -> Self {
        let (cluster, region) = CLUSTERS[j % CLUSTERS.len()];
        Self {
            tenant,
            name,
            cluster,
            region,
        }
    }

    fn deployment(&self) -> Result<Deployment> {
        fixtures::deployment(
            NS,
            &self.name,
            0,
            json!({}),
            json!({"tmc.kcp.io/regions": self.region}),
        )
    }
}

/// The burst: P workloads per tenant, interleaved tenant by tenant (so that every tenant is written to at once).
fn burst_workloads(tenants: usize, per_tenant: usize) -> Vec<Workload> {
    (0..per_tenant)
        .flat_map(|j| (0..tenants).map(move |t| Workload::new(t, format!("w{t:03}-{j:03}"), j)))
        .collect()
}

/// The latency workloads: k in tenant k mod T, clusters alternating.
fn latency_workloads(tenants: usize, n: usize) -> Vec<Workload> {
    (0..n)
        .map(|k| Workload::new(k % tenants, format!("l{k:04}"), k))
        .collect()
}

/// The placement of every mode: location-affinity, required; the regions come from each workload.
fn placement_spec() -> serde_json::Value {
    json!({"policy": {"name": "location-affinity", "settings": {"mode": "required"}}})
}

// --- tmcd ------------------------------------------------------------------------------------------------

/// A tmcd child (this binary as `tenants_scale tmcd --config <file>`) and its admin address.
struct Tmcd {
    process: Supervised,
    admin: String,
    log: PathBuf,
}

impl Tmcd {
    /// Writes `text` to `<bed dir>/<name>.toml` and starts tmcd on it; its output goes to `<bed dir>/<name>.log`.
    fn start(bed: &TestBed, name: &str, text: &str, admin: String) -> Result<Self> {
        let config = bed.dir().join(format!("{name}.toml"));
        std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        let myself = std::env::current_exe().context("the bench binary's own path")?;
        let process = bed.spawn(
            name,
            &myself,
            [
                tmcd_child::ARG.into(),
                "--config".into(),
                config.into_os_string(),
            ],
        )?;
        Ok(Self {
            process,
            admin,
            log: bed.dir().join(format!("{name}.log")),
        })
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }

    fn check(&mut self) -> Result<()> {
        self.process
            .ensure_running()
            .with_context(|| format!("tmcd exited; see {}", self.log.display()))
    }

    /// The open watch streams tmcd counts (`tmcd_watches`), by resource.
    async fn watches(&self) -> Result<Watches> {
        let text = tmcd_child::metrics(&self.admin).await?;
        let by: Watches = samples(&text, WATCHES)
            .map(|(labels, v)| (label(labels, "resource").to_owned(), v))
            .collect();
        if by.is_empty() {
            bail!("tmcd's /metrics has no {WATCHES} series");
        }
        Ok(by)
    }

    async fn status(&self) -> Result<StatusReport> {
        let url = format!("http://{}", self.admin);
        let reply = tmc_daemon::admin::client::request(&url, "GET", "/api/v1/status").await?;
        if reply.status != 200 {
            bail!("/api/v1/status answered {}: {}", reply.status, reply.body);
        }
        serde_json::from_str(&reply.body).context("parsing /api/v1/status")
    }

    /// Polls `check` on tmcd's status every 250 ms until it gives `Some`, tmcd exits or `timeout` passes.
    async fn until_status<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&StatusReport) -> Option<T>,
    ) -> Result<(T, Duration)> {
        let started = Instant::now();
        loop {
            self.check()?;
            let last = match self.status().await {
                Ok(report) => match check(&report) {
                    Some(v) => return Ok((v, started.elapsed())),
                    None => format!(
                        "targets {:?}, {} placements",
                        report
                            .targets
                            .iter()
                            .map(|t| (&t.name, t.ready))
                            .collect::<Vec<_>>(),
                        report.placements.len()
                    ),
                },
                Err(e) => format!("{e:#}"),
            };
            if started.elapsed() > timeout {
                bail!("{what}: not after {timeout:?}; last: {last}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until tmcd sees both SyncTargets Ready; returns how long that took.
    async fn targets_ready(&mut self, timeout: Duration) -> Result<Duration> {
        let (_, took) = self
            .until_status("SyncTargets west and east Ready", timeout, |r| {
                let ready = |n: &str| r.targets.iter().any(|t| t.name == n && t.ready);
                (ready("west") && ready("east")).then_some(())
            })
            .await?;
        Ok(took)
    }

    /// Waits until tmcd has evaluated `n` placements (`PolicyValid=True`), and, with `granted`, sees each one's
    /// targets granted (`TargetsGranted=True`).
    async fn placements_ready(&mut self, n: usize, granted: bool, timeout: Duration) -> Result<()> {
        let what = format!("{n} placements evaluated by tmcd");
        self.until_status(&what, timeout, |r| {
            let ok = |p: &tmc_daemon::admin::status::PlacementReport, t: &str| {
                p.conditions
                    .iter()
                    .any(|c| c.type_ == t && c.status == "True")
            };
            let ready = r
                .placements
                .iter()
                .filter(|p| ok(p, "PolicyValid") && (!granted || ok(p, "TargetsGranted")))
                .count();
            (ready >= n).then_some(())
        })
        .await?;
        Ok(())
    }

    /// Waits until tmcd has made at least `reconciles` reconciles and has nothing queued.
    async fn settled(&mut self, reconciles: f64, timeout: Duration) -> Result<Duration> {
        let process = &mut self.process;
        let log = &self.log;
        tmcd_child::settled(&self.admin, reconciles, timeout, || {
            process
                .ensure_running()
                .with_context(|| format!("tmcd exited; see {}", log.display()))
        })
        .await
    }

    /// SIGTERM, up to 10 s, then SIGKILL; copies the log to `target/bench/tenants_scale-<name>.log`.
    async fn stop(mut self, name: &str) -> Result<PathBuf> {
        self.process.stop_async(Duration::from_secs(10)).await;
        let dir = repo_root().join("target/bench");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let kept = dir.join(format!("tenants_scale-{name}.log"));
        std::fs::copy(&self.log, &kept)
            .with_context(|| format!("copying {} to {}", self.log.display(), kept.display()))?;
        Ok(kept)
    }
}

/// WARN and ERROR lines of a tmcd log, counted, with the first few of each kind (the message after the
/// target, so repeats collapse).
fn log_problems(path: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return format!("(cannot read {})", path.display());
    };
    let mut kinds: BTreeMap<String, usize> = Default::default();
    let (mut warn, mut error) = (0, 0);
    for line in text.lines() {
        let level = if line.contains(" WARN ") {
            warn += 1;
            "WARN"
        } else if line.contains(" ERROR ") {
            error += 1;
            "ERROR"
        } else {
            continue;
        };
        let after = line
            .split_once(&format!(" {level} "))
            .map_or(line, |(_, r)| r);
        let message: String = after
            .split_once(": ")
            .map_or(after, |(_, m)| m)
            .chars()
            .take(140)
            .collect();
        *kinds.entry(format!("{level} {message}")).or_default() += 1;
    }
    let mut top: Vec<(String, usize)> = kinds.into_iter().collect();
    top.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let lines: Vec<String> = top
        .iter()
        .take(6)
        .map(|(m, n)| format!("      {n:5} x {m}"))
        .collect();
    let mut out = format!("{warn} WARN, {error} ERROR lines");
    for line in lines {
        out.push('\n');
        out.push_str(&line);
    }
    out
}

/// The `[sync]`, `[policies]`, `[admin]` and `[leader_election]` sections of both modes.
fn sections(policies: &Path, admin: &str) -> String {
    format!(
        "[sync]\nresources = [\"deployments.apps\"]\n\n\
         [policies]\ndirectory = {:?}\ntimeout_ms = 2000\n\n\
         [admin]\naddress = \"{admin}\"\n\n[leader_election]\nenabled = false\n",
        policies.display().to_string()
    )
}

// --- one mode ---------------------------------------------------------------------------------------------

/// What one mode measured.
#[derive(Default)]
struct Figures {
    ready: Duration,
    created: Duration,
    placed: Duration,
    settled: Duration,
    latency: Vec<Duration>,
    stages: Vec<Stages>,
    rss_idle: f64,
    rss_burst: (f64, f64),
    rss_latency: (f64, f64),
    watches_first: Option<Watches>,
    watches_idle: Watches,
    watches_loaded: Watches,
    cpu_tmcd_burst: f64,
    cpu_kcp_burst: f64,
    load_burst: String,
    load_latency: String,
    /// tmcd's and kcp's CPU seconds during the latency run.
    cpu_latency: (f64, f64),
    /// kcp's writes during the latency run, by resource.
    writes_latency: BTreeMap<String, f64>,
}

/// Where each workload lives upstream (a client of its workspace) and its copy's downstream namespace, and a
/// watch through the endpoint tmcd reads the workloads from (see [`upstream_watch`]).
struct Upstream {
    clients: Vec<kube::Client>,
    downstream: Vec<String>,
    watch: std::sync::Arc<CopyWatch>,
}

/// One latency workload's stages, from its create request: the create answered, the workload seen and its
/// decision seen on the upstream watch, its copy seen on its cluster.
struct Stages {
    answered: Duration,
    seen: Option<Duration>,
    decided: Option<Duration>,
    copied: Duration,
}

impl Stages {
    /// create answered -> seen upstream (kcp's watch delivery, through the virtual workspace in export mode).
    fn delivery(&self) -> Option<Duration> {
        Some(self.seen?.saturating_sub(self.answered))
    }

    /// seen upstream -> decision seen upstream (tmcd: queue, policy, checks, its patch, the patch's event).
    fn deciding(&self) -> Option<Duration> {
        Some(self.decided?.saturating_sub(self.seen?))
    }

    /// decision seen upstream -> copy seen on its cluster (the push syncer and the cluster's watch).
    fn syncing(&self) -> Option<Duration> {
        Some(self.copied.saturating_sub(self.decided?))
    }

    /// seen upstream -> copy seen: what tmc does with a workload once kcp delivers it.
    fn tmc(&self) -> Option<Duration> {
        Some(self.copied.saturating_sub(self.seen?))
    }
}

/// A watch of every Deployment through `client` (what tmcd watches: the workspace, or the export's virtual
/// workspace across every bound one) recording `seen/<name>` and, once tmcd's decision labels are on it,
/// `decided/<name>` (the bench's names are unique across tenants).
fn upstream_watch(client: kube::Client) -> std::sync::Arc<CopyWatch> {
    let keys: KeysOf = Box::new(|d: &Deployment| {
        let name = d.metadata.name.as_deref().unwrap_or_default();
        let decided = d
            .metadata
            .labels
            .iter()
            .flatten()
            .any(|(k, _)| k.starts_with(STATE_LABEL_PREFIX));
        let mut keys = vec![format!("seen/{name}")];
        if decided {
            keys.push(format!("decided/{name}"));
        }
        keys
    });
    CopyWatch::start_keyed(vec![(client, keys)])
}

impl Upstream {
    fn copy_key(&self, w: &Workload) -> String {
        key(w.cluster, &self.downstream[w.tenant], &w.name)
    }
}

/// What both modes measure the same way: the knobs, kcp's process, the workloads and the watch on the clusters.
struct Load<'a> {
    knobs: &'a Knobs,
    kcp_pid: u32,
    /// kcp's own context (its `/metrics`).
    kcp_base: &'a kube::Client,
    burst: &'a [Workload],
    latency: &'a [Workload],
    watch: &'a CopyWatch,
}

impl Load<'_> {
    /// The burst, the settle, the latency run and the readings of one mode, with its tmcd running and its
    /// placements ready.
    async fn measure(
        &self,
        tmcd: &mut Tmcd,
        up: &Upstream,
        mode: &str,
        figures: &mut Figures,
    ) -> Result<()> {
        let Load {
            knobs,
            kcp_pid,
            kcp_base,
            burst,
            latency,
            watch,
        } = *self;
        let w = burst.len();
        let items: Vec<(kube::Client, Deployment)> = burst
            .iter()
            .map(|wl| Ok((up.clients[wl.tenant].clone(), wl.deployment()?)))
            .collect::<Result<_>>()?;
        let keys: Vec<String> = burst.iter().map(|wl| up.copy_key(wl)).collect();
        progress(&format!(
            "{mode}: {w} creates, {} in flight",
            knobs.concurrency
        ));
        figures.load_burst = load_average();
        let (cpu_tmcd0, cpu_kcp0) = (cpu_seconds(tmcd.pid())?, cpu_seconds(kcp_pid)?);
        let started = Instant::now();
        figures.created = fleet_load::create_all(items, knobs.concurrency).await?;
        tmcd.check()?;
        progress(&format!("{mode}: {w} created in {:.1?}", figures.created));
        let last = watch.all(&keys, knobs.timeout).await?;
        figures.placed = last - started;
        figures.cpu_tmcd_burst = cpu_seconds(tmcd.pid())? - cpu_tmcd0;
        figures.cpu_kcp_burst = cpu_seconds(kcp_pid)? - cpu_kcp0;
        progress(&format!(
            "{mode}: every copy seen {:.1?} after the first create",
            figures.placed
        ));
        figures.settled = started.elapsed() + tmcd.settled(w as f64, knobs.timeout).await?;
        figures.rss_burst = rss_mib(tmcd.pid())?;
        figures.watches_loaded = tmcd.watches().await?;
        progress(&format!(
            "{mode}: tmcd settled {:.1?} after the first create, VmRSS {:.1} MiB, {WATCHES} {}",
            figures.settled,
            figures.rss_burst.0,
            describe(&figures.watches_loaded)
        ));

        progress(&format!(
            "{mode}: latency, {} creates one at a time",
            latency.len()
        ));
        figures.load_latency = load_average();
        let (cpu_tmcd0, cpu_kcp0) = (cpu_seconds(tmcd.pid())?, cpu_seconds(kcp_pid)?);
        let writes0 = kcp_writes(kcp_base).await?;
        for wl in latency {
            let d = wl.deployment()?;
            let key = up.copy_key(wl);
            let client = up.clients[wl.tenant].clone();
            // The bench's own connection to the workspace is set up before the clock starts, in both modes
            // (in export mode each latency create goes to another tenant, whose connection has idled out).
            Api::<Namespace>::all(client.clone())
                .get(NS)
                .await
                .with_context(|| format!("{mode}: reading namespace {NS}"))?;
            let t0 = Instant::now();
            Api::<Deployment>::namespaced(client, NS)
                .create(&Default::default(), &d)
                .await
                .with_context(|| format!("{mode}: creating {NS}/{}", wl.name))?;
            let answered = t0.elapsed();
            let copied = watch.all(std::slice::from_ref(&key), knobs.timeout).await? - t0;
            let since = |k: String| up.watch.seen(&k).map(|at| at.saturating_duration_since(t0));
            figures.latency.push(copied);
            figures.stages.push(Stages {
                answered,
                seen: since(format!("seen/{}", wl.name)),
                decided: since(format!("decided/{}", wl.name)),
                copied,
            });
        }
        figures.cpu_latency = (
            cpu_seconds(tmcd.pid())? - cpu_tmcd0,
            cpu_seconds(kcp_pid)? - cpu_kcp0,
        );
        figures.writes_latency = delta(&writes0, &kcp_writes(kcp_base).await?);
        tmcd.settled((w + latency.len()) as f64, knobs.timeout)
            .await?;
        figures.rss_latency = rss_mib(tmcd.pid())?;
        Ok(())
    }
}

/// The clients of the physical clusters, by name.
async fn cluster_clients(bed: &TestBed) -> Result<Vec<(String, kube::Client)>> {
    let mut out = Vec::new();
    for (name, _) in CLUSTERS {
        out.push((name.to_owned(), bed.cluster_client(name).await?));
    }
    Ok(out)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(tmcd_child::ARG) {
        return tmcd_child::run("tenants_scale", &args);
    }
    // `cargo bench` passes `--bench`; nothing else is taken.
    tokio::runtime::Runtime::new()?.block_on(bench())
}

async fn bench() -> Result<()> {
    let knobs = Knobs::from_env()?;
    let (t, p, l, c) = (
        knobs.tenants,
        knobs.per_tenant,
        knobs.latency_n,
        knobs.concurrency,
    );
    let w = t * p;
    let run_started = Instant::now();
    let myself = std::env::current_exe().context("the bench binary's own path")?;
    progress(&format!("tmcd: {} tmcd (this binary)", myself.display()));
    let load_start = load_average();
    let names: Vec<String> = (0..t).map(|i| format!("t{i:03}")).collect();

    // The bed: kcp with the inventory and its export (the first tenant bound), west and east.
    let bed_started = Instant::now();
    let mut bed = TestBed::builder()
        .clusters(["west", "east"])
        .workspace("root:tmc")
        .tenants([names[0].clone()])
        .start()
        .await?;
    bed.install_kube_crds().await?;
    let bed_took = bed_started.elapsed();
    let policies = bed.dir().join("policies");
    std::fs::create_dir_all(&policies)?;
    fixtures::install_policy(&policies, "location-affinity", "location-affinity")?;
    let kcp_pid = bed
        .pids()
        .into_iter()
        .find(|(n, _)| n == "kcp")
        .map(|(_, p)| p)
        .context("no kcp pid")?;
    let clusters = cluster_clients(&bed).await?;
    let watch = CopyWatch::start(&clusters);
    let burst = burst_workloads(t, p);
    let latency = latency_workloads(t, l);
    let kcp_base = bed.kcp()?.client("base").await?;
    let load = Load {
        knobs: &knobs,
        kcp_pid,
        kcp_base: &kcp_base,
        burst: &burst,
        latency: &latency,
        watch: &watch,
    };

    // 1. single: one workspace, every workload in root:tmc.
    let inventory = bed.kcp_client().await?;
    let admin = format!("127.0.0.1:{}", ports::free_port()?);
    let text = fixtures::tmc_toml(&bed, "tmc-tenants-bench", &sections(&policies, &admin))?;
    let mut tmcd = Tmcd::start(&bed, "tmcd-single", &text, admin)?;
    let mut single = Figures {
        ready: tmcd.targets_ready(knobs.timeout).await?,
        ..Default::default()
    };
    fleet_load::ensure_namespace(&inventory, NS).await?;
    fixtures::apply_placement(&inventory, "tenants-bench", PLACEMENT, placement_spec()).await?;
    tmcd.placements_ready(1, false, knobs.timeout).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    single.rss_idle = rss_mib(tmcd.pid())?.0;
    single.watches_idle = tmcd.watches().await?;
    let up = Upstream {
        clients: vec![inventory.clone(); t],
        downstream: vec![NS.to_owned(); t],
        watch: upstream_watch(inventory.clone()),
    };
    load.measure(&mut tmcd, &up, "single", &mut single).await?;
    up.watch.stop();
    // Clean-up: delete every workload with tmcd running and wait until the copies are gone, so that the
    // tenants' tmcd starts with empty clusters (its syncers' caches hold no copy of this phase).
    progress("single: deleting the workloads, waiting until their copies are gone");
    let deleting = Instant::now();
    tenant_load::delete_deployments(&inventory, NS, knobs.concurrency)
        .await
        .context("deleting the single-workspace workloads")?;
    let deleted = loop {
        let mut left = 0;
        for (_, client) in &clusters {
            left += tenant_load::managed_copies(client, Some(NS)).await?;
        }
        if left == 0 {
            break deleting.elapsed();
        }
        tmcd.check()?;
        if deleting.elapsed() > knobs.timeout {
            bail!(
                "single: {left} copies still on the clusters {:?} after the deletion",
                knobs.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let single_log = tmcd.stop("tmcd-single").await?;
    progress(&format!(
        "single: {} copies gone {deleted:.1?} after the deletion; tmcd stopped",
        w + l
    ));

    // 2. tenants: tmcd in export mode, started with the first tenant bound.
    let admin = format!("127.0.0.1:{}", ports::free_port()?);
    let text = fixtures::tmc_toml_export(
        &bed,
        "tmc-tenants-bench",
        EXPORT,
        &sections(&policies, &admin),
    )?;
    let mut tmcd = Tmcd::start(&bed, "tmcd-tenants", &text, admin)?;
    let mut tenants = Figures {
        ready: tmcd.targets_ready(knobs.timeout).await?,
        ..Default::default()
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    tenants.watches_first = Some(tmcd.watches().await?);
    progress(&format!(
        "tenants: tmcd ready with 1 tenant bound, {WATCHES} {}; binding {} more, {} at a time",
        tenants.watches_first.as_ref().map_or("-".into(), describe),
        t - 1,
        knobs.bind_concurrency
    ));
    let (more, bind_took) =
        tenant_load::bind_tenants(bed.kcp()?, &names[1..], knobs.bind_concurrency).await?;
    tmcd.check()?;
    let mut all = vec![bed.tenants()?.tenant(&names[0])?.clone()];
    all.extend(more);
    progress(&format!(
        "tenants: {} workspaces bound in {bind_took:.1?} ({:.1} s each on average)",
        t - 1,
        bind_took.as_secs_f64() / (t - 1).max(1) as f64
    ));
    let setup_started = Instant::now();
    let mut clients = Vec::with_capacity(t);
    let mut downstream = Vec::with_capacity(t);
    for tenant in &all {
        let client =
            tmc_tests::testbed::tenants::workspace_client(bed.kcp()?, &tenant.workspace).await?;
        tenant_load::grant_all_targets(
            &inventory,
            &format!("bench-{}", tenant.name),
            &tenant.logical_cluster,
            knobs.timeout,
        )
        .await?;
        fleet_load::ensure_namespace(&client, NS).await?;
        fixtures::apply_placement(&client, "tenants-bench", PLACEMENT, placement_spec())
            .await
            .with_context(|| format!("tenant {}", tenant.name))?;
        downstream.push(
            downstream_namespace(&LogicalCluster::new(tenant.logical_cluster.clone())?, NS).name,
        );
        clients.push(client);
    }
    tmcd.placements_ready(t, true, knobs.timeout).await?;
    let setup_took = setup_started.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    tenants.rss_idle = rss_mib(tmcd.pid())?.0;
    tenants.watches_idle = tmcd.watches().await?;
    progress(&format!(
        "tenants: {t} tenants granted and placed in {setup_took:.1?}; {WATCHES} {}",
        describe(&tenants.watches_idle)
    ));
    let across = bed.tenants()?.endpoint_client(bed.kcp()?, "*").await?;
    let up = Upstream {
        clients,
        downstream,
        watch: upstream_watch(across),
    };
    load.measure(&mut tmcd, &up, "tenants", &mut tenants)
        .await?;
    up.watch.stop();
    let tenants_log = tmcd.stop("tmcd-tenants").await?;
    watch.stop();

    // The table.
    let s = |d: Duration| d.as_secs_f64();
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}x", a / b)
        } else {
            "-".into()
        }
    };
    println!(
        "benchmark tenants_scale ({t} tenants x {p} = {w} workloads, latency n={l}, concurrency {c}, tmcd {})",
        myself.display()
    );
    println!(
        "  load average (1 min): start {load_start}; burst single {} / tenants {}; latency single {} / tenants {}",
        single.load_burst, tenants.load_burst, single.load_latency, tenants.load_latency
    );
    println!(
        "  set-up (not in the figures): bed with 1 tenant {:.1} s; tmcd start -> west and east Ready: single {:.1} s (SyncTargets created), tenants {:.1} s (they exist); {} more tenants bound {:.1} s ({:.2} s each, {} at a time); grants, namespaces and placements of {t} tenants {:.1} s; single clean-up (delete {} -> copies gone) {:.1} s",
        s(bed_took),
        s(single.ready),
        s(tenants.ready),
        t - 1,
        s(bind_took),
        s(bind_took) / (t - 1).max(1) as f64,
        knobs.bind_concurrency,
        s(setup_took),
        w + l,
        s(deleted)
    );
    println!(
        "  {:<56} {:>12} {:>12} {:>8}",
        "figure", "single", "tenants", "ratio"
    );
    let row = |what: &str, a: f64, b: f64, unit: &str| {
        println!(
            "  {what:<56} {:>12} {:>12} {:>8}",
            format!("{a:.1} {unit}"),
            format!("{b:.1} {unit}"),
            ratio(b, a)
        );
    };
    row(
        &format!("{w} creates into kcp (tmcd running)"),
        s(single.created),
        s(tenants.created),
        "s",
    );
    row(
        "first create -> every copy seen on its cluster",
        s(single.placed),
        s(tenants.placed),
        "s",
    );
    row(
        "first create -> tmcd settled (0 queued)",
        s(single.settled),
        s(tenants.settled),
        "s",
    );
    row(
        &format!("create -> copy seen, p50 (n={l})"),
        percentile_ms(&single.latency, 50.0),
        percentile_ms(&tenants.latency, 50.0),
        "ms",
    );
    row(
        &format!("create -> copy seen, p99 (n={l})"),
        percentile_ms(&single.latency, 99.0),
        percentile_ms(&tenants.latency, 99.0),
        "ms",
    );
    row(
        "create -> copy seen, max",
        percentile_ms(&single.latency, 100.0),
        percentile_ms(&tenants.latency, 100.0),
        "ms",
    );
    let stage_row = |what: &str, stage: fn(&Stages) -> Option<Duration>| {
        let of = |f: &Figures| -> Vec<Duration> { f.stages.iter().filter_map(stage).collect() };
        let (a, b) = (of(&single), of(&tenants));
        for p in [50.0, 99.0] {
            row(
                &format!("  {what}, p{p:.0} (n={}/{})", a.len(), b.len()),
                percentile_ms(&a, p),
                percentile_ms(&b, p),
                "ms",
            );
        }
    };
    stage_row("create request answered", |s| Some(s.answered));
    stage_row("answered -> seen upstream", Stages::delivery);
    stage_row("seen -> decision seen upstream", Stages::deciding);
    stage_row("decision seen -> copy seen", Stages::syncing);
    stage_row("tmc's part: seen upstream -> copy seen", Stages::tmc);
    // tmc's part in units of kcp's own write of the same run and mode (the create's answer): what is left of
    // the ratio once kcp's per-write cost in that mode is taken out.
    let in_writes = |f: &Figures| {
        let part: Vec<Duration> = f.stages.iter().filter_map(Stages::tmc).collect();
        let answered: Vec<Duration> = f.stages.iter().map(|s| s.answered).collect();
        percentile_ms(&part, 50.0) / percentile_ms(&answered, 50.0).max(f64::MIN_POSITIVE)
    };
    println!(
        "  {:<56} {:>12} {:>12} {:>8}",
        "  tmc's part p50 / create answered p50 (kcp's write)",
        format!("{:.2}", in_writes(&single)),
        format!("{:.2}", in_writes(&tenants)),
        ratio(in_writes(&tenants), in_writes(&single))
    );
    row(
        &format!("tmcd CPU during the {l} latency creates"),
        single.cpu_latency.0,
        tenants.cpu_latency.0,
        "s",
    );
    row(
        &format!("kcp CPU during the {l} latency creates"),
        single.cpu_latency.1,
        tenants.cpu_latency.1,
        "s",
    );
    let per_workload = |f: &Figures| f.writes_latency.values().sum::<f64>() / l.max(1) as f64;
    row(
        "kcp writes per latency workload (all clients)",
        per_workload(&single),
        per_workload(&tenants),
        "",
    );
    println!(
        "  kcp writes during the latency creates, by resource: single {:?} / tenants {:?}",
        single.writes_latency, tenants.writes_latency
    );
    row(
        "tmcd VmRSS, placements ready, 0 workloads",
        single.rss_idle,
        tenants.rss_idle,
        "MiB",
    );
    row(
        &format!("tmcd VmRSS after the burst ({w} placed)"),
        single.rss_burst.0,
        tenants.rss_burst.0,
        "MiB",
    );
    row(
        "tmcd VmHWM after the burst",
        single.rss_burst.1,
        tenants.rss_burst.1,
        "MiB",
    );
    row(
        &format!("tmcd VmRSS after the latency run ({} placed)", w + l),
        single.rss_latency.0,
        tenants.rss_latency.0,
        "MiB",
    );
    row(
        "tmcd CPU, first create -> every copy seen",
        single.cpu_tmcd_burst,
        tenants.cpu_tmcd_burst,
        "s",
    );
    row(
        "kcp CPU, first create -> every copy seen",
        single.cpu_kcp_burst,
        tenants.cpu_kcp_burst,
        "s",
    );
    let total = |w: &Watches| w.values().sum::<f64>();
    let count_row = |what: &str, a: f64, b: f64| {
        println!(
            "  {what:<56} {:>12} {:>12} {:>8}",
            format!("{a:.0}"),
            format!("{b:.0}"),
            ratio(b, a)
        );
    };
    count_row(
        &format!("{WATCHES}, placements ready ({t} tenants bound)"),
        total(&single.watches_idle),
        total(&tenants.watches_idle),
    );
    count_row(
        &format!("{WATCHES}, {w} placed"),
        total(&single.watches_loaded),
        total(&tenants.watches_loaded),
    );
    println!(
        "  {WATCHES} by resource: single, placements ready {} / {w} placed {}",
        describe(&single.watches_idle),
        describe(&single.watches_loaded)
    );
    println!(
        "  {WATCHES} by resource: tenants, 1 tenant bound {} / {t} bound {} / {w} placed {}",
        tenants.watches_first.as_ref().map_or("-".into(), describe),
        describe(&tenants.watches_idle),
        describe(&tenants.watches_loaded)
    );
    println!(
        "  tmcd log, single ({}): {}",
        single_log.display(),
        log_problems(&single_log)
    );
    println!(
        "  tmcd log, tenants ({}): {}",
        tenants_log.display(),
        log_problems(&tenants_log)
    );
    println!("  whole run {:.0} s", run_started.elapsed().as_secs_f64());
    bed.shutdown();
    Ok(())
}
