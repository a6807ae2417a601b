//! Load on a fleet bed ([`crate::testbed::Fleet`]), shared by tmcd's fleet test and benchmark: the set-up both
//! start from ([`FleetSetup`]: the bed, tmcd's `tmc.toml`, the `replica-spread` placement), many Deployments
//! created at a bounded concurrency, and the check that each workload's copies sit on exactly the chosen targets
//! with the right replica sum.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use crate::fixtures;
use crate::testbed::TestBed;
use crate::testbed::fleet::Location;
use crate::testbed::ports;
use crate::testbed::proxy::TcpProxy;
use crate::testbed::wait::{self, Poll};

/// Replicas of each copy, by workload name.
pub type Copies = BTreeMap<String, i32>;

/// A fleet bed made ready for tmcd, the set-up of tmcd's fleet test and benchmark: the control plane's kcp
/// (workspace `root:tmc`, Kubernetes CRDs installed), `targets` fleet targets located by a `locate` function,
/// and `<bed dir>/tmc.toml` for tmcd: every target a push cluster, `deployments.apps` synced, the
/// `replica-spread` policy installed in `<bed dir>/policies`, the admin API on [`FleetSetup::admin`], leader
/// election off. Starting tmcd is the caller's (in process or as a child); then [`FleetSetup::place`].
pub struct FleetSetup {
    /// The bed (dropping it stops every server).
    pub bed: TestBed,
    /// Admin client of the control plane's workspace `root:tmc`.
    pub kcp: kube::Client,
    /// Every target's name, in index order.
    pub names: Vec<String>,
    /// The targets of the chosen region, in index order.
    pub chosen: Vec<String>,
    /// tmcd's config file.
    pub config: PathBuf,
    /// tmcd's admin address, `127.0.0.1:<port>`.
    pub admin: String,
    region: String,
}

impl FleetSetup {
    /// Starts the bed and writes tmcd's config (see [`FleetSetup`]); `chosen_region` is the region the
    /// placement of [`FleetSetup::place`] selects, `locate(index, name)` gives each target its region and zone.
    pub async fn start(
        targets: usize,
        locate: impl Fn(usize, &str) -> Location + Copy,
        chosen_region: &str,
    ) -> Result<Self> {
        let bed = TestBed::builder()
            .workspace("root:tmc")
            .fleet(targets)
            .start()
            .await?;
        bed.install_kube_crds().await?;
        let kcp = bed.kcp_client().await?;
        let names = bed.fleet()?.names();
        let chosen: Vec<String> = names
            .iter()
            .enumerate()
            .filter(|(i, name)| locate(*i, name).region == chosen_region)
            .map(|(_, name)| name.clone())
            .collect();
        let policies = bed.dir().join("policies");
        std::fs::create_dir_all(&policies)
            .with_context(|| format!("creating {}", policies.display()))?;
        fixtures::install_policy(&policies, "replica-spread", "replica-spread")?;
        let admin = format!("127.0.0.1:{}", ports::free_port()?);
        let text = tmc_toml(
            &bed,
            "tmc-fleet",
            locate,
            &format!(
                "[sync]\nresources = [\"deployments.apps\"]\n\n\
                 [policies]\ndirectory = \"policies\"\ntimeout_ms = 2000\n\n\
                 [admin]\naddress = \"{admin}\"\n\n[leader_election]\nenabled = false\n"
            ),
        )?;
        let config = bed.dir().join("tmc.toml");
        std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        Ok(Self {
            bed,
            kcp,
            names,
            chosen,
            config,
            admin,
            region: chosen_region.to_owned(),
        })
    }

    /// Once tmcd runs: waits until every target's SyncTarget is Ready (see [`wait_targets_ready`]), then
    /// places the workloads of namespace `namespace` (created in kcp) with `replica-spread` over the targets of
    /// the chosen region. Returns how long the wait for Ready took.
    pub async fn place(&self, namespace: &str, timeout: Duration) -> Result<Duration> {
        let ready = wait_targets_ready(&self.kcp, &self.names, timeout).await?;
        self.apply_placement(namespace, json!({"name": "replica-spread"}), None)
            .await?;
        ensure_namespace(&self.kcp, namespace).await?;
        Ok(ready)
    }

