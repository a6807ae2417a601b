//! Kubernetes Events on workloads (placement decisions and refusals),
//! published in the background by one worker: a reconcile never waits on an
//! Event, and a burst of decisions does not become a burst of Event writes
//! competing with the decisions themselves (the worker waits while decisions
//! are being written, see [`super::activity`]). Events are best effort: when
//! the queue is full, new ones are dropped (and logged at debug level).
//!
//! An Event says what happened: each new note (a new decision) of an object
//! and reason is a new Event, and only the same note again counts into the
//! series of the newest one. (kube-runtime's `Recorder` keys its series on
//! the reason alone, so `kubectl describe` kept showing the first decision,
//! counted "x10", after the workload had moved.)

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::workspaces::Workspaces;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{EventType, Reporter};
use prometheus_client::metrics::gauge::Gauge;
use serde_json::json;
use tokio::sync::mpsc;

use super::activity::DecisionActivity;

/// Events waiting to be published, at most.
const QUEUE: usize = 4096;
/// Longest note (the API refuses longer ones).
const NOTE_MAX: usize = 1000;
/// How long the same note keeps counting into its Event's series (as
/// kube-runtime's recorder: after that, a new Event).
const SERIES_TTL: Duration = Duration::from_secs(6 * 60);

/// One Event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub type_: EventType,
    pub reason: String,
    pub action: String,
    pub text: String,
}

/// What a series is counted by: the object, the type, reason and action.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeriesKey {
    /// The object's apiVersion, kind, namespace, name and uid.
    regarding: [Option<String>; 5],
    type_: EventType,
    reason: String,
    action: String,
}

impl SeriesKey {
    fn of(reference: &ObjectReference, note: &Note) -> Self {
        Self {
            regarding: [
                reference.api_version.clone(),
                reference.kind.clone(),
                reference.namespace.clone(),
                reference.name.clone(),
                reference.uid.clone(),
            ],
            type_: note.type_,
            reason: note.reason.clone(),
            action: note.action.clone(),
        }
    }
}

/// The newest Event of a series key.
#[derive(Debug, Clone)]
struct Newest {
    /// Its name in the object's namespace.
    name: String,
    text: String,
    /// Occurrences so far (1: no series yet).
    count: i32,
    /// When it last occurred (this process's clock).
    seen: Instant,
}

/// What to write for one note.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// A new Event (a new note, or the last one is too old).
    Create,
    /// The same note again: count it into the Event `name`'s series.
    Count { name: String, count: i32 },
}

/// Publishes Events through the `events.k8s.io/v1` API, one new Event per
/// new note of an object and reason (see the module docs).
pub struct Publisher {
    client: Client,
    workspaces: Workspaces,
    reporter: Reporter,
    newest: HashMap<SeriesKey, Newest>,
    swept: Instant,
}

impl Publisher {
    /// A publisher writing as `reporter`, with `client` to the objects of
    /// `workspaces` (see [`Workspaces::route`]).
    pub fn new(client: Client, workspaces: Workspaces, reporter: Reporter) -> Self {
        Self {
            client,
            workspaces,
            reporter,
            newest: HashMap::new(),
            swept: Instant::now(),
        }
    }

