//! Shared fixture of the syncer integration tests: a real test bed (kcp
//! workspace `root:tmc` + physical cluster `west`), the SyncTarget API, and a
//! syncer for `west` running in the test process.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{CustomResourceExt, ResourceExt};
use serde_json::{Value, json};
use tmc_api::crd::{SyncTarget, SyncTargetSpec};
use tmc_api::decision::TargetStatus;
use tmc_syncer::{NamespaceMapping, SourceIdentity, SyncedKind, Syncer, SyncerConfig};
use tmc_tests::testbed::wait::{self, Poll};
use tmc_tests::testbed::{KCP, TestBed};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Generous: the machine is small and shared.
pub const TIMEOUT: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(300);
pub const WORKSPACE: &str = "root:tmc";
pub const NS: &str = "shop";

/// Polls `check` until it returns `Some`, failing after [`TIMEOUT`] with `what` and the last state.
pub async fn wait_until<T, F, Fut>(what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Result<T, String>>>,
{
    wait::until(what, TIMEOUT, POLL, || {
        let fut = check();
        async move {
            Ok(match fut.await? {
                Ok(v) => Poll::Ready(v),
                Err(why) => Poll::Pending(why),
            })
        }
    })
    .await
}

/// The bed, clients and a running syncer.
pub struct Fixture {
    pub bed: TestBed,
    pub kcp: kube::Client,
    pub west: kube::Client,
    pub syncer: Option<RunningSyncer>,
}

/// A syncer task and the means to stop it.
pub struct RunningSyncer {
    pub syncer: Arc<Syncer>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningSyncer {
    /// Stops the syncer and waits for its run to return.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.task.await.context("syncer task panicked")?
    }
}

impl Fixture {
    /// Starts the bed, installs deployments and the SyncTarget API in the
    /// workspace, creates SyncTarget `west` and namespace `shop` upstream.
    pub async fn start() -> Result<Self> {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("tmc_syncer=debug,kube=warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
        let bed = TestBed::builder()
            .clusters(["west"])
            .workspace(WORKSPACE)
            .start()
            .await?;
        bed.install_kube_crds().await?;
        let kcp = bed.kcp_client().await?;
        let west = bed.cluster_client("west").await?;
        install_synctarget_crd(&kcp).await?;
        let targets: Api<SyncTarget> = Api::all(kcp.clone());
        let target = SyncTarget::new("west", SyncTargetSpec::default());
        wait_until("SyncTarget west to be created", || {
            let (targets, target) = (targets.clone(), target.clone());
            async move {
                Ok(
                    match targets.create(&PostParams::default(), &target).await {
                        Ok(_) => Ok(()),
                        Err(e) => Err(e.to_string()),
                    },
                )
            }
        })
        .await?;
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}}))?;
        Api::<Namespace>::all(kcp.clone())
            .create(&PostParams::default(), &ns)
            .await
            .context("creating namespace shop in kcp")?;
        Ok(Self {
            bed,
            kcp,
            west,
            syncer: None,
        })
    }

    /// Starts a syncer for `west` (heartbeat 1 s, resync 5 s).
    pub fn start_syncer(&mut self) {
        self.start_syncer_with(self.kcp.clone(), self.west.clone(), Duration::from_secs(5));
    }

    /// Starts a syncer for `west` with these clients and resync interval (heartbeat 1 s).
    pub fn start_syncer_with(
        &mut self,
        upstream: kube::Client,
        downstream: kube::Client,
        resync: Duration,
    ) {
        self.start_syncer_mapped(upstream, downstream, resync, NamespaceMapping::Same);
    }

    /// [`Self::start_syncer_with`], with namespace mapping `mapping`.
    pub fn start_syncer_mapped(
        &mut self,
        upstream: kube::Client,
        downstream: kube::Client,
        resync: Duration,
        mapping: NamespaceMapping,
    ) {
        let mut config =
            SyncerConfig::new("west", upstream, downstream, SourceIdentity::new(WORKSPACE));
        config.namespace_mapping = mapping;
        config.kinds = vec![
            SyncedKind::parse("apps/v1/Deployment").expect("valid kind"),
            SyncedKind::parse("v1/ConfigMap").expect("valid kind"),
        ];
        config.heartbeat_interval = Duration::from_secs(1);
        config.resync_interval = resync;
        let syncer = Arc::new(Syncer::new(config));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn({
            let syncer = syncer.clone();
            async move {
                syncer
                    .run(async {
                        let _ = stopped.await;
                    })
                    .await
            }
        });
        self.syncer = Some(RunningSyncer { syncer, stop, task });
    }

    /// A client of the workspace (`name` = [`KCP`]) or of a physical cluster
    /// that records every request it sends as `METHOD path?query`.
    pub async fn recording_client(&self, name: &str) -> Result<(kube::Client, RequestLog)> {
        let path = self.bed.kubeconfig_path(name)?;
        let kubeconfig = Kubeconfig::read_from(&path)?;
        let options = KubeConfigOptions {
            context: (name == KCP).then(|| WORKSPACE.to_string()),
            ..KubeConfigOptions::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?;
        let log = RequestLog::default();
        let seen = log.clone();
        let layer =
            tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
                seen.record(format!("{} {}", req.method(), req.uri()));
                req
            });
        let client = kube::client::ClientBuilder::try_from(config)?
            .with_layer(&layer)
            .build();
        Ok((client, log))
    }

    /// A client of the workspace whose writes (PATCH, PUT) to Deployment `name` are refused by kcp
    /// while `armed` is set: each becomes a merge patch naming a stale `resourceVersion`, which kcp
    /// answers with 409 Conflict, applying nothing. Everything else (status included) goes through.
    pub async fn client_refusing_writes_to(
        &self,
        name: &str,
        armed: Arc<AtomicBool>,
    ) -> Result<kube::Client> {
        let path = self.bed.kubeconfig_path(KCP)?;
        let kubeconfig = Kubeconfig::read_from(&path)?;
        let options = KubeConfigOptions {
            context: Some(WORKSPACE.to_string()),
            ..KubeConfigOptions::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?;
        let object_path = format!("/namespaces/{NS}/deployments/{name}");
        let layer =
            tower::util::MapRequestLayer::new(move |mut req: http::Request<kube::client::Body>| {
                let write = matches!(*req.method(), http::Method::PATCH | http::Method::PUT);
                let ours = req.uri().path().ends_with(&object_path);
                if write && ours && armed.load(Ordering::SeqCst) {
                    let refused = br#"{"metadata":{"resourceVersion":"1"}}"#;
                    *req.method_mut() = http::Method::PATCH;
                    let headers = req.headers_mut();
                    headers.insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/merge-patch+json"),
                    );
                    headers.insert(http::header::CONTENT_LENGTH, refused.len().into());
                    *req.body_mut() = kube::client::Body::from(refused.to_vec());
                }
                req
            });
        Ok(kube::client::ClientBuilder::try_from(config)?
            .with_layer(&layer)
            .build())
    }

    /// Ends the running syncer the way `kill -9` ends a process: its task (and with it every watch
    /// and worker it owns) is aborted wherever it is, with no graceful shutdown.
    pub async fn crash_syncer(&mut self) {
        if let Some(running) = self.syncer.take() {
            running.task.abort();
            let _ = running.task.await;
        }
    }

    /// Stops the running syncer, if any.
    pub async fn stop_syncer(&mut self) -> Result<()> {
        match self.syncer.take() {
            Some(running) => running.stop().await,
            None => Ok(()),
        }
    }

    pub fn syncer(&self) -> &Syncer {
        &self.syncer.as_ref().expect("a syncer is running").syncer
    }

    pub fn upstream_deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.kcp.clone(), NS)
    }

    pub fn west_deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.west.clone(), NS)
    }

    /// Creates upstream Deployment `name` placed on `west` with `replicas` in its result.
    pub async fn create_placed(&self, name: &str, replicas: u32) -> Result<Deployment> {
        let deployment: Deployment = serde_json::from_value(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": name,
                "namespace": NS,
                "labels": {"app": name, "state.workload.kcp.io/west": "Sync"},
                "annotations": {"result.workload.kcp.io/west": json!({"replicas": replicas}).to_string()},
            },
            "spec": {
                "replicas": 9,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
                },
            },
        }))?;
        self.upstream_deployments()
            .create(&PostParams::default(), &deployment)
            .await
            .with_context(|| format!("creating upstream Deployment {name}"))
    }

    /// Waits until west holds copy `name` with `replicas` and returns it.
    pub async fn wait_copy(&self, name: &str, replicas: i32) -> Result<Deployment> {
        let api = self.west_deployments();
        wait_until(
            &format!("copy {name} with {replicas} replicas in west"),
            || {
                let api = api.clone();
                async move {
                    Ok(match api.get_opt(name).await? {
                        Some(d) if d.spec.as_ref().and_then(|s| s.replicas) == Some(replicas) => {
                            Ok(d)
                        }
                        Some(d) => Err(format!("replicas {:?}", d.spec.and_then(|s| s.replicas))),
                        None => Err("no copy yet".into()),
                    })
                }
            },
        )
        .await
    }

    /// West's report on the upstream object `name`, once `check` accepts it;
    /// `what` names the wait in a timeout's message.
    pub async fn wait_report(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&TargetStatus) -> bool,
    ) -> Result<TargetStatus> {
        let ups = self.upstream_deployments();
        wait_until(what, || {
            let (ups, check) = (ups.clone(), &check);
            async move {
                let up = ups.get(name).await?;
                let raw = annotations_of(&up)
                    .get("status.workload.kcp.io/west")
                    .cloned();
                let status: Option<TargetStatus> =
                    raw.as_deref().map(serde_json::from_str).transpose()?;
                Ok(match status {
                    Some(s) if check(&s) => Ok(s),
                    other => Err(format!("report {other:?}")),
                })
            }
        })
        .await
    }

    /// Waits until west has no copy `name`.
    pub async fn wait_copy_gone(&self, name: &str) -> Result<()> {
        let api = self.west_deployments();
        wait_until(&format!("copy {name} to be gone from west"), || {
            let api = api.clone();
            async move {
                Ok(match api.get_opt(name).await? {
                    Some(d) => Err(format!(
                        "still there (deleting: {})",
                        d.metadata.deletion_timestamp.is_some()
                    )),
                    None => Ok(()),
                })
            }
        })
        .await
    }

    /// The SyncTarget `west` as JSON.
    pub async fn sync_target(&self) -> Result<Value> {
        let st = Api::<SyncTarget>::all(self.kcp.clone()).get("west").await?;
        Ok(serde_json::to_value(st)?)
    }

    /// Waits until SyncTarget west's Ready condition has `status` (and `reason` if given).
    pub async fn wait_ready(&self, status: &str, reason: Option<&str>) -> Result<Value> {
        wait_until(
            &format!("SyncTarget west Ready={status} {reason:?}"),
            || async {
                let st = self.sync_target().await?;
                let ready = st
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                    .cloned();
                Ok(match ready {
                    Some(c) if c["status"] == status && reason.is_none_or(|r| c["reason"] == r) => {
                        Ok(st)
                    }
                    other => Err(format!("Ready condition {other:?}")),
                })
            },
        )
        .await
    }
}