    /// Applies (again) the placement of [`FleetSetup::place`]: the workloads of `namespace`, the targets of the
    /// chosen region, `policy` (`{"name": ..., "settings": ...}`) and `evictionGracePeriodSeconds` when given.
    pub async fn apply_placement(
        &self,
        namespace: &str,
        policy: serde_json::Value,
        eviction_grace_seconds: Option<u32>,
    ) -> Result<()> {
        let mut spec = json!({
            "policy": policy,
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "locationSelectors": [{"matchLabels": {"topology.kubernetes.io/region": self.region}}],
        });
        if let Some(grace) = eviction_grace_seconds {
            spec["evictionGracePeriodSeconds"] = json!(grace);
        }
        fixtures::apply_placement(&self.kcp, "fleet-load", "spread", spec).await
    }

    /// Before tmcd starts: makes tmcd reach target `name` through a pausable TCP proxy of the fleet kcp (its
    /// own kubeconfig `<bed dir>/<name>-proxied.kubeconfig`, named in tmcd's config instead of the target's),
    /// so that this one target can be cut off while the others and the bench's own clients keep reaching it.
    pub async fn route_through_proxy(&self, name: &str) -> Result<TcpProxy> {
        let server = self.bed.fleet()?.kcp().base_url();
        let upstream = server
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .parse()
            .with_context(|| format!("the fleet kcp's address in {server}"))?;
        let proxy = TcpProxy::start(upstream).await?;
        let original = self.bed.kubeconfig_path(name)?;
        let text = std::fs::read_to_string(&original)
            .with_context(|| format!("reading {}", original.display()))?;
        if !text.contains(&server) {
            anyhow::bail!("{} does not name {server}", original.display());
        }
        let proxied = self.bed.dir().join(format!("{name}-proxied.kubeconfig"));
        std::fs::write(&proxied, text.replace(&server, &proxy.url()))
            .with_context(|| format!("writing {}", proxied.display()))?;
        let config = std::fs::read_to_string(&self.config)
            .with_context(|| format!("reading {}", self.config.display()))?;
        let quoted = format!("\"{}\"", original.display());
        if config.matches(&quoted).count() != 1 {
            anyhow::bail!("{} names {quoted} not exactly once", self.config.display());
        }
        let config = config.replace(&quoted, &format!("\"{}\"", proxied.display()));
        std::fs::write(&self.config, config)
            .with_context(|| format!("writing {}", self.config.display()))?;
        Ok(proxy)
    }
}

/// Creates namespace `name` unless it exists.
pub async fn ensure_namespace(client: &kube::Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating namespace {name}")),
    }
}

/// A `tmc.toml` for `bed`: the workspace `root:tmc` as control plane, every fleet target as a push cluster
/// located by `locate(index, name)`, then `sections` verbatim.
pub fn tmc_toml(
    bed: &TestBed,
    synced_from: &str,
    locate: impl Fn(usize, &str) -> Location,
    sections: &str,
) -> Result<String> {
    let kcp = bed.kubeconfig_path("kcp")?;
    Ok(format!(
        "synced_from = \"{synced_from}\"\n\n[control_plane]\nkubeconfig = \"{}\"\nworkspace = \"root:tmc\"\n\n{}{sections}",
        kcp.display(),
        bed.fleet()?.clusters_toml(locate),
    ))
}

/// Creates Deployment `<namespace>/<name>` of `replicas` for each entry of `workloads`, `concurrency` at a
/// time, labelled `labels` (besides `app=<name>`). Returns how long the creates took.
pub async fn create_deployments(
    client: &kube::Client,
    namespace: &str,
    workloads: &Copies,
    labels: serde_json::Value,
    concurrency: usize,
) -> Result<Duration> {
    let items = workloads
        .iter()
        .map(|(name, replicas)| {
            let d = fixtures::deployment(namespace, name, *replicas, labels.clone(), json!({}))?;
            Ok((client.clone(), d))
        })
        .collect::<Result<Vec<_>>>()?;
    create_all(items, concurrency).await
}

