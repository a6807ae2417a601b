//! Log set-up: text or JSON lines, `RUST_LOG` honoured (default `info`), and
//! the per-syncer ring buffers of the admin API.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;
use crate::telemetry::logs::SyncerLogs;

/// Installs the global subscriber; returns the syncer log buffers it feeds.
pub fn init(format: LogFormat) -> SyncerLogs {
    init_with_default(format, "info")
}

/// [`init`] with `default` as the filter when `RUST_LOG` is not set.
pub fn init_with_default(format: LogFormat, default: &str) -> SyncerLogs {
    let logs = SyncerLogs::default();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(logs.layer());
    let result = match format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    if result.is_err() {
        tracing::debug!("a global tracing subscriber was already installed");
    }
    logs
}