    /// Writes `note` on `reference`: a new Event, or the newest one's series
    /// counted up when its note is the same.
    pub async fn publish(
        &mut self,
        note: &Note,
        reference: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Instant::now();
        self.sweep(now);
        let key = SeriesKey::of(reference, note);
        // The Event goes to the object's own workspace, about the object as
        // that workspace serves it.
        let (client, namespace) = match self
            .workspaces
            .route(&self.client, reference.namespace.as_deref())
        {
            Ok(routed) => routed,
            Err(err) => {
                tracing::warn!(object = ?reference.name, error = %err, reason = %note.reason, "not publishing an Event");
                return Ok(());
            }
        };
        let mut served = reference.clone();
        served.namespace.clone_from(&namespace);
        let reference = &served;
        let namespace = namespace.as_deref().unwrap_or("default");
        let api: Api<K8sEvent> = Api::namespaced(client, namespace);
        if let Step::Count { name, count } = step(self.newest.get(&key), &note.text, now) {
            let patch = json!({"series": {
                "count": count,
                "lastObservedTime": MicroTime(Timestamp::now()),
            }});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.newest.insert(
                        key,
                        Newest {
                            name,
                            text: note.text.clone(),
                            count,
                            seen: now,
                        },
                    );
                    return Ok(());
                }
                // Expired on the server (Events live an hour): a new one.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(err) => return Err(err),
            }
        }
        let event = self.event(note, reference);
        let name = event.metadata.name.clone().unwrap_or_default();
        api.create(&PostParams::default(), &event).await?;
        self.newest.insert(
            key,
            Newest {
                name,
                text: note.text.clone(),
                count: 1,
                seen: now,
            },
        );
        Ok(())
    }

    /// Forgets series older than [`SERIES_TTL`], at most once a minute.
    fn sweep(&mut self, now: Instant) {
        if now.duration_since(self.swept) < Duration::from_secs(60) {
            return;
        }
        self.swept = now;
        self.newest
            .retain(|_, newest| now.duration_since(newest.seen) < SERIES_TTL);
    }

    fn event(&self, note: &Note, reference: &ObjectReference) -> K8sEvent {
        let now = Timestamp::now();
        let instance = self
            .reporter
            .instance
            .clone()
            .unwrap_or_else(|| self.reporter.controller.clone());
        K8sEvent {
            action: Some(note.action.clone()),
            reason: Some(note.reason.clone()),
            note: Some(note.text.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(reference.clone()),
            metadata: ObjectMeta {
                namespace: reference.namespace.clone(),
                name: Some(format!(
                    "{}.{:x}",
                    reference
                        .name
                        .as_deref()
                        .unwrap_or(&self.reporter.controller),
                    now.as_nanosecond()
                )),
                ..ObjectMeta::default()
            },
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(instance),
            type_: Some(
                match note.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            ..K8sEvent::default()
        }
    }
}

/// What to write for `text` when `newest` is the newest Event of its key.
fn step(newest: Option<&Newest>, text: &str, now: Instant) -> Step {
    match newest {
        Some(newest) if newest.text == text && now.duration_since(newest.seen) < SERIES_TTL => {
            Step::Count {
                name: newest.name.clone(),
                count: newest.count.saturating_add(1),
            }
        }
        _ => Step::Create,
    }
}

/// The publishing side of the Event queue.
#[derive(Clone)]
pub struct EventQueue {
    tx: mpsc::Sender<(Note, ObjectReference)>,
    /// Events queued or being written (`tmcd_events_pending`).
    pending: Gauge,
}

/// Sets the pending gauge to 0 when the worker ends or is dropped (leadership lost), with its queue.
struct NonePending(Gauge);

impl Drop for NonePending {
    fn drop(&mut self) {
        self.0.set(0);
    }
}

impl EventQueue {
    /// A queue publishing through `publisher`, counting what is queued or
    /// being written in `pending`; the returned future is the worker and
    /// ends when every `EventQueue` clone is dropped.
    pub fn new(
        mut publisher: Publisher,
        decisions: Arc<DecisionActivity>,
        pending: Gauge,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (tx, mut rx) = mpsc::channel::<(Note, ObjectReference)>(QUEUE);
        let reset = NonePending(pending.clone());
        let worker = async move {
            // Moved in whole: dropping the worker drops it.
            let reset = reset;
            while let Some((note, reference)) = rx.recv().await {
                decisions.quiet().await;
                if let Err(err) = publisher.publish(&note, &reference).await {
                    tracing::warn!(error = %err, reason = %note.reason, "publishing an Event failed (it is not retried)");
                }
                reset.0.dec();
            }
        };
        (Self { tx, pending }, worker)
    }

    /// Queues an Event `reason` with `text` (cut to the API's limit) on `reference`.
    pub fn publish(
        &self,
        reference: ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        mut text: String,
    ) {
        if text.len() > NOTE_MAX {
            let mut cut = NOTE_MAX;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        let note = Note {
            type_,
            reason: reason.into(),
            action: action.into(),
            text,
        };
        self.pending.inc();
        if let Err(err) = self.tx.try_send((note, reference)) {
            self.pending.dec();
            let full = matches!(err, mpsc::error::TrySendError::Full(_));
            tracing::debug!(reason, full, "event dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_instead_of_blocking() {
        let (tx, mut rx) = mpsc::channel::<(Note, ObjectReference)>(2);
        let queue = EventQueue {
            tx,
            pending: Gauge::default(),
        };
        for i in 0..5 {
            queue.publish(
                ObjectReference::default(),
                EventType::Normal,
                "Placed",
                "Place",
                format!("n{i}"),
            );
        }
        let mut got = Vec::new();
        while let Ok((note, _)) = rx.try_recv() {
            got.push(note.text);
        }
        assert_eq!(got, ["n0", "n1"], "the first two queued, the rest dropped");
        assert_eq!(queue.pending.get(), 2, "only the queued ones are pending");
    }

    #[test]
    fn long_notes_are_cut_on_a_char_boundary() {
        let (tx, mut rx) = mpsc::channel::<(Note, ObjectReference)>(1);
        let queue = EventQueue {
            tx,
            pending: Gauge::default(),
        };
        queue.publish(
            ObjectReference::default(),
            EventType::Warning,
            "PolicyFailed",
            "Place",
            "é".repeat(800),
        );
        let (note, _) = rx.try_recv().expect("queued");
        assert!(note.text.len() <= NOTE_MAX && note.text.chars().all(|c| c == 'é'));
    }

    fn newest(text: &str, count: i32, seen: Instant) -> Newest {
        Newest {
            name: "web.1".into(),
            text: text.into(),
            count,
            seen,
        }
    }

    #[test]
    fn only_the_same_note_counts_into_a_series() {
        let now = Instant::now();
        assert_eq!(step(None, "on east (2), west (1)", now), Step::Create);
        let last = newest("on east (2), west (1)", 1, now);
        assert_eq!(
            step(Some(&last), "on east (2), west (1)", now),
            Step::Count {
                name: "web.1".into(),
                count: 2
            }
        );
        assert_eq!(
            step(Some(&last), "on east (3)", now),
            Step::Create,
            "a new decision is a new Event"
        );
    }

    #[test]
    fn a_stale_series_starts_a_new_event() {
        let then = Instant::now();
        let last = newest("on east (3)", 4, then);
        assert_eq!(
            step(Some(&last), "on east (3)", then + SERIES_TTL),
            Step::Create
        );
    }

    #[test]
    fn series_keys_tell_objects_and_reasons_apart() {
        let web = ObjectReference {
            name: Some("web".into()),
            namespace: Some("demo".into()),
            uid: Some("u1".into()),
            ..ObjectReference::default()
        };
        let note = |reason: &str| Note {
            type_: EventType::Normal,
            reason: reason.into(),
            action: "Place".into(),
            text: "x".into(),
        };
        let api = ObjectReference {
            name: Some("api".into()),
            ..web.clone()
        };
        assert_eq!(
            SeriesKey::of(&web, &note("Placed")),
            SeriesKey::of(
                &web,
                &Note {
                    text: "y".into(),
                    ..note("Placed")
                }
            ),
            "the note is not part of the key: a new note replaces the newest Event"
        );
        assert_ne!(
            SeriesKey::of(&web, &note("Placed")),
            SeriesKey::of(&api, &note("Placed"))
        );
        assert_ne!(
            SeriesKey::of(&web, &note("Placed")),
            SeriesKey::of(&web, &note("PolicyFailed"))
        );
    }
}