/// Creates each Deployment of `items` through its client, `concurrency` at a time across all of them (one
/// bound for every workspace together). Returns how long the creates took.
pub async fn create_all(
    items: Vec<(kube::Client, Deployment)>,
    concurrency: usize,
) -> Result<Duration> {
    let started = Instant::now();
    futures::stream::iter(items)
        .map(|(client, d)| async move {
            let ns = d.metadata.namespace.clone().unwrap_or_default();
            let name = d.metadata.name.clone().unwrap_or_default();
            Api::<Deployment>::namespaced(client, &ns)
                .create(&PostParams::default(), &d)
                .await
                .with_context(|| format!("creating Deployment {ns}/{name}"))?;
            Ok::<_, anyhow::Error>(())
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(started.elapsed())
}

/// The Deployments in `namespace` on every fleet target (all of them, managed by tmc or not), by target.
pub async fn copies_by_target(bed: &TestBed, namespace: &str) -> Result<BTreeMap<String, Copies>> {
    let mut targets = Vec::new();
    for target in bed.fleet()?.targets() {
        targets.push((target.name.clone(), target.client().await?));
    }
    copies_on(&targets, namespace).await
}

/// The Deployments in `namespace` on each of `targets` (name and client), by target name.
pub async fn copies_on(
    targets: &[(String, kube::Client)],
    namespace: &str,
) -> Result<BTreeMap<String, Copies>> {
    futures::stream::iter(targets)
        .map(|(name, client)| async move {
            let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
            let list = api
                .list(&ListParams::default())
                .await
                .with_context(|| format!("listing Deployments on fleet target {name}"))?;
            let copies = list
                .items
                .into_iter()
                .map(|d| {
                    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    (d.metadata.name.unwrap_or_default(), replicas)
                })
                .collect();
            Ok::<_, anyhow::Error>((name.clone(), copies))
        })
        .buffer_unordered(8)
        .try_collect()
        .await
}

/// Waits until the SyncTarget of every name in `targets` is `Ready` in the workspace of `kcp` (its syncer
/// heartbeats and reaches its cluster), so that workloads created afterwards are placed once, over the whole
/// fleet. Fleet targets run no Deployment controller, so a workload placed early and spread again later waits
/// forever for availability on its new targets (a move keeps its old copies until the new ones are available).
pub async fn wait_targets_ready(
    kcp: &kube::Client,
    targets: &[String],
    timeout: Duration,
) -> Result<Duration> {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let gvk = GroupVersionKind::gvk("workload.kcp.io", "v1alpha1", "SyncTarget");
    let api: Api<DynamicObject> = Api::all_with(
        kcp.clone(),
        &ApiResource::from_gvk_with_plural(&gvk, "synctargets"),
    );
    let started = Instant::now();
    let what = format!("{} SyncTargets to be Ready", targets.len());
    wait::until(&what, timeout, Duration::from_secs(1), || {
        let api = api.clone();
        async move {
            // Until tmcd has installed its CRDs (a tmcd child process just started), the list fails.
            let list = match api.list(&ListParams::default()).await {
                Ok(list) => list,
                Err(e) => return Ok(Poll::Pending(format!("listing SyncTargets: {e}"))),
            };
            let ready: Vec<&str> = list
                .items
                .iter()
                .filter(|t| {
                    t.data
                        .pointer("/status/conditions")
                        .and_then(|c| c.as_array())
                        .is_some_and(|cs| {
                            cs.iter()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                })
                .filter_map(|t| t.metadata.name.as_deref())
                .collect();
            let missing: Vec<&String> = targets
                .iter()
                .filter(|t| !ready.contains(&t.as_str()))
                .collect();
            Ok(if missing.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending(format!(
                    "{} not Ready, e.g. {:?}",
                    missing.len(),
                    missing.first()
                ))
            })
        }
    })
    .await?;
    Ok(started.elapsed())
}

/// Checks that each workload of `expected` (name -> desired replicas) has a copy on every target of `chosen`,
/// each with at least one replica when the workload has as many replicas as there are chosen targets, the
/// copies' replicas summing to the desired count, and that no target outside `chosen` holds anything.
/// Returns the problems found, at most `limit` of them (empty: all placed).
pub fn spread_problems(
    expected: &Copies,
    chosen: &[String],
    observed: &BTreeMap<String, Copies>,
    limit: usize,
) -> Vec<String> {
    let mut problems = Vec::new();
    let empty = Copies::new();
    for (target, copies) in observed {
        if !chosen.contains(target) && !copies.is_empty() {
            problems.push(format!(
                "target {target} is not chosen but holds {} Deployments (e.g. {:?})",
                copies.len(),
                copies.keys().next()
            ));
        }
    }
    for (name, &desired) in expected {
        let mut sum = 0;
        for target in chosen {
            match observed.get(target).unwrap_or(&empty).get(name) {
                None => problems.push(format!("{name}: no copy on {target}")),
                Some(&r) if r < 1 && desired >= chosen.len() as i32 => {
                    problems.push(format!("{name}: {r} replicas on {target}"))
                }
                Some(&r) => sum += r,
            }
        }
        if sum != desired {
            problems.push(format!(
                "{name}: {sum} replicas on {chosen:?}, want {desired}"
            ));
        }
        for (target, copies) in observed {
            if !chosen.contains(target) && copies.contains_key(name) {
                problems.push(format!("{name}: a copy on {target}, which is not chosen"));
            }
        }
        if problems.len() >= limit {
            break;
        }
    }
    problems.truncate(limit);
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copies(entries: &[(&str, i32)]) -> Copies {
        entries.iter().map(|(n, r)| ((*n).to_owned(), *r)).collect()
    }

    fn observed(entries: &[(&str, &[(&str, i32)])]) -> BTreeMap<String, Copies> {
        entries
            .iter()
            .map(|(t, c)| ((*t).to_owned(), copies(c)))
            .collect()
    }

    #[test]
    fn a_full_spread_has_no_problem_and_each_gap_is_named() {
        let expected = copies(&[("a", 3), ("b", 4)]);
        let chosen = vec!["t1".to_owned(), "t2".to_owned()];
        let good = observed(&[
            ("t1", &[("a", 2), ("b", 2)]),
            ("t2", &[("a", 1), ("b", 2)]),
            ("t3", &[]),
        ]);
        assert!(spread_problems(&expected, &chosen, &good, 10).is_empty());

        let missing = observed(&[
            ("t1", &[("a", 2), ("b", 2)]),
            ("t2", &[("a", 1)]),
            ("t3", &[]),
        ]);
        assert_eq!(
            spread_problems(&expected, &chosen, &missing, 10),
            [
                "b: no copy on t2",
                "b: 2 replicas on [\"t1\", \"t2\"], want 4"
            ]
        );

        let stray = observed(&[
            ("t1", &[("a", 2), ("b", 2)]),
            ("t2", &[("a", 1), ("b", 2)]),
            ("t3", &[("a", 1)]),
        ]);
        let problems = spread_problems(&expected, &chosen, &stray, 10);
        assert!(problems[0].starts_with("target t3 is not chosen but holds 1"));
        assert!(problems.contains(&"a: a copy on t3, which is not chosen".to_owned()));

        let zero = observed(&[("t1", &[("a", 3), ("b", 2)]), ("t2", &[("a", 0), ("b", 2)])]);
        assert_eq!(
            spread_problems(&expected, &chosen, &zero, 10),
            ["a: 0 replicas on t2"]
        );
        assert_eq!(spread_problems(&expected, &chosen, &missing, 1).len(), 1);
    }
}
