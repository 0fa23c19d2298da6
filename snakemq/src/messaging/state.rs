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

/// Hashes a message id by its first eight bytes.
///
/// Ids are random (UUID v4), so those bytes are already uniformly spread; SipHash over all
/// sixteen was the largest cost on the receive path. A peer choosing colliding ids only
/// slows down its own window.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct UuidHasher(u64);

impl std::hash::Hasher for UuidHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8).take(1) {
            let mut word = [0u8; 8];
            if let Some(dst) = word.get_mut(..chunk.len()) {
                dst.copy_from_slice(chunk);
            }
            self.0 ^= u64::from_le_bytes(word);
        }
    }
}

type UuidSet = HashSet<Uuid, std::hash::BuildHasherDefault<UuidHasher>>;

/// Remembers the last `capacity` message ids of one peer.
#[derive(Debug)]
pub(crate) struct DedupWindow {
    seen: UuidSet,
    order: VecDeque<Uuid>,
    capacity: usize,
}

impl DedupWindow {
    pub(crate) fn new(capacity: usize) -> Self {
        DedupWindow {
            seen: UuidSet::default(),
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
    /// Events travel in batches (one per turn of a driver), so the channel costs one
    /// operation per batch, not per message.
    pub(crate) events_tx: mpsc::Sender<Vec<Event>>,
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
        self.report_all(vec![event]).await;
    }

    /// Reports several events, in order, as one batch.
    pub(crate) async fn report_all(&self, events: Vec<Event>) {
        if !events.is_empty() && self.subscribed.load(Ordering::Acquire) {
            self.emit(events).await;
        }
    }

    /// Queues a batch of events for the application, waiting for room unless messaging is
    /// shutting down. Returns false when the batch could not be queued.
    pub(crate) async fn emit(&self, events: Vec<Event>) -> bool {
        match self.events_tx.try_send(events) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            Err(mpsc::error::TrySendError::Full(events)) => tokio::select! {
                sent = self.events_tx.send(events) => sent.is_ok(),
                _ = self.shutdown.cancelled() => false,
            },
        }
    }
}
