//! Hot reload: watch a directory with `notify`, wait until writes are done,
//! reload.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::error::PolicyError;
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

/// What a file event says about the file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// The content is final: renamed into place (or away), closed after
    /// writing, or deleted.
    Complete,
    /// A write may still be going on (created, data or metadata changed).
    InProgress,
}

/// The kubelet updates a ConfigMap or Secret volume by swapping its `..data`
/// symlink to a new hidden directory (the visible `<key>` entries link
/// through it), so no event names a `*.wasm` path: a change of `..data` is
/// a change of every policy in the directory.
fn is_volume_swap(path: &Path) -> bool {
    path.file_name().is_some_and(|name| name == "..data")
}

/// Classifies an event; `None` for events that cannot change a file's
/// content (opens and reads, including the host's own reads of the file).
fn classify(kind: &EventKind) -> Option<Write> {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(Write::Complete),
        EventKind::Access(_) => None,
        EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) => Some(Write::Complete),
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Any | EventKind::Other => {
            Some(Write::InProgress)
        }
    }
}

/// Watches `dir` and calls `reload` after every burst of changes to policy
/// files: `settle` after the burst's last event when that event says the
/// content is final (a rename into place, a close after writing, a delete),
/// `debounce` when a write may still be going on. The watch ends when the
/// handle is dropped or `reload` answers [`ControlFlow::Break`]. Must be
/// called inside a tokio runtime.
pub(crate) fn spawn<F, Fut>(
    dir: &Path,
    settle: Duration,
    debounce: Duration,
    reload: F,
) -> Result<WatchHandle, PolicyError>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ControlFlow<()>> + Send + 'static,
{
    let fail = |e: notify::Error| PolicyError::Directory {
        path: dir.display().to_string(),
        message: format!("cannot watch it: {e}"),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event)
                if event
                    .paths
                    .iter()
                    .any(|p| is_policy_file(p) || is_volume_swap(p)) =>
            {
                if let Some(write) = classify(&event.kind) {
                    let _ = tx.send(write);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("policy directory watch error: {e}"),
        })
        .map_err(fail)?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(fail)?;
    let task = tokio::spawn(reload_loop(rx, settle, debounce, reload));
    Ok(WatchHandle {
        _watcher: watcher,
        task,
    })
}

async fn reload_loop<F, Fut>(
    mut events: mpsc::UnboundedReceiver<Write>,
    settle: Duration,
    debounce: Duration,
    mut reload: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ControlFlow<()>>,
{
    while let Some(mut last) = events.recv().await {
        // Wait until the directory has been quiet for `settle` after a final
        // event, or for `debounce` after an event of a write in progress.
        loop {
            let quiet = match last {
                Write::Complete => settle,
                Write::InProgress => debounce,
            };
            match tokio::time::timeout(quiet, events.recv()).await {
                Ok(Some(write)) => last = write,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        if reload().await.is_break() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, DataChange, RemoveKind, RenameMode};

    use super::*;

    #[test]
    fn events_are_classified_by_what_they_say_about_the_content() {
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        let closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
        let removed = EventKind::Remove(RemoveKind::File);
        let created = EventKind::Create(CreateKind::File);
        let written = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        let opened = EventKind::Access(AccessKind::Open(AccessMode::Any));
        let read = EventKind::Access(AccessKind::Close(AccessMode::Read));
        assert_eq!(classify(&rename), Some(Write::Complete));
        assert_eq!(classify(&closed), Some(Write::Complete));
        assert_eq!(classify(&removed), Some(Write::Complete));
        assert_eq!(classify(&created), Some(Write::InProgress));
        assert_eq!(classify(&written), Some(Write::InProgress));
        assert_eq!(classify(&opened), None);
        assert_eq!(classify(&read), None);
    }
}
