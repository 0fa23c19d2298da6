//! State shared by the send handle, the connection drivers and the TTL sweeper.
//!
//! One mutex guards the store and the table of connected peers. Every critical section is
//! short and works on batches (a driver takes a whole window of messages per lock), so the
//! lock is taken per batch on the hot path, not per message.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use snakemq_link::ConnId;
use snakemq_storage::QueueStore;
use tokio::sync::{Notify, mpsc};

use super::clock::Clock;
use super::config::Settings;
use super::confirmations::Confirmations;
use super::event::{DropReason, Event};
use crate::proto::Uuid;

/// A connected, identified peer.
#[derive(Debug)]
pub(crate) struct PeerLink {
    pub(crate) conn: ConnId,
    /// Wakes the connection's driver: new messages, or it must close.
    pub(crate) wake: Arc<super::wake::DriverWake>,
    /// Set when the driver must close the connection (replaced by a newer one).
    pub(crate) evicted: Arc<AtomicBool>,
    pub(crate) acks: bool,
    /// Sequence number of the last message handed to this connection.
    pub(crate) cursor: Option<u64>,
    /// `State::inserted` when a read of the queue past `cursor` found its end: until the
    /// next insertion there is nothing to read (a store read per driver turn was about
    /// 400 instructions, three turns per RPC call with one outstanding).
    pub(crate) drained_at: Option<u64>,
    /// Sent, not yet acknowledged.
    pub(crate) in_flight: VecDeque<InFlight>,
    pub(crate) in_flight_bytes: usize,
    /// Messages handed to the driver to write ahead of the queue, outside it (see
    /// `Messaging::send_unqueued`); lost with the connection.
    pub(crate) unqueued: Vec<super::tap::Unqueued>,
}

impl PeerLink {
    /// [`State::drained`] from the state's fields (`inserted`, and whether a durable
    /// backlog is still loading), for a caller that holds this link mutably.
    pub(crate) fn drained(&self, inserted: u64, paging: bool) -> bool {
        self.drained_at == Some(inserted) && !paging
    }
}

/// Events queued for the application together.
#[derive(Debug)]
pub(crate) struct EventBatch {
    pub(crate) events: Vec<Event>,
    /// For received messages: what to acknowledge once the application is done with them.
    pub(crate) receipt: Option<Receipt>,
}

/// The ids of received messages in a batch, and the way back to their connection.
///
/// A message is acknowledged only once the application has taken it *and asked for the
/// next event* (or confirmed explicitly): a receiver killed while messages wait in its event
/// queue, or while it handles one, gets them again instead of losing them.
#[derive(Debug)]
pub(crate) struct Receipt {
    /// The batch's received messages, acknowledged as the application finishes them.
    pub(crate) ids: Vec<Uuid>,
    /// Duplicates, acknowledged once the application reaches the batch.
    pub(crate) on_reach: Vec<Uuid>,
    pub(crate) to: Arc<Confirmations>,
}

impl Receipt {
    /// The application has finished every earlier batch.
    pub(crate) fn reached(&mut self) {
        self.to.push(&self.on_reach);
        self.on_reach.clear();
    }

    /// Acknowledges the first `count` ids (those the application has finished with).
    pub(crate) fn confirm(&mut self, count: usize) {
        let count = count.min(self.ids.len());
        // The connection may be gone: then the sender re-sends and we suppress the
        // duplicate.
        self.to.push(self.ids.get(..count).unwrap_or_default());
        self.ids.drain(..count);
    }
}

/// A message sent and not yet acknowledged.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InFlight {
    pub(crate) uuid: Uuid,
    pub(crate) seq: u64,
    pub(crate) size: usize,
    /// Whether it is also in the durable store.
    pub(crate) persistent: bool,
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

/// Remembers recent message ids of one peer: at least the last `capacity / 2`, at most
/// the last `capacity`.
///
/// Two generations instead of a set plus an eviction queue: inserting never removes a
/// single old entry (a cache miss per message on a large window); when the current
/// generation is full, the previous one is cleared and reused wholesale.
#[derive(Debug)]
pub(crate) struct DedupWindow {
    current: UuidSet,
    previous: UuidSet,
    generation: usize,
}

