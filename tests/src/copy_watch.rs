//! A watch of every Deployment on each of some clusters that records when each one was first seen, for the
//! benchmarks' "create -> copy seen" figures (`daemon/benches/fleet_scale.rs`, `daemon/benches/tenants_scale.rs`),
//! and the same for any keys drawn from Deployments (the tenants bench's stages upstream).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube::runtime::watcher;
use tokio::sync::Notify;

/// The keys a watch of [`CopyWatch::start_keyed`] records for a Deployment it sees.
pub type KeysOf = Box<dyn Fn(&Deployment) -> Vec<String> + Send + Sync>;

/// When a watch on each physical cluster first saw each Deployment, keyed `cluster/namespace/name`.
#[derive(Default)]
pub struct CopyWatch {
    first: Mutex<HashMap<String, Instant>>,
    changed: Notify,
    watches: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl CopyWatch {
    /// Starts one watch of every Deployment per cluster of `clusters` (name, client), keyed by [`key`],
    /// until [`CopyWatch::stop`] (or drop).
    pub fn start(clusters: &[(String, kube::Client)]) -> Arc<Self> {
        let watches = clusters
            .iter()
            .map(|(cluster, client)| {
                let cluster = cluster.clone();
                let keys: KeysOf = Box::new(move |d: &Deployment| {
                    vec![key(
                        &cluster,
                        d.metadata.namespace.as_deref().unwrap_or_default(),
                        d.metadata.name.as_deref().unwrap_or_default(),
                    )]
                });
                (client.clone(), keys)
            })
            .collect();
        Self::start_keyed(watches)
    }

    /// Starts one watch of every Deployment per client of `watches`, recording when each key that its
    /// function draws from a Deployment was first seen.
    pub fn start_keyed(watches: Vec<(kube::Client, KeysOf)>) -> Arc<Self> {
        let seen = Arc::new(Self::default());
        let mut tasks = Vec::new();
        for (client, keys_of) in watches {
            let seen = seen.clone();
            let api: Api<Deployment> = Api::all(client);
            let task = tokio::spawn(async move {
                let mut events = watcher(api, watcher::Config::default()).boxed();
                loop {
                    match events.try_next().await {
                        Ok(Some(watcher::Event::Apply(d) | watcher::Event::InitApply(d))) => {
                            let now = Instant::now();
                            if let Ok(mut first) = seen.first.lock() {
                                for key in keys_of(&d) {
                                    first.entry(key).or_insert(now);
                                }
                            }
                            seen.changed.notify_waiters();
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => {
                            eprintln!("[copy_watch] a watch failed, retrying: {e}");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            });
            tasks.push(task.abort_handle());
        }
        if let Ok(mut slot) = seen.watches.lock() {
            *slot = tasks;
        }
        seen
    }

    /// When `key` was first seen, if it was.
    pub fn seen(&self, key: &str) -> Option<Instant> {
        self.first.lock().ok()?.get(key).copied()
    }

    /// Stops the watches.
    pub fn stop(&self) {
        for task in self
            .watches
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default()
        {
            task.abort();
        }
    }

    /// Waits until every one of `keys` (see [`key`]) has been seen; returns the last of those instants. On
    /// timeout, names how many are missing and a few of them.
    pub async fn all(&self, keys: &[String], timeout: Duration) -> Result<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let missing: Vec<&String> = {
                let first = self.first.lock().map_err(|_| anyhow!("poisoned"))?;
                let missing: Vec<&String> =
                    keys.iter().filter(|k| !first.contains_key(*k)).collect();
                if missing.is_empty() {
                    return keys
                        .iter()
                        .filter_map(|k| first.get(k).copied())
                        .max()
                        .ok_or_else(|| anyhow!("no key to wait for"));
                }
                missing
            };
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!(
                    "{} of {} copies not seen within {timeout:?}, e.g. {:?}",
                    missing.len(),
                    keys.len(),
                    missing.iter().take(5).collect::<Vec<_>>()
                );
            }
        }
    }
}

impl Drop for CopyWatch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The key of a copy in a [`CopyWatch`]: `cluster/namespace/name`.
pub fn key(cluster: &str, namespace: &str, name: &str) -> String {
    format!("{cluster}/{namespace}/{name}")
}
