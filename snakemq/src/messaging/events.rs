//! The application's side of the event stream: batches taken from the drivers' channel and
//! handed out one event at a time, with the receipts that acknowledge received messages.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::event::Event;
use super::state::{EventBatch, Receipt};

/// The application's view of [`Event`]s.
///
/// Events arrive in batches; each handle keeps the rest of the batch it took, so reading
/// costs one channel operation per batch. Clones share the queue but not the batch.
///
/// **Acknowledgements follow the application.** A received message is acknowledged to its
/// (Rust) sender once the application is done with it: when it asks for the next event
/// after the last message of a batch, or calls [`Events::confirm`]. A receiver that dies
/// with messages still queued here, or in the middle of handling one, gets them again from
/// the sender instead of losing them (at-least-once; duplicates of what it had finished
/// are suppressed).
#[derive(Debug)]
pub struct Events {
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<EventBatch>>>,
    stopped: CancellationToken,
    ready: VecDeque<Event>,
    /// The current batch's receipt and how many of its messages were handed out.
    receipt: Option<(Receipt, usize)>,
}

impl Clone for Events {
    fn clone(&self) -> Self {
        Events {
            rx: self.rx.clone(),
            stopped: self.stopped.clone(),
            ready: VecDeque::new(),
            receipt: None,
        }
    }
}

impl Events {
    pub(super) fn new(
        rx: Arc<tokio::sync::Mutex<mpsc::Receiver<EventBatch>>>,
        stopped: CancellationToken,
    ) -> Self {
        Events {
            rx,
            stopped,
            ready: VecDeque::new(),
            receipt: None,
        }
    }

    /// The next event; `None` once messaging has shut down and every event was taken.
    ///
    /// Asking for the next event tells messaging that the application is done with the
    /// messages it took before (see the type's documentation).
    pub async fn next(&mut self) -> Option<Event> {
        // A batch may carry only acknowledgements of duplicates and no event: keep going.
        while self.ready.is_empty() {
            self.confirm();
            let batch = {
                let mut rx = self.rx.lock().await;
                tokio::select! {
                    biased;
                    batch = rx.recv() => batch,
                    _ = self.stopped.cancelled() => rx.try_recv().ok(),
                }
            };
            self.take(batch?);
        }
        self.pop()
    }

    /// An event that is ready now, without waiting.
    pub fn try_next(&mut self) -> Option<Event> {
        while self.ready.is_empty() {
            self.confirm();
            let batch = self.rx.try_lock().ok()?.try_recv().ok()?;
            self.take(batch);
        }
        self.pop()
    }

    /// Acknowledges every received message handed out so far: the application is done
    /// with them. Call it before stopping to read events (for example before a shutdown
    /// after the last message wanted); messages not handed out yet stay unacknowledged and
    /// will be sent again.
    pub fn confirm(&mut self) {
        if let Some((receipt, handed)) = &mut self.receipt {
            receipt.confirm(*handed);
            *handed = 0;
        }
        if self.ready.is_empty() {
            self.receipt = None;
        }
    }

    fn take(&mut self, batch: EventBatch) {
        self.ready.extend(batch.events);
        self.receipt = batch.receipt.map(|mut receipt| {
            receipt.reached();
            (receipt, 0)
        });
    }

    fn pop(&mut self) -> Option<Event> {
        let event = self.ready.pop_front()?;
        if let (Event::Received { .. }, Some((_, handed))) = (&event, &mut self.receipt) {
            *handed += 1;
        }
        Some(event)
    }
}