impl DedupWindow {
    pub(crate) fn new(capacity: usize) -> Self {
        let generation = (capacity / 2).max(1);
        DedupWindow {
            current: UuidSet::with_capacity_and_hasher(generation, Default::default()),
            previous: UuidSet::default(),
            generation,
        }
    }

    /// Records `uuid`; false if it was already in the window (a duplicate).
    pub(crate) fn insert(&mut self, uuid: Uuid) -> bool {
        // (The previous generation is empty until the window first fills: no lookup.)
        if (!self.previous.is_empty() && self.previous.contains(&uuid))
            || !self.current.insert(uuid)
        {
            return false;
        }
        if self.current.len() >= self.generation {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::DedupWindow;

    fn id(n: u32) -> [u8; 16] {
        let mut id = [0u8; 16];
        for (dst, src) in id.iter_mut().zip(n.to_le_bytes()) {
            *dst = src;
        }
        id
    }

    #[test]
    fn window_remembers_at_least_half_its_capacity() {
        let mut window = DedupWindow::new(100);
        for n in 0..1000 {
            assert!(window.insert(id(n)), "{n} is new");
            assert!(!window.insert(id(n)), "{n} is a duplicate right away");
            for back in 1..50.min(n + 1) {
                assert!(
                    !window.insert(id(n - back)),
                    "{} within the last 50",
                    n - back
                );
            }
        }
        // Far older ids are forgotten: memory stays bounded.
        assert!(window.insert(id(0)));
    }
}

pub(crate) struct State {
    pub(crate) store: Box<dyn QueueStore>,
    // foldhash: these maps are looked up on every send; SipHash showed in profiles.
    pub(crate) peers: foldhash::HashMap<Arc<str>, PeerLink>,
    pub(crate) dedup: foldhash::HashMap<Arc<str>, DedupWindow>,
    /// Peers whose durable queue is not fully loaded (see `backlog`).
    pub(crate) backlogs: foldhash::HashMap<Arc<str>, super::backlog::Backlog>,
    /// The next sequence number: one order for memory and the durable store.
    pub(crate) next_seq: u64,
    /// Insertions into `store` so far: a driver that read its peer's queue to the end
    /// reads it again only after one (see `PeerLink::drained_at`). Counted by
    /// [`State::insert`], the one way in.
    pub(crate) inserted: u64,
}

impl State {
    /// Queues `record` for `peer` in memory, counted in `inserted`.
    pub(crate) fn insert(
        &mut self,
        peer: &str,
        record: snakemq_storage::Record,
    ) -> Result<(), snakemq_storage::StorageError> {
        self.inserted += 1;
        self.store.insert(peer, record)
    }

    /// Whether `link`'s driver read its peer's queue to the end and nothing was inserted
    /// since (nor can be, from a durable backlog still loading).
    pub(crate) fn drained(&self, link: &PeerLink) -> bool {
        link.drained(self.inserted, !self.backlogs.is_empty())
    }
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
    /// Senders waiting on `space` (see `Shared::space_freed`).
    pub(crate) space_waiters: std::sync::atomic::AtomicUsize,
    /// Wakes the TTL sweeper (a sooner deadline, or a disconnect).
    pub(crate) sweep: Notify,
    /// The deadline (ms since the epoch) the sweeper sleeps until, `u64::MAX` for none:
    /// a send only wakes the sweeper when its message expires sooner.
    pub(crate) sweep_armed: std::sync::atomic::AtomicU64,
    /// Events travel in batches (one per turn of a driver), so the channel costs one
    /// operation per batch, not per message.
    pub(crate) events_tx: mpsc::Sender<EventBatch>,
    /// Cancelled when messaging shuts down: every task and every waiting send stops.
    pub(crate) shutdown: tokio_util::sync::CancellationToken,
    /// Set by [`Shared::stop`] before it cancels `shutdown`: the flag that drivers (every
    /// turn) and sends look at. The token's own `is_cancelled` takes a lock, about 40
    /// instructions, three times per RPC call.
    pub(crate) stopping: AtomicBool,
    /// Connection drivers and background tasks, awaited on shutdown.
    pub(crate) tasks: tokio_util::task::TaskTracker,
    /// Whether anyone has asked for events; before that, only received messages are kept.
    pub(crate) subscribed: AtomicBool,
    pub(crate) counters: Counters,
    pub(crate) max_packet_size: u32,
    /// The storage writer, when a durable store is configured.
    pub(crate) persister: Option<super::persist::Persister>,
    /// Takes received messages before the event stream (see `tap.rs`).
    pub(crate) tap: std::sync::OnceLock<Arc<dyn super::tap::Tap>>,
    /// The connection drivers' wakes, for shutdown.
    pub(crate) drivers: super::wake::DriverWakes,
}

/// Whether a record was (or will be) committed to the durable store.
pub(crate) fn is_persistent(flags: u32, expiry: snakemq_storage::Expiry) -> bool {
    flags & super::FLAG_PERSISTENT != 0 && expiry != snakemq_storage::Expiry::WhileConnected
}

impl Shared {
    /// Removes these messages from the durable store too (those that are in it).
    pub(crate) fn forget<'a>(
        &self,
        peer: &Arc<str>,
        records: impl IntoIterator<Item = &'a snakemq_storage::Record>,
    ) {
        if let Some(persister) = &self.persister {
            persister.remove(
                peer,
                records
                    .into_iter()
                    .filter(|r| is_persistent(r.flags, r.expiry))
                    .map(|r| r.seq),
            );
        }
    }

    /// Wakes the senders waiting for queue room, after room was freed under the lock.
    ///
    /// `notify_waiters` takes the notifier's lock even with nobody waiting, once per
    /// acknowledgement batch; a sender that found the queue full counted itself under the
    /// state lock before it waits, so a count of zero read after freeing room means that
    /// no sender saw the queue full before the room was freed.
    pub(crate) fn space_freed(&self) {
        if self.space_waiters.load(Ordering::Acquire) > 0 {
            self.space.notify_waiters();
        }
    }

    /// Cancels the shutdown token and wakes every connection driver to see it.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.shutdown.cancel();
        self.drivers.wake_all();
    }

