//! The async shell around one connection: moves bytes between the socket and the sans-IO
//! protocol core, feeds received messages to the application and queued messages to the
//! peer.
//!
//! One task per connection. Each turn of the loop handles everything that is ready (a
//! burst of buffered packets, a wake-up for new messages, a timer), then sends what the
//! turn produced in one write: many messages and one batched ACK frame per syscall.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use snakemq_link::{ConnInfo, Connection, PacketReader, PacketWriter};
use snakemq_storage::{Expiry, Record};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::Instrument;

use super::event::{DropReason, Event};
use super::message::ReceivedMessage;
use super::state::{DedupWindow, EventBatch, InFlight, PeerLink, Receipt, Shared, is_persistent};
use crate::Error;
use crate::proto::{self, ConnectionConfig, MessageFrame, TTL_INFINITE, Uuid};

/// Packets handled per turn before the driver looks at timers and the queue again.
const PACKETS_PER_TURN: usize = 512;
/// Messages at least this large are queued to the writer without being copied.
const DIRECT_PAYLOAD: usize = 64 * 1024;
/// How long messages to a peer without acks (a Python peer) are held after it identified.
///
/// Python snakeMQ 1.6 closes a connection whose identity is already connected, but keeps
/// processing the rest of that read; a MESSAGE in the same read then crashes the Python
/// process. Giving it time to read our IDENTIFICATION alone (and to close a duplicate)
/// before the first MESSAGE avoids that.
const LEGACY_FIRST_SEND_DELAY: Duration = Duration::from_millis(150);
/// Longest wait for the writer to flush when a connection ends.
const FLUSH_ON_CLOSE: Duration = Duration::from_secs(5);

