//! Locating the test bed binaries built by `hack/testbed/build.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Environment variable naming a directory that holds the binaries (overrides `build.sh --print-bin-dir`).
pub const BIN_ENV: &str = "TMC_TESTBED_BIN";

/// The script that builds the binaries, relative to the repository root.
pub const BUILD_SCRIPT: &str = "hack/testbed/build.sh";

/// Every binary a full bed runs.
pub const ALL: &[&str] = &[
    "kcp",
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
];

/// A directory holding the test bed binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// Finds the bin dir: `$TMC_TESTBED_BIN` if set, else what `hack/testbed/build.sh --print-bin-dir` prints.
    pub fn locate() -> Result<Self> {
        if let Some(dir) = std::env::var_os(BIN_ENV).filter(|d| !d.is_empty()) {
            return Ok(Self {
                dir: PathBuf::from(dir),
            });
        }
        let script = repo_root().join(BUILD_SCRIPT);
        let out = Command::new("bash")
            .arg(&script)
            .arg("--print-bin-dir")
            .output()
            .with_context(|| format!("running `{} --print-bin-dir`", script.display()))?;
        if !out.status.success() {
            bail!(
                "`{} --print-bin-dir` failed ({}): {}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if dir.is_empty() {
            bail!("`{} --print-bin-dir` printed nothing", script.display());
        }
        Ok(Self {
            dir: PathBuf::from(dir),
        })
    }

    /// Uses an explicit directory.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The bin dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of binary `name` in the bin dir (not checked).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Fails with the exact build command when any of `names` is missing or not executable.
    pub fn require(&self, names: &[&str]) -> Result<()> {
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !is_executable(&self.path(n)))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        bail!(
            "test bed binaries missing in {}: {}. Build them with `{}` (from the repository root, \
             cold build takes tens of minutes, then cached), or point {BIN_ENV} at a directory that has them",
            self.dir.display(),
            missing.join(", "),
            repo_root().join(BUILD_SCRIPT).display(),
        )
    }
}

/// The repository root (parent of the `tests` crate).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_names_missing_binaries_and_the_build_command() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bins = Binaries::at(dir.path());
        let err = bins
            .require(&["etcd", "kcp"])
            .expect_err("empty dir must fail");
        let msg = err.to_string();
        assert!(msg.contains("etcd, kcp"), "{msg}");
        assert!(msg.contains(BUILD_SCRIPT), "{msg}");
    }

    #[test]
    fn require_accepts_executables() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("etcd");
        std::fs::write(&path, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Binaries::at(dir.path())
            .require(&["etcd"])
            .expect("present");
    }
}
