//! Fan-out of "re-queue every workload" signals to the per-kind controllers.

use std::sync::{Mutex, PoisonError};

use futures::Stream;
use futures::channel::mpsc;

/// Senders of every controller's re-queue-all stream.
#[derive(Default)]
pub struct Triggers {
    senders: Mutex<Vec<mpsc::UnboundedSender<()>>>,
}

impl Triggers {
    /// A new stream that yields once per [`fire`](Self::fire).
    pub fn subscribe(&self) -> impl Stream<Item = ()> + Send + 'static {
        let (tx, rx) = mpsc::unbounded();
        self.senders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(tx);
        rx
    }

    /// Re-queues every workload of every controller; closed streams are dropped.
    pub fn fire(&self) {
        self.senders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|tx| tx.unbounded_send(()).is_ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn every_subscriber_hears_a_fire() {
        let t = Triggers::default();
        let mut a = Box::pin(t.subscribe());
        let mut b = Box::pin(t.subscribe());
        t.fire();
        assert_eq!(a.next().await, Some(()));
        assert_eq!(b.next().await, Some(()));
        drop(a);
        t.fire();
        assert_eq!(b.next().await, Some(()));
    }
}
