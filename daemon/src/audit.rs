//! The audit trail: one JSON line per decision change (a workload placed,
//! moved, its replicas shifted or removed), appended to a file with
//! size-based rotation or written to stdout (`[audit]` of tmc.toml). The
//! schema is [`AuditRecord`]; `docs/operations.md` documents it.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::{Audit, AuditSink};

/// One decision change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// When tmcd wrote the decision (RFC 3339).
    pub time: String,
    /// The tmcd replica that decided.
    pub decided_by: String,
    /// `Kind namespace/name` of the workload.
    pub workload: String,
    /// The workload's UID.
    pub uid: Option<String>,
    /// Target -> replicas before (`null` replicas: the kind has none).
    pub from: BTreeMap<String, Option<u32>>,
    /// Target -> replicas decided now.
    pub to: BTreeMap<String, Option<u32>>,
    /// Targets whose copy is being removed by this write.
    pub removing: Vec<String>,
    /// The ClusterWorkloadPlacement that governs the workload.
    pub placement: String,
    /// The placement policy, the SHA-256 of the module that decided, and the
    /// policy generation it belongs to.
    pub policy: String,
    pub policy_digest: Option<String>,
    pub policy_generation: u64,
    /// The policy's reason.
    pub reason: String,
}

/// Where audit records go.
pub struct AuditLog {
    sink: Mutex<Sink>,
}

enum Sink {
    Off,
    Stdout,
    File(Rotating),
}

/// A file that is rotated to `<path>.1` ... `<path>.<keep>` past `max_bytes`.
struct Rotating {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: File,
    written: u64,
}

impl AuditLog {
    /// A log that records nothing.
    pub fn off() -> Self {
        Self {
            sink: Mutex::new(Sink::Off),
        }
    }

    /// The sink `[audit]` names; a file sink is opened (appending) now, so
    /// an unwritable path stops tmcd at start, not at its first decision.
    pub fn open(config: &Audit, base_dir: &Path) -> Result<Self> {
        let sink = match config.sink {
            AuditSink::Off => Sink::Off,
            AuditSink::Stdout => Sink::Stdout,
            AuditSink::File => {
                let path = base_dir.join(&config.path);
                let file = append(&path)?;
                let written = file.metadata().map(|m| m.len()).unwrap_or(0);
                Sink::File(Rotating {
                    path,
                    max_bytes: u64::from(config.max_size_mib.max(1)) * 1024 * 1024,
                    keep: config.max_files.max(1),
                    file,
                    written,
                })
            }
        };
        Ok(Self {
            sink: Mutex::new(sink),
        })
    }

    /// Appends `record` as one line. A write that fails is logged, never
    /// fatal: the decision is already recorded on the workload.
    pub fn record(&self, record: &AuditRecord) {
        let mut sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
        let line = match serde_json::to_string(record) {
            Ok(line) => line + "\n",
            Err(err) => {
                tracing::warn!(error = %err, "audit record not serializable");
                return;
            }
        };
        let result = match &mut *sink {
            Sink::Off => Ok(()),
            Sink::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
            Sink::File(file) => file.write_line(&line),
        };
        if let Err(err) = result {
            tracing::warn!(error = %err, workload = %record.workload, "audit record not written");
        }
    }
}

impl Rotating {
    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        if self.written > 0 && self.written + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.written += line.len() as u64;
        Ok(())
    }

    /// `<path>.<n>` -> `<path>.<n+1>` (the oldest dropped), `<path>` -> `<path>.1`.
    fn rotate(&mut self) -> std::io::Result<()> {
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        let _ = std::fs::remove_file(numbered(self.keep));
        for n in (1..self.keep).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        std::fs::rename(&self.path, numbered(1))?;
        self.file = append(&self.path).map_err(std::io::Error::other)?;
        self.written = 0;
        Ok(())
    }
}

fn append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| {
            format!(
                "opening the audit file {} (fix: point [audit] path at a writable file)",
                path.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(workload: &str) -> AuditRecord {
        AuditRecord {
            time: "2026-01-01T00:00:00Z".into(),
            decided_by: "tmcd-1".into(),
            workload: workload.into(),
            uid: Some("u1".into()),
            from: [("west".to_string(), Some(2))].into(),
            to: [("east".to_string(), Some(2))].into(),
            removing: vec![],
            placement: "spread".into(),
            policy: "replica-spread".into(),
            policy_digest: Some("ab".into()),
            policy_generation: 3,
            reason: "why".into(),
        }
    }

    #[test]
    fn records_are_json_lines_and_the_file_rotates_past_its_size() {
        let dir = tempfile::tempdir().expect("dir");
        let config = Audit {
            sink: AuditSink::File,
            path: "audit.jsonl".into(),
            max_size_mib: 1,
            max_files: 2,
        };
        let log = AuditLog::open(&config, dir.path()).expect("open");
        let one = serde_json::to_string(&record("Deployment demo/web")).expect("json");
        let per_file = (1024 * 1024) / (one.len() + 1);
        for _ in 0..(per_file * 3 + 1) {
            log.record(&record("Deployment demo/web"));
        }
        let current = std::fs::read_to_string(dir.path().join("audit.jsonl")).expect("current");
        let back: AuditRecord =
            serde_json::from_str(current.lines().next().expect("a line")).expect("reads back");
        assert_eq!(back, record("Deployment demo/web"));
        assert!(dir.path().join("audit.jsonl.1").exists());
        assert!(dir.path().join("audit.jsonl.2").exists());
        assert!(
            !dir.path().join("audit.jsonl.3").exists(),
            "only max_files rotated files are kept"
        );
        for file in ["audit.jsonl", "audit.jsonl.1"] {
            let len = std::fs::metadata(dir.path().join(file))
                .expect("meta")
                .len();
            assert!(len <= 1024 * 1024, "{file} is {len} bytes");
        }
    }

    #[test]
    fn an_unwritable_path_is_refused_at_open() {
        let config = Audit {
            sink: AuditSink::File,
            path: "/nonexistent-dir/audit.jsonl".into(),
            max_size_mib: 1,
            max_files: 1,
        };
        let err = AuditLog::open(&config, Path::new("/"))
            .err()
            .expect("refused");
        assert!(format!("{err:#}").contains("[audit] path"), "{err:#}");
    }
}