/// Runs one connection to its end.
pub(crate) async fn drive(shared: Arc<Shared>, conn: Connection) {
    let (info, reader, writer) = conn.into_parts();
    let span = tracing::info_span!("conn", id = %info.id, remote = %info.remote, peer = tracing::field::Empty);
    let settings = &shared.settings;
    let config = ConnectionConfig::new(settings.identity.clone())
        .acks(settings.acks)
        .keepalive(settings.keepalive)
        .handshake_timeout(settings.handshake_timeout)
        // Acknowledgements wait for the driver to go idle (see `run`), not for a timer.
        .ack_delay(None);
    let (confirmed_tx, confirmed_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut driver = Driver {
        proto: proto::Connection::new(config, now()),
        shared: shared.clone(),
        info,
        writer,
        peer: None,
        acks: false,
        wake: Arc::new(Notify::new()),
        evicted: Arc::new(AtomicBool::new(false)),
        chunks: Vec::new(),
        delivered_on_write: Vec::new(),
        hold_until: None,
        confirmed_tx,
    };
    async move {
        let outcome = driver.run(reader, confirmed_rx).await;
        driver.finish(outcome).await;
    }
    .instrument(span)
    .await;
}

/// Identity binding: a peer that proved a certificate may only claim a name in it. Runs
/// before the peer is registered, so nothing queued for `identity` reaches an impostor.
#[cfg(feature = "tls")]
fn check_identity_binding(info: &ConnInfo, identity: &str) -> Result<(), Error> {
    let Some(leaf) = info.peer_certificates.first() else {
        return Ok(());
    };
    let names = snakemq_link::tls::certificate_names(leaf)?;
    if names.matches(identity) {
        return Ok(());
    }
    Err(Error::IdentityMismatch {
        identity: identity.to_owned(),
        names: names.identity_names().to_vec(),
    })
}

/// Without TLS support the link never verifies a certificate, so there is nothing to bind.
#[cfg(not(feature = "tls"))]
fn check_identity_binding(_info: &ConnInfo, _identity: &str) -> Result<(), Error> {
    Ok(())
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// Why a connection ended without an error worth reporting.
enum Ended {
    PeerClosed,
    Shutdown,
    Evicted,
}

struct Driver {
    shared: Arc<Shared>,
    info: ConnInfo,
    proto: proto::Connection,
    writer: PacketWriter,
    /// The peer's identity once it identified and was registered.
    peer: Option<Arc<str>>,
    acks: bool,
    wake: Arc<Notify>,
    evicted: Arc<AtomicBool>,
    /// Whole packets waiting to be written before the protocol's transmit buffer (large
    /// payloads kept out of the copy).
    chunks: Vec<Bytes>,
    /// Messages to a peer without acks, reported delivered once written.
    delivered_on_write: Vec<Uuid>,
    /// No messages go out before this instant (see [`LEGACY_FIRST_SEND_DELAY`]).
    hold_until: Option<Instant>,
    /// Receipts of the application send the ids it is done with here.
    confirmed_tx: tokio::sync::mpsc::UnboundedSender<Vec<Uuid>>,
}

impl Driver {
    async fn run(
        &mut self,
        mut reader: PacketReader,
        mut confirmed: tokio::sync::mpsc::UnboundedReceiver<Vec<Uuid>>,
    ) -> Result<Ended, Error> {
        let shared = self.shared.clone();
        // What `reader` had read when the protocol last heard of it (keepalive).
        let mut bytes_seen = reader.bytes_received();
        self.flush().await?;
        loop {
            let deadline = match (
                self.proto.poll_timeout().map(Instant::from_std),
                self.hold_until,
            ) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let wake = self.wake.clone();
            // Acknowledgements ride with the next outgoing data. When nothing else is ready,
            // the tasks that are ready get one turn first (the application answering a
            // request queues its reply, and the request's ack leaves in the same write),
            // then they go out alone. Under load they batch by themselves; when idle they
            // leave within one scheduler round, without a timer.
            let acks_waiting = self.proto.pending_acks() > 0;
            let mut acks_now = false;
            tokio::select! {
                biased;
                _ = shared.shutdown.cancelled() => {
                    // What the application finished before the shutdown is acknowledged
                    // (the acks go out with the final flush).
                    while let Ok(ids) = confirmed.try_recv() {
                        self.confirmed(ids).await;
                    }
                    return Ok(Ended::Shutdown);
                }
                packet = reader.next() => {
                    let Some(packet) = packet? else {
                        return Ok(Ended::PeerClosed);
                    };
                    let now = now();
                    self.proto.handle_packet(packet, now);
                    bytes_seen = reader.bytes_received();
                    for _ in 1..PACKETS_PER_TURN {
                        match reader.try_next() {
                            Ok(Some(packet)) => self.proto.handle_packet(packet, now),
                            Ok(None) => break,
                            Err(error) => {
                                // What arrived before the bad prefix still counts.
                                self.process_events().await?;
                                self.flush().await?;
                                return Err(error.into());
                            }
                        }
                    }
                }
                // Before new messages: what the application confirmed before it sent
                // something goes out first, so a peer never sees a reply ahead of the
                // acknowledgements of what the reply answers.
                Some(ids) = confirmed.recv() => {
                    self.confirmed(ids).await;
                    while let Ok(more) = confirmed.try_recv() {
                        self.confirmed(more).await;
                    }
                }
                _ = wake.notified(), if self.peer.is_some() => {
                    // New messages were queued. Let the other tasks that are ready run first:
                    // when a group commit wakes many senders at once, each queues its message
                    // before this driver writes, so they leave in one write instead of one
                    // syscall (and one read and one ack at the peer) per message.
                    tokio::task::yield_now().await;
                }
                _ = sleep_until(deadline), if deadline.is_some() && !acks_waiting => {
                    let now = now();
                    // Part of a packet arrived since the last look: the peer is alive.
                    let received = reader.bytes_received();
                    if received != bytes_seen {
                        bytes_seen = received;
                        self.proto.handle_progress(now);
                    }
                    self.proto.handle_timeout(now);
                    if self.hold_until.is_some_and(|t| t <= Instant::now()) {
                        self.hold_until = None;
                    }
                }
                // (The timer above is not armed meanwhile: this branch is ready after one
                // round, and arming an earlier timer costs a wake-up syscall.)
                () = tokio::task::yield_now(), if acks_waiting => acks_now = true,
            }
            self.process_events().await?;
            if self.evicted.load(Ordering::Acquire) {
                return Ok(Ended::Evicted);
            }
            self.pump().await;
            if acks_now {
                self.flush_all().await?;
            } else {
                self.flush().await?;
            }
        }
    }

    /// Handles what the protocol core reported this turn.
    async fn process_events(&mut self) -> Result<(), Error> {
        let mut received = Vec::new();
        while let Some(event) = self.proto.poll_event() {
            match event {
                proto::Event::Identified { identity, acks } => {
                    self.register(identity, acks).await?
                }
                proto::Event::Message(frame) => received.push(frame),
                proto::Event::Acked(ids) => self.acked(&ids).await,
                proto::Event::Closed(reason) => {
                    // Deliver what arrived before the violation, then close.
                    self.deliver(received).await;
                    return Err(Error::Protocol(reason));
                }
            }
        }
        self.deliver(received).await;
        Ok(())
    }

    async fn register(&mut self, identity: String, acks: bool) -> Result<(), Error> {
        if self.shared.settings.bind_identities {
            check_identity_binding(&self.info, &identity)?;
        }
        let peer: Arc<str> = Arc::from(identity);
        {
            let mut state = self.shared.lock();
            if let Some(existing) = state.peers.get(&peer) {
                if !self.shared.settings.replace_duplicates {
                    return Err(Error::DuplicateIdentity(peer.to_string()));
                }
                existing.evicted.store(true, Ordering::Release);
                existing.wake.notify_one();
            }
            state.peers.insert(
                peer.clone(),
                PeerLink {
                    conn: self.info.id,
                    wake: self.wake.clone(),
                    evicted: self.evicted.clone(),
                    acks,
                    cursor: None,
                    in_flight: Default::default(),
                    in_flight_bytes: 0,
                },
            );
        }
        tracing::Span::current().record("peer", &*peer);
        self.load_dedup_window(&peer, acks).await;
        if acks {
            tracing::debug!("peer identified, at-least-once delivery with acks");
        } else {
            tracing::info!("peer identified without acks (a Python peer): at-most-once delivery");
        }
        self.peer = Some(peer.clone());
        self.acks = acks;
        if !acks {
            self.hold_until = Some(Instant::now() + LEGACY_FIRST_SEND_DELAY);
        }
        self.shared
            .report(Event::Connected {
                peer,
                info: self.info.clone(),
                acks,
            })
            .await;
        Ok(())
    }

    /// Fills the duplicate window of a peer seen for the first time since start from the
    /// durable store.
    async fn load_dedup_window(&self, peer: &Arc<str>, acks: bool) {
        let Some(persister) = self.shared.persister.as_ref().filter(|_| acks) else {
            return;
        };
        if self.shared.lock().dedup.contains_key(peer) {
            return;
        }
        let window = self.shared.settings.dedup_window;
        let ids = persister.load_received(peer.clone(), window).await;
        let mut state = self.shared.lock();
        let dedup = state
            .dedup
            .entry(peer.clone())
            .or_insert_with(|| DedupWindow::new(window));
        for id in ids {
            dedup.insert(id);
        }
    }

    /// Hands received messages to the application, suppressing duplicates, and queues
    /// their acknowledgements.
    async fn deliver(&mut self, frames: Vec<MessageFrame>) {
        let Some(peer) = self.peer.clone() else {
            return;
        };
        if frames.is_empty() {
            return;
        }
        let fresh: Vec<bool> = if self.acks {
            let mut state = self.shared.lock();
            let window = self.shared.settings.dedup_window;
            let dedup = state
                .dedup
                .entry(peer.clone())
                .or_insert_with(|| DedupWindow::new(window));
            frames.iter().map(|f| dedup.insert(f.uuid)).collect()
        } else {
            vec![true; frames.len()]
        };
        let counters = &self.shared.counters;
        let mut events = Vec::with_capacity(frames.len());
        let mut ids = Vec::with_capacity(frames.len());
        for (frame, fresh) in frames.into_iter().zip(fresh) {
            ids.push(frame.uuid);
            if fresh {
                events.push(Event::Received {
                    from: peer.clone(),
                    message: ReceivedMessage::from_wire(frame),
                });
            }
        }
        let duplicates = (ids.len() - events.len()) as u64;
        let fresh = events.len() as u64;
        let fresh_ids: Vec<Uuid> = events
            .iter()
            .filter_map(|e| match e {
                Event::Received { message, .. } => Some(message.uuid),
                _ => None,
            })
            .collect();
        // A duplicate's first copy was handed over earlier, but the application may not be
        // done with it yet (it can still wait in the event queue): the duplicate is
        // acknowledged when the application reaches this batch, which means it finished
        // every earlier one. Fresh messages are acknowledged when it is done with them.
        let mut duplicate_ids = Vec::new();
        if self.acks {
            let mut fresh_set = fresh_ids.iter().peekable();
            for uuid in &ids {
                if fresh_set.peek() == Some(&uuid) {
                    fresh_set.next();
                } else if !fresh_ids.contains(uuid) {
                    // (A copy of a message in this same batch needs no ack of its own:
                    // the first copy's ack, sent when the application is done, covers it.)
                    duplicate_ids.push(*uuid);
                }
            }
        }
        // Counted before the hand-over, so the application never sees a message that the
        // counters do not include yet.
        counters.received.fetch_add(fresh, Ordering::Relaxed);
        counters.duplicates.fetch_add(duplicates, Ordering::Relaxed);
        if events.is_empty() && duplicate_ids.is_empty() {
            return;
        }
        let receipt = self.acks.then(|| Receipt {
            ids: fresh_ids,
            on_reach: duplicate_ids,
            to: self.confirmed_tx.clone(),
        });
        // Waits when the application is behind: backpressure reaches the sender through
        // withheld acks and TCP flow control.
        self.shared.emit(EventBatch { events, receipt }).await;
    }

    /// The application is done with these received messages: remember them in the
    /// durable store (if any) and acknowledge them.
    async fn confirmed(&mut self, ids: Vec<Uuid>) {
        let Some(peer) = self.peer.clone() else {
            return;
        };
        // With a durable store the ids are committed before they are acknowledged, so a
        // restarted receiver still recognises a re-sent message.
        if let Some(persister) = &self.shared.persister {
            let commit = persister.received(peer, ids.clone());
            if let Err(error) = super::persist::committed(commit).await {
                tracing::error!(%error, "received ids not committed; not acknowledging");
                return;
            }
        }
        let now = now();
        for uuid in ids {
            self.proto.ack(uuid, now);
        }
    }

    /// Removes acknowledged messages from the queue.
    async fn acked(&mut self, ids: &[Uuid]) {
        let Some(peer) = self.peer.clone() else {
            return;
        };
        let mut delivered = Vec::with_capacity(ids.len());
        {
            let mut state = self.shared.lock();
            let state = &mut *state;
            let Some(link) = state.peers.get_mut(&peer) else {
                return;
            };
            let mut seqs = Vec::with_capacity(ids.len());
            let mut durable = Vec::new();
            for id in ids {
                // Acks come in send order, so the match is almost always at the front.
                let position = link.in_flight.iter().position(|m| m.uuid == *id);
                if let Some(message) = position.and_then(|i| link.in_flight.remove(i)) {
                    link.in_flight_bytes -= message.size;
                    seqs.push(message.seq);
                    delivered.push(message.uuid);
                    if message.persistent {
                        durable.push(message.seq);
                    }
                }
            }
            if let Err(error) = state.store.remove(&peer, &seqs) {
                tracing::error!(%error, "store failed to remove acknowledged messages");
            }
            if let Some(persister) = &self.shared.persister {
                persister.remove(&peer, durable);
            }
        }
        self.delivered(&peer, delivered).await;
    }

    /// Counts and reports delivered messages; their queue room is free again.
    async fn delivered(&self, peer: &Arc<str>, delivered: Vec<Uuid>) {
        self.shared
            .counters
            .delivered
            .fetch_add(delivered.len() as u64, Ordering::Relaxed);
        self.shared.space.notify_waiters();
        let events = delivered
            .into_iter()
            .map(|uuid| Event::Delivered {
                to: peer.clone(),
                uuid,
            })
            .collect();
        self.shared.report_all(events).await;
    }

    /// Moves queued messages into the transmit buffer, as many as the in-flight window
    /// allows. Messages whose deadline passed are dropped (and reported) instead.
    async fn pump(&mut self) {
        let Some(peer) = self.peer.clone() else {
            return;
        };
        if self.proto.is_closed() || !self.proto.is_identified() || self.hold_until.is_some() {
            return;
        }
        let settings = &self.shared.settings;
        let now_ms = self.shared.clock.now_ms();
        let mut batch = Vec::new();
        let expired: Vec<Record>;
        {
            let mut state = self.shared.lock();
            let state = &mut *state;
            let Some(link) = state.peers.get_mut(&peer) else {
                return;
            };
            let room = settings
                .max_in_flight_messages
                .saturating_sub(link.in_flight.len());
            if room == 0 || link.in_flight_bytes >= settings.max_in_flight_bytes {
                return;
            }
            if let Err(error) = state.store.read(&peer, link.cursor, room, &mut batch) {
                tracing::error!(%error, "store read failed");
                return;
            }
            let mut taken = 0;
            let mut bytes = link.in_flight_bytes;
            for record in &batch {
                if bytes >= settings.max_in_flight_bytes {
                    break;
                }
                taken += 1;
                link.cursor = Some(record.seq);
                if record.expiry.deadline_ms().is_some_and(|d| d <= now_ms) {
                    continue;
                }
                if link.acks {
                    link.in_flight.push_back(InFlight {
                        uuid: record.uuid,
                        seq: record.seq,
                        size: record.data.len(),
                        persistent: is_persistent(record.flags, record.expiry),
                    });
                    link.in_flight_bytes += record.data.len();
                }
                bytes += record.data.len();
            }
            batch.truncate(taken);
            let acks = link.acks;
            let unsent = (state.store.stats(&peer).map(|s| s.messages).unwrap_or(0) as usize)
                .saturating_sub(link.in_flight.len() + taken);
            // Expired ones leave the queue; without acks (Python peers) a message counts as
            // delivered once written, so every taken message leaves the queue now.
            let (gone, kept): (Vec<Record>, Vec<Record>) = batch
                .into_iter()
                .partition(|r| r.expiry.deadline_ms().is_some_and(|d| d <= now_ms));
            expired = gone;
            batch = kept;
            let leaving = expired.iter().chain(batch.iter().filter(|_| !acks));
            let seqs: Vec<u64> = leaving.clone().map(|r| r.seq).collect();
            if !seqs.is_empty() {
                if let Err(error) = state.store.remove(&peer, &seqs) {
                    tracing::error!(%error, "store remove failed");
                }
                self.shared.forget(&peer, leaving);
            }
            // A long durable queue is paged in: ask for more before this page runs out.
            if unsent < super::backlog::PAGE / 2 && state.backlogs.contains_key(&peer) {
                super::backlog::request_page(&self.shared, state, &peer);
            }
        }
        if !expired.is_empty() {
            self.shared.space.notify_waiters();
        }
        // One allocation for the whole batch instead of doublings while encoding.
        let small: usize = batch
            .iter()
            .filter(|r| r.data.len() < DIRECT_PAYLOAD)
            .map(|r| 5 + proto::MESSAGE_HEADER_LEN + r.data.len())
            .sum();
        if !batch.is_empty() {
            // (Touching the transmit buffer brings pending acks along: only when there
            // is something for them to ride with.)
            self.proto.transmit_buffer().reserve(small);
        }
        for record in &batch {
            self.encode(record, now_ms);
        }
        if !self.acks {
            self.delivered_on_write.extend(batch.iter().map(|r| r.uuid));
        }
        if !expired.is_empty() {
            let count = expired.len() as u64;
            self.shared
                .counters
                .dropped
                .fetch_add(count, Ordering::Relaxed);
            let dropped = expired
                .into_iter()
                .map(|record| Event::Dropped {
                    to: peer.clone(),
                    uuid: record.uuid,
                    reason: DropReason::Expired,
                })
                .collect();
            self.shared.report_all(dropped).await;
        }
    }

    fn encode(&mut self, record: &Record, now_ms: u64) {
        let ttl = wire_ttl(record.expiry, now_ms);
        self.shared.counters.sent.fetch_add(1, Ordering::Relaxed);
        let data = &record.data;
        if data.len() >= DIRECT_PAYLOAD {
            // Keep the payload out of the copy: what is buffered so far (pending acks
            // included), then the header alone, then the payload go to the writer as
            // separate chunks, in order.
            if let Some(before) = self.proto.take_transmit() {
                self.chunks.push(before);
            }
            let buf = self.proto.transmit_buffer();
            proto::encode_message_header(&record.uuid, ttl, record.flags, data.len(), buf);
            self.chunks.push(buf.split().freeze());
            self.chunks.push(data.clone());
        } else {
            let buf = self.proto.transmit_buffer();
            proto::encode_message_header(&record.uuid, ttl, record.flags, data.len(), buf);
            buf.extend_from_slice(data);
        }
    }

    /// Writes everything this turn produced; acknowledgements alone may wait for company
    /// up to the ack delay (the protocol core's timer brings them out).
    async fn flush(&mut self) -> Result<(), Error> {
        self.write_out(false).await
    }

    /// Writes everything, the youngest acknowledgements included.
    async fn flush_all(&mut self) -> Result<(), Error> {
        self.write_out(true).await
    }

    async fn write_out(&mut self, everything: bool) -> Result<(), Error> {
        for chunk in self.chunks.drain(..) {
            self.writer.send_raw(chunk).await?;
        }
        let bytes = if everything {
            self.proto.take_transmit()
        } else {
            self.proto.poll_transmit(now())
        };
        if let Some(bytes) = bytes {
            self.writer.send_raw(bytes).await?;
        }
        if !self.delivered_on_write.is_empty() {
            let Some(peer) = self.peer.clone() else {
                return Ok(());
            };
            let delivered = std::mem::take(&mut self.delivered_on_write);
            self.delivered(&peer, delivered).await;
        }
        Ok(())
    }

    /// Unregisters the peer, reports how the connection ended, flushes and closes.
    async fn finish(mut self, outcome: Result<Ended, Error>) {
        match &outcome {
            Ok(Ended::PeerClosed) => tracing::debug!("peer closed the connection"),
            Ok(Ended::Shutdown) => tracing::debug!("closing for shutdown"),
            Ok(Ended::Evicted) => tracing::info!("replaced by a newer connection of the same peer"),
            Err(error) => tracing::info!(%error, "closing connection"),
        }
        // Whatever the protocol still wants to say (INCOMPATIBLE_PROTOCOL, acks) goes out.
        let _ = self.flush_all().await;
        let mut events = Vec::new();
        if let Some(peer) = self.peer.take() {
            self.unregister(&peer, &mut events);
            events.push(Event::Disconnected {
                peer: peer.clone(),
                info: self.info.clone(),
            });
            if let Err(error) = outcome {
                events.insert(
                    0,
                    Event::Error {
                        conn: Some(self.info.clone()),
                        peer: Some(peer),
                        error: Arc::new(error),
                    },
                );
            }
        } else if let Err(error) = outcome {
            events.push(Event::Error {
                conn: Some(self.info.clone()),
                peer: None,
                error: Arc::new(error),
            });
        }
        self.shared.sweep.notify_one();
        self.shared.report_all(events).await;
        let _ = tokio::time::timeout(FLUSH_ON_CLOSE, self.writer.finish()).await;
    }

    /// Removes our registration (unless a newer connection replaced it) and drops the
    /// `ttl = 0` messages that were only valid while this connection lasted.
    fn unregister(&mut self, peer: &Arc<str>, events: &mut Vec<Event>) {
        let mut state = self.shared.lock();
        let state = &mut *state;
        let ours = state
            .peers
            .get(peer)
            .is_some_and(|l| l.conn == self.info.id);
        if !ours {
            return;
        }
        state.peers.remove(peer);
        let mut page = Vec::new();
        let mut after = None;
        let mut doomed = Vec::new();
        loop {
            page.clear();
            if state.store.read(peer, after, 4096, &mut page).is_err() {
                break;
            }
            let Some(last) = page.last() else {
                break;
            };
            after = Some(last.seq);
            doomed.extend(
                page.iter()
                    .filter(|r| r.expiry == Expiry::WhileConnected)
                    .map(|r| (r.seq, r.uuid)),
            );
        }
        if doomed.is_empty() {
            return;
        }
        let seqs: Vec<u64> = doomed.iter().map(|(seq, _)| *seq).collect();
        if let Err(error) = state.store.remove(peer, &seqs) {
            tracing::error!(%error, "store remove failed");
        }
        self.shared
            .counters
            .dropped
            .fetch_add(doomed.len() as u64, Ordering::Relaxed);
        self.shared.space.notify_waiters();
        events.extend(doomed.into_iter().map(|(_, uuid)| Event::Dropped {
            to: peer.clone(),
            uuid,
            reason: DropReason::NotConnected,
        }));
    }
}

/// The TTL field of a queued message: remaining whole seconds, truncated.
pub(crate) fn wire_ttl(expiry: Expiry, now_ms: u64) -> u32 {
    match expiry {
        Expiry::Never => TTL_INFINITE,
        Expiry::WhileConnected => 0,
        Expiry::At(deadline) => {
            let secs = deadline.saturating_sub(now_ms) / 1000;
            u32::try_from(secs)
                .unwrap_or(TTL_INFINITE - 1)
                .min(TTL_INFINITE - 1)
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
