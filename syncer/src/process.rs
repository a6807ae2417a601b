//! What the binaries of tmc (`tmcd` and `tmc-syncer`) share as processes:
//! the log set-up, the shutdown signal, and their shell completions and man
//! pages.
//!
//! Logs go to stderr, as kubectl's and the controllers' do: stdout stays
//! free for a command's own output.

use serde::Deserialize;
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

/// Installs the global tracing subscriber: the filter from `RUST_LOG`, or
/// `default_filter` when it is not set (e.g. `info`); then `extra` (a layer
/// of the binary's own, such as tmcd's per-syncer log buffers; `Identity`
/// for none); then lines in `format` on stderr. A subscriber already
/// installed (several tests in one process) is kept.
pub fn init_logging<L>(format: LogFormat, default_filter: &str, extra: L)
where
    L: Layer<Layered<EnvFilter, Registry>> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let registry = tracing_subscriber::registry().with(filter).with(extra);
    let result = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(colours_wanted())
                    .with_writer(std::io::stderr),
            )
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
}

/// Colour codes only for a person at a terminal: never in a log file or a
/// pipe, and never with `NO_COLOR` set (<https://no-color.org>).
fn colours_wanted() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM. Where SIGTERM cannot be
/// listened to, it says so and resolves on Ctrl-C only.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Writes the shell completion script of `command` (a binary's clap
/// command) for `shell` to stdout, e.g. `tmcd completions bash >
/// /etc/bash_completion.d/tmcd`.
pub fn print_completions(
    mut command: clap::Command,
    shell: clap_complete::Shell,
) -> std::io::Result<()> {
    let name = command.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    write_stdout(&script)
}

/// Writes the man page (roff) of `command` to stdout, e.g. `tmcd man >
/// tmcd.1`.
pub fn print_man(command: clap::Command) -> std::io::Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command).render(&mut page)?;
    write_stdout(&page)
}

/// Writes `bytes` to stdout; a reader that went away (`| head`) is no error.
fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_reads_like_the_flag_and_the_config() {
        use clap::ValueEnum;
        assert_eq!(LogFormat::from_str("json", false), Ok(LogFormat::Json));
        assert_eq!(LogFormat::from_str("text", false), Ok(LogFormat::Text));
        let json: LogFormat = serde_json::from_str(r#""json""#).unwrap();
        assert_eq!(json, LogFormat::Json);
        assert!(serde_json::from_str::<LogFormat>(r#""xml""#).is_err());
        assert_eq!(LogFormat::default(), LogFormat::Text);
    }
}