/// Server-side applies the SyncTarget CRD (generated from the types) and waits until it is served.
async fn install_synctarget_crd(client: &kube::Client) -> Result<()> {
    let crd = SyncTarget::crd();
    let name = crd.name_any();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        &name,
        &PatchParams::apply("tmc-test").force(),
        &Patch::Apply(&crd),
    )
    .await
    .with_context(|| format!("applying CRD {name}"))?;
    let targets: Api<SyncTarget> = Api::all(client.clone());
    wait_until("synctargets to be served", || {
        let targets = targets.clone();
        async move {
            Ok(match targets.list(&Default::default()).await {
                Ok(_) => Ok(()),
                Err(e) => Err(e.to_string()),
            })
        }
    })
    .await
}

/// Labels of an object.
pub fn labels_of<K: ResourceExt>(object: &K) -> std::collections::BTreeMap<String, String> {
    object.labels().clone()
}

/// Annotations of an object.
pub fn annotations_of<K: ResourceExt>(object: &K) -> std::collections::BTreeMap<String, String> {
    object.annotations().clone()
}

/// The protocol keys of target `west` still on `object`: labels, annotations and its finalizer.
pub fn west_keys_of<K: ResourceExt>(object: &K) -> Vec<String> {
    let mut left: Vec<String> = object
        .labels()
        .keys()
        .chain(object.annotations().keys())
        .chain(object.finalizers())
        .filter(|k| k.ends_with("workload.kcp.io/west") || *k == "workload.kcp.io/syncer-west")
        .cloned()
        .collect();
    left.sort();
    left
}

/// The requests a [`Fixture::recording_client`] sent, in order.
#[derive(Clone, Default)]
pub struct RequestLog(Arc<Mutex<Vec<String>>>);

impl RequestLog {
    fn record(&self, line: String) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }

    /// Every request so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Requests with `method` on exactly `path` (no watches or lists of a collection).
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.lines()
            .iter()
            .filter(|l| {
                let (m, uri) = l.split_once(' ').unwrap_or_default();
                m == method && uri.split('?').next() == Some(path)
            })
            .count()
    }
}
