//! Kubernetes Events on workloads (placement decisions and refusals),
//! published in the background by one worker: a reconcile never waits on an
//! Event, and a burst of decisions does not become a burst of Event writes
//! competing with the decisions themselves (the worker waits while decisions
//! are being written, see [`super::activity`]). Events are best effort: when
//! the queue is full, new ones are dropped (and logged at debug level).

use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use tokio::sync::mpsc;

use super::activity::DecisionActivity;

/// Events waiting to be published, at most.
const QUEUE: usize = 4096;
/// Longest note (the API refuses longer ones).
const NOTE_MAX: usize = 1000;

/// The publishing side of the Event queue.
#[derive(Clone)]
pub struct EventQueue {
    tx: mpsc::Sender<(Event, ObjectReference)>,
}

impl EventQueue {
    /// A queue publishing through `recorder`; the returned future is the
    /// worker and ends when every `EventQueue` clone is dropped.
    pub fn new(
        recorder: Recorder,
        decisions: Arc<DecisionActivity>,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (tx, mut rx) = mpsc::channel::<(Event, ObjectReference)>(QUEUE);
        let worker = async move {
            while let Some((event, reference)) = rx.recv().await {
                decisions.quiet().await;
                if let Err(err) = recorder.publish(&event, &reference).await {
                    tracing::debug!(error = %err, reason = %event.reason, "publishing an event failed");
                }
            }
        };
        (Self { tx }, worker)
    }

    /// Queues an Event `reason` with `note` (cut to the API's limit) on `reference`.
    pub fn publish(
        &self,
        reference: ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        mut note: String,
    ) {
        if note.len() > NOTE_MAX {
            let mut cut = NOTE_MAX;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
        }
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(err) = self.tx.try_send((event, reference)) {
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
        let (tx, mut rx) = mpsc::channel::<(Event, ObjectReference)>(2);
        let queue = EventQueue { tx };
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
        while let Ok((event, _)) = rx.try_recv() {
            got.extend(event.note);
        }
        assert_eq!(got, ["n0", "n1"], "the first two queued, the rest dropped");
    }

    #[test]
    fn long_notes_are_cut_on_a_char_boundary() {
        let (tx, mut rx) = mpsc::channel::<(Event, ObjectReference)>(1);
        let queue = EventQueue { tx };
        queue.publish(
            ObjectReference::default(),
            EventType::Warning,
            "PolicyFailed",
            "Place",
            "é".repeat(800),
        );
        let (event, _) = rx.try_recv().expect("queued");
        let note = event.note.expect("note");
        assert!(note.len() <= NOTE_MAX && note.chars().all(|c| c == 'é'));
    }
}
