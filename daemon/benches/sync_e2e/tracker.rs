//! What a watch on one physical cluster has seen: when each Deployment first
//! appeared, which are present now, and every appearance/disappearance.

use super::*;

/// State behind the lock.
#[derive(Default)]
pub struct Seen {
    /// `namespace/name` -> first time the watch delivered it.
    pub first: HashMap<String, Instant>,
    /// `namespace/name` present now.
    pub present: HashSet<String>,
    /// Presence changes: (when, `namespace/name`, present after).
    pub changes: Vec<(Instant, String, bool)>,
}

impl Seen {
    /// How many of `keys` are present.
    pub fn count_present<'a>(&self, keys: impl IntoIterator<Item = &'a String>) -> usize {
        keys.into_iter()
            .filter(|k| self.present.contains(*k))
            .count()
    }
}

/// A watch on the Deployments of one cluster, all namespaces.
pub struct Tracker {
    pub cluster: String,
    seen: Mutex<Seen>,
    changed: Notify,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Tracker {
    /// Starts watching `client`'s Deployments until [`stop`](Self::stop).
    pub fn start(cluster: &str, client: kube::Client) -> Arc<Self> {
        let tracker = Arc::new(Self {
            cluster: cluster.to_string(),
            seen: Mutex::new(Seen::default()),
            changed: Notify::new(),
            task: Mutex::new(None),
        });
        let t = tracker.clone();
        let task = tokio::spawn(async move {
            let api: Api<Deployment> = Api::all(client);
            let mut events = watcher(api, watcher::Config::default()).boxed();
            loop {
                match events.try_next().await {
                    Ok(Some(event)) => t.record(event),
                    Ok(None) => break,
                    Err(err) => {
                        eprintln!("[bench] watch on {} failed, retrying: {err}", t.cluster);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        if let Ok(mut slot) = tracker.task.lock() {
            *slot = Some(task.abort_handle());
        }
        tracker
    }

    /// Stops the watch (before the servers go away).
    pub fn stop(&self) {
        if let Some(task) = self.task.lock().ok().and_then(|mut t| t.take()) {
            task.abort();
        }
    }

    fn record(&self, event: watcher::Event<Deployment>) {
        let now = Instant::now();
        let (obj, present) = match event {
            watcher::Event::Apply(d) | watcher::Event::InitApply(d) => (d, true),
            watcher::Event::Delete(d) => (d, false),
            watcher::Event::Init | watcher::Event::InitDone => return,
        };
        let key = format!(
            "{}/{}",
            obj.metadata.namespace.unwrap_or_default(),
            obj.metadata.name.unwrap_or_default()
        );
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        let was = seen.present.contains(&key);
        if present && !was {
            seen.first.entry(key.clone()).or_insert(now);
            seen.present.insert(key.clone());
            seen.changes.push((now, key, true));
        } else if !present && was {
            seen.present.remove(&key);
            seen.changes.push((now, key, false));
        }
        drop(seen);
        self.changed.notify_waiters();
    }

    /// Waits until `check` returns `Some`, at most `timeout`; `what` names the wait in errors.
    pub async fn until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Seen) -> Option<T>,
    ) -> Result<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let seen = self
                    .seen
                    .lock()
                    .map_err(|_| anyhow::anyhow!("tracker lock poisoned"))?;
                if let Some(v) = check(&seen) {
                    return Ok(v);
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!(
                    "timed out after {timeout:?} waiting for {what} on {} (fix: look at the tmcd log printed above, or raise TMC_BENCH_TIMEOUT_S)",
                    self.cluster
                );
            }
        }
    }
}
