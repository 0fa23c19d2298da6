//! State shared by the send handle, the connection drivers and the TTL sweeper.
//!
//! One mutex guards the store and the table of connected peers. Every critical section is
//! short and works on batches (a driver takes a whole window of messages per lock), so the
//! lock is taken per batch on the hot path, not per message.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use snakemq_link::ConnId;
use snakemq_storage::QueueStore;
use tokio::sync::{Notify, mpsc};

use super::clock::Clock;
use super::config::Settings;
use super::event::Event;
use crate::proto::Uuid;

/// A connected, identified peer.
#[derive(Debug)]
pub(crate) struct PeerLink {
    pub(crate) conn: ConnId,
    /// Wakes the connection's driver: new messages, or it must close.
    pub(crate) wake: Arc<Notify>,
    /// Set when the driver must close the connection (replaced by a newer one).
    pub(crate) evicted: Arc<AtomicBool>,
    pub(crate) acks: bool,
    /// Sequence number of the last message handed to this connection.
    pub(crate) cursor: Option<u64>,
    /// Sent, not yet acknowledged: (id, sequence number, size).
    pub(crate) in_flight: VecDeque<(Uuid, u64, usize)>,
    pub(crate) in_flight_bytes: usize,
}

/// Remembers the last `capacity` message ids of one peer.
#[derive(Debug)]
pub(crate) struct DedupWindow {
    seen: HashSet<Uuid>,
    order: VecDeque<Uuid>,
    capacity: usize,
}

impl DedupWindow {
    pub(crate) fn new(capacity: usize) -> Self {
        DedupWindow {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// Records `uuid`; false if it was already in the window (a duplicate).
    pub(crate) fn insert(&mut self, uuid: Uuid) -> bool {
        if !self.seen.insert(uuid) {
            return false;
        }
        self.order.push_back(uuid);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

pub(crate) struct State {
    pub(crate) store: Box<dyn QueueStore>,
    pub(crate) peers: HashMap<Arc<str>, PeerLink>,
    pub(crate) dedup: HashMap<Arc<str>, DedupWindow>,
}

/// Counters kept whether or not anyone reads events.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) dropped: AtomicU64,
}

pub(crate) struct Shared {
    pub(crate) settings: Settings,
    pub(crate) state: Mutex<State>,
    pub(crate) clock: Clock,
    /// Wakes senders waiting for queue space.
    pub(crate) space: Notify,
    /// Wakes the TTL sweeper (a sooner deadline, or a disconnect).
    pub(crate) sweep: Notify,
    pub(crate) events_tx: mpsc::Sender<Event>,
    /// Cancelled when messaging shuts down: every task and every waiting send stops.
    pub(crate) shutdown: tokio_util::sync::CancellationToken,
    /// Connection drivers and background tasks, awaited on shutdown.
    pub(crate) tasks: tokio_util::task::TaskTracker,
    /// Whether anyone has asked for events; before that, only received messages are kept.
    pub(crate) subscribed: AtomicBool,
    pub(crate) counters: Counters,
    pub(crate) max_packet_size: u32,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reports an event other than a received message. Waits for room in the event queue
    /// when someone is reading events; discards it when nobody has asked for events yet.
    pub(crate) async fn report(&self, event: Event) {
        if self.subscribed.load(Ordering::Acquire) {
            self.emit(event).await;
        }
    }

    /// Queues an event for the application, waiting for room unless messaging is shutting
    /// down. Returns false when the event could not be queued.
    pub(crate) async fn emit(&self, event: Event) -> bool {
        match self.events_tx.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            Err(mpsc::error::TrySendError::Full(event)) => tokio::select! {
                sent = self.events_tx.send(event) => sent.is_ok(),
                _ = self.shutdown.cancelled() => false,
            },
        }
    }

    /// Reports several events in order.
    pub(crate) async fn report_all(&self, events: Vec<Event>) {
        for event in events {
            self.report(event).await;
        }
    }
}
