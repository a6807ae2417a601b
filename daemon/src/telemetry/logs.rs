//! Recent log lines of each syncer, kept in a bounded ring buffer per target
//! and fed from `tracing`: events inside a span named `syncer` with a
//! `cluster` field are recorded under that cluster.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Lines kept per target.
pub const CAPACITY: usize = 500;

/// The ring buffers, shared between the tracing layer and the admin server.
#[derive(Clone, Default)]
pub struct SyncerLogs {
    inner: Arc<Mutex<BTreeMap<String, VecDeque<String>>>>,
}

impl SyncerLogs {
    /// Appends a line for `cluster`, dropping the oldest past [`CAPACITY`].
    pub fn push(&self, cluster: &str, line: String) {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let buf = map.entry(cluster.to_string()).or_default();
        if buf.len() == CAPACITY {
            buf.pop_front();
        }
        buf.push_back(line);
    }

    /// The recent lines of `cluster`, oldest first.
    pub fn lines(&self, cluster: &str) -> Vec<String> {
        let map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(cluster)
            .map(|b| b.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A tracing layer feeding these buffers.
    pub fn layer(&self) -> SyncerLogLayer {
        SyncerLogLayer { logs: self.clone() }
    }
}

/// The tracing layer of [`SyncerLogs`].
pub struct SyncerLogLayer {
    logs: SyncerLogs,
}

/// Stored in the extensions of a `syncer` span: its cluster.
struct SyncerCluster(String);

#[derive(Default)]
struct Fields {
    cluster: Option<String>,
    text: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "cluster" {
            self.cluster = Some(value.to_string());
        } else if field.name() == "message" {
            let _ = write!(self.text, "{value}");
        } else {
            let _ = write!(self.text, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "cluster" {
            self.cluster = Some(format!("{value:?}").trim_matches('"').to_string());
        } else if field.name() == "message" {
            let _ = write!(self.text, "{value:?}");
        } else {
            let _ = write!(self.text, " {}={value:?}", field.name());
        }
    }
}

impl<S> tracing_subscriber::Layer<S> for SyncerLogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "syncer" {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let (Some(cluster), Some(span)) = (fields.cluster, ctx.span(id)) {
            span.extensions_mut().insert(SyncerCluster(cluster));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        let cluster = scope.from_root().find_map(|span| {
            span.extensions()
                .get::<SyncerCluster>()
                .map(|c| c.0.clone())
        });
        let Some(cluster) = cluster else { return };
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let line = format!(
            "{} {:>5} {}: {}",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            meta.level(),
            meta.target(),
            fields.text
        );
        self.logs.push(&cluster, line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn events_in_a_syncer_span_land_in_its_buffer() {
        let logs = SyncerLogs::default();
        let subscriber = tracing_subscriber::registry().with(logs.layer());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("syncer", cluster = "west");
            let _g = span.enter();
            tracing::info!(object = "demo/web", "applied");
            tracing::info_span!("inner").in_scope(|| tracing::warn!("retrying"));
        });
        let lines = logs.lines("west");
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].contains("applied object=\"demo/web\"")
                || lines[0].contains("applied object=demo/web"),
            "{lines:?}"
        );
        assert!(lines[1].contains("WARN") && lines[1].contains("retrying"));
        assert!(logs.lines("east").is_empty());
    }

    #[test]
    fn the_buffer_is_bounded() {
        let logs = SyncerLogs::default();
        for i in 0..CAPACITY + 10 {
            logs.push("west", format!("line {i}"));
        }
        let lines = logs.lines("west");
        assert_eq!(lines.len(), CAPACITY);
        assert_eq!(lines[0], "line 10");
    }
}
