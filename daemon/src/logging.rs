//! Log set-up of tmcd: the shared set-up of tmc's binaries
//! (`tmc_syncer::process`: stderr, text or JSON lines, `RUST_LOG` honoured,
//! default `info`) with the per-syncer ring buffers of the admin API.

use tmc_syncer::process::{self, LogFormat};

use crate::telemetry::logs::SyncerLogs;

/// Installs the global subscriber; returns the syncer log buffers it feeds.
pub fn init(format: LogFormat) -> SyncerLogs {
    init_with_default(format, "info")
}

/// [`init`] with `default` as the filter when `RUST_LOG` is not set.
pub fn init_with_default(format: LogFormat, default: &str) -> SyncerLogs {
    let logs = SyncerLogs::default();
    process::init_logging(format, default, logs.layer());
    logs
}
