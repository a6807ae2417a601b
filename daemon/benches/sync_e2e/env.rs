//! The bed, the tmcd child, its policy directory and the watches.

use super::*;

/// Everything a scenario needs.
pub struct Env {
    pub knobs: knobs::Knobs,
    pub kcp: kube::Client,
    pub clusters: HashMap<String, kube::Client>,
    pub trackers: HashMap<String, Arc<tracker::Tracker>>,
    pub tmcd: child::Tmcd,
    /// The throughput creates into kcp alone, before tmcd started.
    pub kcp_alone: Duration,
    /// Every server of the bed, by name, for CPU accounting.
    pub servers: Vec<(String, u32)>,
    pub dir: tempfile::TempDir,
    // Dropped last: stops every server.
    pub bed: TestBed,
}

impl Env {
    /// Starts the bed, installs Deployments in kcp, starts tmcd and waits for both targets Ready.
    pub async fn start(knobs: knobs::Knobs) -> Result<Self> {
        progress("starting the test bed (kcp + west + east)");
        let mut bed = TestBed::builder()
            .clusters(["west", "east"])
            .workspace("root:tmc")
            .start()
            .await?;
        bed.install_kube_crds().await?;
        let kcp = bed.kcp_client().await?;
        keep_pod_template_metadata(&kcp).await?;
        let dir = tempfile::tempdir()?;
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies)?;
        fixtures::install_policy(&policies, "location-affinity", "affinity")?;
        fixtures::install_policy(&policies, "active-passive", "mover")?;
        let config = dir.path().join("tmc.toml");
        std::fs::write(
            &config,
            fixtures::tmc_toml(
                &bed,
                "tmc-bench",
                "[sync]\nresources = [\"deployments.apps\"]\n\n[policies]\ndirectory = \"policies\"\n\n[admin]\naddress = \"127.0.0.1:0\"\n",
            )?,
        )?;
        let mut clusters = HashMap::new();
        let mut trackers = HashMap::new();
        for name in ["west", "east"] {
            let client = bed.cluster_client(name).await?;
            trackers.insert(
                name.to_string(),
                tracker::Tracker::start(name, client.clone()),
            );
            clusters.insert(name.to_string(), client);
        }
        let kcp_alone = kcp_alone(&kcp, &knobs).await?;
        progress(&format!("starting {}", knobs.tmcd.display()));
        let log = repo_root().join("target/bench/sync_e2e-tmcd.log");
        let tmcd = child::Tmcd::start(&knobs.tmcd, &config, &log)?;
        let servers = bed.pids();
        let mut env = Self {
            knobs,
            kcp,
            clusters,
            trackers,
            tmcd,
            kcp_alone,
            servers,
            dir,
            bed,
        };
        env.wait_targets_ready().await?;
        progress(&format!(
            "tmcd (pid {}) has both targets Ready",
            env.tmcd.pid()
        ));
        Ok(env)
    }

    /// The policy directory tmcd watches.
    pub fn policy_dir(&self) -> PathBuf {
        self.dir.path().join("policies")
    }

    /// CPU time so far of tmcd and of every server of the bed.
    pub fn cpu_times(&self) -> Vec<(String, Duration)> {
        let mut all = vec![("tmcd".to_string(), self.tmcd.pid())];
        all.extend(self.servers.iter().cloned());
        all.into_iter()
            .filter_map(|(name, pid)| child::proc_cpu(pid).ok().map(|cpu| (name, cpu)))
            .collect()
    }

    /// The watch on `cluster`.
    pub fn tracker(&self, cluster: &str) -> Result<&Arc<tracker::Tracker>> {
        self.trackers
            .get(cluster)
            .with_context(|| format!("no watch on cluster {cluster}"))
    }

    /// The client of `cluster`.
    pub fn cluster(&self, cluster: &str) -> Result<&kube::Client> {
        self.clusters
            .get(cluster)
            .with_context(|| format!("no client for cluster {cluster}"))
    }

    /// tmcd's admin address, from its "tmcd started" log line.
    pub fn admin_addr(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.tmcd.log).ok()?;
        let line = text.lines().find(|l| l.contains("tmcd started"))?;
        let at = line.find("127.0.0.1:")?;
        let addr: String = line[at..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
            .collect();
        Some(addr)
    }

    async fn wait_targets_ready(&mut self) -> Result<()> {
        let api: Api<SyncTarget> = Api::all(self.kcp.clone());
        let deadline = Instant::now() + self.knobs.timeout;
        loop {
            self.tmcd.check_running()?;
            let list = api.list(&Default::default()).await;
            let ready: Vec<String> = match &list {
                Ok(list) => list
                    .items
                    .iter()
                    .filter(|t| {
                        t.status.as_ref().is_some_and(|s| {
                            s.conditions
                                .iter()
                                .any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                    })
                    .filter_map(|t| t.metadata.name.clone())
                    .collect(),
                Err(_) => Vec::new(),
            };
            if ready.iter().any(|n| n == "west") && ready.iter().any(|n| n == "east") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "SyncTargets west and east not Ready after {:?} (ready: {ready:?}); tmcd log tail:\n{}",
                    self.knobs.timeout,
                    self.tmcd.tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The virtual cluster's own floor: the throughput burst's creates into kcp
/// with nobody watching, same concurrency; the objects are deleted after.
async fn kcp_alone(kcp: &kube::Client, knobs: &knobs::Knobs) -> Result<Duration> {
    let n = knobs.throughput_n;
    progress(&format!(
        "kcp alone: {n} creates, concurrency {}",
        knobs.concurrency
    ));
    objects::namespace(kcp, "floor").await?;
    let mut items = Vec::with_capacity(n);
    for i in 0..n {
        items.push(objects::deployment(
            "floor",
            &format!("f-{i:05}"),
            "floor",
            knobs.replicas,
            json!({}),
        )?);
    }
    let t0 = Instant::now();
    futures::stream::iter(items)
        .map(|d| async move { objects::create(kcp, &d).await })
        .buffer_unordered(knobs.concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    let took = t0.elapsed();
    progress(&format!("kcp alone: {n} created in {}", stats::ms(took)));
    let api: Api<Deployment> = Api::namespaced(kcp.clone(), "floor");
    api.delete_collection(&Default::default(), &Default::default())
        .await
        .context("deleting the kcp-alone deployments in namespace floor")?;
    Ok(took)
}

impl Drop for Env {
    fn drop(&mut self) {
        for t in self.trackers.values() {
            t.stop();
        }
    }
}

/// The test bed's deployments.apps CRD prunes `spec.template.metadata`, so
/// copies would fail a physical cluster's validation: re-apply it with that
/// field preserved (same as `daemon/tests/common`).
async fn keep_pod_template_metadata(client: &kube::Client) -> Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let path = repo_root().join("tests/src/testbed/crds/apps_deployments.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut crd: Value = serde_yaml::from_str(&text)?;
    for version in crd["spec"]["versions"].as_array_mut().into_iter().flatten() {
        let template = version
            .pointer_mut(
                "/schema/openAPIV3Schema/properties/spec/properties/template/properties/metadata",
            )
            .context("deployments CRD has no spec.template.metadata schema")?;
        template["x-kubernetes-preserve-unknown-fields"] = json!(true);
    }
    if let Some(m) = crd["metadata"].as_object_mut() {
        m.remove("creationTimestamp");
    }
    if let Some(m) = crd.as_object_mut() {
        m.remove("status");
    }
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        "deployments.apps",
        &PatchParams::apply("tmc-bench").force(),
        &Patch::Apply(&crd),
    )
    .await
    .context("re-applying deployments.apps with pod template metadata preserved")?;
    Ok(())
}
