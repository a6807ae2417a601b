//! Reusing a bootstrapped kcp root directory across beds.
//!
//! kcp's first start spends most of its time creating its system CRDs and workspaces one by one (about 35 s on
//! two busy cores). A copy of a root directory where that already happened starts in about a third of that.
//! The first bed that needs a snapshot primes one (cold start, create the workspace, stop kcp, keep the dir);
//! a file lock makes concurrent beds wait for it instead of priming twice.

use std::fs::File;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Set to `0` to start every kcp from scratch.
pub const SNAPSHOT_ENV: &str = "TMC_TESTBED_KCP_SNAPSHOT";

/// Files kcp must regenerate on each start: the admin kubeconfig and the shard-admin token hash.
const FRESH_FILES: &[&str] = &["admin.kubeconfig", ".admin-token-store"];

/// Whether snapshots are enabled (default yes).
pub fn enabled() -> bool {
    std::env::var(SNAPSHOT_ENV).map_or(true, |v| v != "0")
}

/// `${TMC_TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tmc/testbed}`, as in `hack/testbed/build.sh`.
pub fn cache_root() -> PathBuf {
    let non_empty = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    non_empty("TMC_TESTBED_CACHE").unwrap_or_else(|| {
        non_empty("XDG_CACHE_HOME")
            .or_else(|| non_empty("HOME").map(|h| h.join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("tmc/testbed")
    })
}

/// Snapshot dir for this kcp binary (path, size, mtime) and workspace path.
pub fn snapshot_dir(kcp_bin: &Path, workspace: &str) -> Result<PathBuf> {
    let meta =
        std::fs::metadata(kcp_bin).with_context(|| format!("reading {}", kcp_bin.display()))?;
    let mut h = DefaultHasher::new();
    kcp_bin
        .canonicalize()
        .unwrap_or_else(|_| kcp_bin.to_path_buf())
        .hash(&mut h);
    meta.len().hash(&mut h);
    meta.modified().ok().hash(&mut h);
    workspace.hash(&mut h);
    let name = format!("{}-{:016x}", workspace.replace(':', "_"), h.finish());
    Ok(cache_root().join("kcp-snapshots").join(name))
}

/// Takes an exclusive lock on `<dir>.lock`, waiting for other holders (other tests, other processes).
pub async fn lock(dir: &Path) -> Result<File> {
    let parent = dir.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let path = dir.with_extension("lock");
    let file =
        File::create(&path).with_context(|| format!("creating lock file {}", path.display()))?;
    tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .context("lock task panicked")?
        .with_context(|| format!("locking {}", path.display()))
}

/// Copies snapshot `from` into `to`, leaving out the files kcp must regenerate.
pub fn restore(from: &Path, to: &Path) -> Result<()> {
    copy_tree(from, to, true).with_context(|| {
        format!(
            "copying kcp snapshot {} to {}",
            from.display(),
            to.display()
        )
    })
}

fn copy_tree(from: &Path, to: &Path, top: bool) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    std::fs::set_permissions(to, std::fs::metadata(from)?.permissions())?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if top && FRESH_FILES.iter().any(|f| name == *f) {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        if entry.file_type()?.is_dir() {
            copy_tree(&src, &dst, false)?;
        } else {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_copies_everything_but_the_credentials() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (from, to) = (dir.path().join("snap"), dir.path().join("bed/kcp"));
        std::fs::create_dir_all(from.join("etcd-server/member")).expect("mkdir");
        std::fs::write(from.join("etcd-server/member/db"), "data").expect("write");
        std::fs::write(from.join("apiserver.crt"), "cert").expect("write");
        std::fs::write(from.join("admin.kubeconfig"), "old").expect("write");
        std::fs::write(from.join(".admin-token-store"), "old").expect("write");
        restore(&from, &to).expect("restore");
        assert_eq!(
            std::fs::read_to_string(to.join("etcd-server/member/db")).expect("db"),
            "data"
        );
        assert!(to.join("apiserver.crt").exists());
        assert!(!to.join("admin.kubeconfig").exists());
        assert!(!to.join(".admin-token-store").exists());
    }

    #[test]
    fn snapshot_dir_depends_on_binary_and_workspace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "one").expect("write");
        std::fs::write(&b, "three").expect("write");
        let key = |bin: &Path, ws: &str| snapshot_dir(bin, ws).expect("key");
        assert_eq!(key(&a, "root:tmc"), key(&a, "root:tmc"));
        assert_ne!(key(&a, "root:tmc"), key(&a, "root:x"));
        assert_ne!(key(&a, "root:tmc"), key(&b, "root:tmc"));
        assert!(key(&a, "root:tmc").to_string_lossy().contains("root_tmc-"));
    }
}
