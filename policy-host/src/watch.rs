//! Hot reload: watch a directory with `notify`, debounce events, reload.

use std::path::{Path, PathBuf};
use std::sync::Weak;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::error::PolicyError;
use crate::host::{Inner, PolicyHost};
use crate::loader::is_policy_file;

/// Keeps the watch alive; dropping it stops watching.
pub struct WatchHandle {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PolicyHost {
    /// Watches `dir` and reloads it (see [`load_dir`](Self::load_dir)) after
    /// every burst of changes to `*.wasm` files, once `debounce` passed without
    /// a new event. Call [`load_dir`](Self::load_dir) first for the initial
    /// load. Must be called inside a tokio runtime.
    pub fn watch(&self, dir: impl AsRef<Path>) -> Result<WatchHandle, PolicyError> {
        let dir = dir.as_ref().to_path_buf();
        let fail = |e: notify::Error| PolicyError::Directory {
            path: dir.display().to_string(),
            message: format!("cannot watch it: {e}"),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
                Ok(event) if event.paths.iter().any(|p| is_policy_file(p)) => {
                    let _ = tx.send(());
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("policy directory watch error: {e}"),
            })
            .map_err(fail)?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(fail)?;
        let task = tokio::spawn(reload_loop(
            Arc::downgrade(&self.inner),
            dir,
            rx,
            self.inner.config.debounce,
        ));
        Ok(WatchHandle {
            _watcher: watcher,
            task,
        })
    }
}

use std::sync::Arc;

async fn reload_loop(
    inner: Weak<Inner>,
    dir: PathBuf,
    mut events: mpsc::UnboundedReceiver<()>,
    debounce: std::time::Duration,
) {
    while events.recv().await.is_some() {
        // Debounce: wait until the directory has been quiet for `debounce`.
        loop {
            match tokio::time::timeout(debounce, events.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        let host = PolicyHost { inner };
        if let Err(e) = host.load_dir(&dir).await {
            tracing::error!("policy reload failed: {e}");
        }
    }
}