    /// Whether messaging is shutting down (see `stopping`).
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts messages given up for `to` as dropped and turns them into their `Dropped`
    /// events, for [`Shared::report_all`].
    pub(crate) fn dropped(
        &self,
        to: &Arc<str>,
        uuids: impl IntoIterator<Item = Uuid>,
        reason: DropReason,
    ) -> Vec<Event> {
        let events: Vec<Event> = uuids
            .into_iter()
            .map(|uuid| Event::Dropped {
                to: to.clone(),
                uuid,
                reason,
            })
            .collect();
        self.counters
            .dropped
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        events
    }

    /// Reports an event other than a received message. Waits for room in the event queue
    /// when someone is reading events; discards it when nobody has asked for events yet.
    pub(crate) async fn report(&self, event: Event) {
        self.report_all(vec![event]).await;
    }

    /// Reports several events, in order, as one batch.
    pub(crate) async fn report_all(&self, events: Vec<Event>) {
        if !events.is_empty() && self.subscribed.load(Ordering::Acquire) {
            self.emit(EventBatch {
                events,
                receipt: None,
            })
            .await;
        }
    }

    /// Reports an event without waiting: dropped when the event queue is full (or nobody
    /// has asked for events), for reports that must never hold up their reporter.
    pub(crate) fn report_now(&self, event: Event) {
        if self.subscribed.load(Ordering::Acquire) {
            let batch = EventBatch {
                events: vec![event],
                receipt: None,
            };
            if let Err(mpsc::error::TrySendError::Full(_)) = self.events_tx.try_send(batch) {
                tracing::debug!("event queue full, a report was dropped");
            }
        }
    }

    /// Queues a batch of events for the application, waiting for room unless messaging is
    /// shutting down. Returns false when the batch could not be queued.
    pub(crate) async fn emit(&self, events: EventBatch) -> bool {
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
