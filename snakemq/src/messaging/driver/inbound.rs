//! What arrives on a connection: identification, messages for the application (and their
//! acknowledgements once it is done with them), acknowledgements of what we sent.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::{Driver, LEGACY_FIRST_SEND_DELAY, check_identity_binding, now};
use crate::Error;
use crate::messaging::event::Event;
use crate::messaging::message::ReceivedMessage;
use crate::messaging::state::{DedupWindow, EventBatch, PeerLink, Receipt};
use crate::proto::{self, MessageFrame, Uuid};

impl Driver {
    /// Handles what the protocol core reported this turn.
    pub(super) async fn process_events(&mut self) -> Result<(), Error> {
        // A buffer kept by the driver, empty between turns: a turn with a message no
        // longer allocates for it. (Taken out only when it holds something: putting an
        // empty vector back costs a call of its drop glue, several turns per RPC call.)
        let mut outcome = Ok(());
        while let Some(event) = self.proto.poll_event() {
            match event {
                proto::Event::Identified { identity, acks } => {
                    if let Err(error) = self.register(identity, acks).await {
                        outcome = Err(error);
                        break;
                    }
                }
                proto::Event::Message(frame) => {
                    self.scratch.frames.push(frame);
                    self.scratch.unacked.push(false);
                }
                proto::Event::UnackedMessage(frame) => {
                    self.scratch.frames.push(frame);
                    self.scratch.unacked.push(true);
                }
                proto::Event::Acked(ids) => {
                    self.acked(&ids).await;
                    self.proto.recycle_acked(ids);
                }
                proto::Event::Closed(reason) => {
                    // Deliver what arrived before the violation, then close.
                    outcome = Err(Error::Protocol(reason));
                    break;
                }
            }
        }
        // (A failed registration leaves no peer: nothing is delivered then.)
        if !self.scratch.frames.is_empty() {
            let mut received = std::mem::take(&mut self.scratch.frames);
            let mut unacked = std::mem::take(&mut self.scratch.unacked);
            self.deliver(&mut received, &unacked).await;
            received.clear();
            unacked.clear();
            self.scratch.frames = received;
            self.scratch.unacked = unacked;
        }
        outcome
    }

    pub(super) async fn register(&mut self, identity: String, acks: bool) -> Result<(), Error> {
        self.pump_drained = false;
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
                existing.wake.notify();
            }
            state.peers.insert(
                peer.clone(),
                PeerLink {
                    conn: self.info.id,
                    wake: self.wake.clone(),
                    evicted: self.evicted.clone(),
                    acks,
                    cursor: None,
                    drained_at: None,
                    in_flight: Default::default(),
                    in_flight_bytes: 0,
                    unqueued: Vec::new(),
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
        if let Some(tap) = self.shared.tap.get() {
            tap.connected(&peer);
        }
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
    pub(super) async fn load_dedup_window(&self, peer: &Arc<str>, acks: bool) {
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
    /// their acknowledgements. Takes the frames out of `frames`; `unacked[i]` tells
    /// whether `frames[i]` came as an UNACKED_MESSAGE (its sender wants no ack).
    ///
    /// The per-turn lists live in the driver's scratch buffers: with a tap taking every
    /// message (typed RPC) a turn allocates nothing here.
    pub(super) async fn deliver(&mut self, frames: &mut Vec<MessageFrame>, unacked: &[bool]) {
        let Some(peer) = self.peer.clone() else {
            return;
        };
        if frames.is_empty() {
            return;
        }
        let mut fresh = std::mem::take(&mut self.scratch.fresh);
        fresh.clear();
        if self.acks {
            let mut state = self.shared.lock();
            let window = self.shared.settings.dedup_window;
            let dedup = match state.dedup.get_mut(&peer) {
                Some(dedup) => dedup,
                None => state
                    .dedup
                    .entry(peer.clone())
                    .or_insert_with(|| DedupWindow::new(window)),
            };
            // (What the tap recognises as its own duplicates stays out of the window: one
            // cache miss less per message in a window of tens of thousands of ids.)
            let tap = self.shared.tap.get();
            fresh.extend(
                frames.iter().map(|f| {
                    tap.is_some_and(|t| t.drops_duplicates(&f.data)) || dedup.insert(f.uuid)
                }),
            );
        } else {
            fresh.resize(frames.len(), true);
        }
        // Counted before the hand-over, so the application never sees a message that the
        // counters do not include yet.
        let fresh_count = fresh.iter().filter(|f| **f).count();
        let counters = &self.shared.counters;
        counters
            .received
            .fetch_add(fresh_count as u64, Ordering::Relaxed);
        counters
            .duplicates
            .fetch_add((frames.len() - fresh_count) as u64, Ordering::Relaxed);
        let shared = self.shared.clone();
        let tap = shared.tap.get();
        // (Allocated only when a message goes to the event stream.)
        let mut events = Vec::new();
        let mut fresh_ids = Vec::new();
        let mut tapped = std::mem::take(&mut self.scratch.tapped);
        tapped.clear();
        // A duplicate's first copy was handed over earlier, but the application may not be
        // done with it yet (it can still wait in the event queue): the duplicate is
        // acknowledged when the application reaches this batch, which means it finished
        // every earlier one. Fresh messages are acknowledged when it is done with them.
        let mut duplicate_ids = Vec::new();
        let unacked = unacked.iter().copied().chain(std::iter::repeat(false));
        for ((frame, fresh), unacked) in frames.drain(..).zip(fresh.iter().copied()).zip(unacked) {
            let uuid = frame.uuid;
            if !fresh {
                // (A copy of a message in this same batch needs no ack of its own: the
                // first copy's ack covers it.)
                if self.acks && !unacked && !fresh_ids.contains(&uuid) && !tapped.contains(&uuid) {
                    duplicate_ids.push(uuid);
                }
                continue;
            }
            let mut message = ReceivedMessage::from_wire(frame);
            if let Some(tap) = tap {
                match tap.received(&peer, message, &mut self.scratch.replies) {
                    Some(untaken) => message = untaken,
                    None => {
                        // (An unacked message taken is done with: nothing to confirm.)
                        if !unacked {
                            tapped.push(uuid);
                        }
                        continue;
                    }
                }
            }
            // An unacked message for the event stream keeps its place in the receipt, whose
            // ids match the batch's messages one for one: its ack, if one goes out, finds
            // nothing in flight at the sender and is ignored.
            fresh_ids.push(uuid);
            events.push(Event::Received {
                from: peer.clone(),
                message,
            });
        }
        self.scratch.fresh = fresh;
        // The tap is done with what it took: acknowledged now, riding with whatever this
        // turn sends (a reply the tap queued, typically).
        if self.acks && !tapped.is_empty() {
            self.confirmed(&tapped).await;
        }
        self.scratch.tapped = tapped;
        if !self.scratch.replies.is_empty() {
            let mut replies = std::mem::take(&mut self.scratch.replies);
            self.write_replies(&peer, &mut replies);
            self.scratch.replies = replies;
        }
        if events.is_empty() && duplicate_ids.is_empty() {
            return;
        }
        let receipt = self.acks.then(|| Receipt {
            ids: fresh_ids,
            on_reach: duplicate_ids,
            to: self.confirmations.clone(),
        });
        // Waits when the application is behind: backpressure reaches the sender through
        // withheld acks and TCP flow control.
        self.shared.emit(EventBatch { events, receipt }).await;
    }

    /// Acknowledges what the application confirmed since the last look.
    pub(super) async fn take_confirmed(&mut self) {
        let mut ids = std::mem::take(&mut self.scratch.confirmed);
        if self.confirmations.take(&mut ids) {
            self.confirmed(&ids).await;
        }
        self.scratch.confirmed = ids;
    }

    /// The application is done with these received messages: remember them in the
    /// durable store (if any) and acknowledge them.
    pub(super) async fn confirmed(&mut self, ids: &[Uuid]) {
        let Some(peer) = self.peer.clone() else {
            return;
        };
        // With a durable store the ids are committed before they are acknowledged, so a
        // restarted receiver still recognises a re-sent message.
        if let Some(persister) = &self.shared.persister {
            let commit = persister.received(peer, ids.to_vec());
            if let Err(error) = crate::messaging::persist::committed(commit).await {
                tracing::error!(%error, "received ids not committed; not acknowledging");
                return;
            }
        }
        let now = now();
        for uuid in ids {
            self.proto.ack(*uuid, now);
        }
    }

    /// Removes acknowledged messages from the queue.
    pub(super) async fn acked(&mut self, ids: &[Uuid]) {
        if self.in_flight_seen == 0 {
            return;
        }
        let Some(peer) = self.peer.clone() else {
            return;
        };
        // The uuids are kept for `Delivered` events only when someone reads events.
        let report = self.shared.subscribed.load(Ordering::Acquire);
        let mut delivered = Vec::new();
        let mut count = 0;
        {
            let mut state = self.shared.lock();
            let state = &mut *state;
            let Some(link) = state.peers.get_mut(&peer) else {
                return;
            };
            let seqs = &mut self.scratch.seqs;
            seqs.clear();
            let mut durable = Vec::new();
            for id in ids {
                // Acks come in send order, so the match is almost always at the front.
                let position = link.in_flight.iter().position(|m| m.uuid == *id);
                if let Some(message) = position.and_then(|i| link.in_flight.remove(i)) {
                    link.in_flight_bytes -= message.size;
                    seqs.push(message.seq);
                    count += 1;
                    if report {
                        delivered.push(message.uuid);
                    }
                    if message.persistent {
                        durable.push(message.seq);
                    }
                }
            }
            self.in_flight_seen = link.in_flight.len();
            // (Acks of messages that were never queued, the tap's replies, match none.)
            if seqs.is_empty() {
                return;
            }
            // Room in flight: the next pump may send more.
            self.pump_drained = false;
            if let Err(error) = state.store.remove(&peer, seqs) {
                tracing::error!(%error, "store failed to remove acknowledged messages");
            }
            if let Some(persister) = &self.shared.persister {
                persister.remove(&peer, durable);
            }
        }
        self.delivered(&peer, count, delivered).await;
    }

    /// Counts and reports `count` delivered messages (`delivered`: their uuids when
    /// someone reads events); their queue room is free again.
    pub(super) async fn delivered(&self, peer: &Arc<str>, count: usize, delivered: Vec<Uuid>) {
        self.shared
            .counters
            .delivered
            .fetch_add(count as u64, Ordering::Relaxed);
        self.shared.space_freed();
        if delivered.is_empty() {
            return;
        }
        let events = delivered
            .into_iter()
            .map(|uuid| Event::Delivered {
                to: peer.clone(),
                uuid,
            })
            .collect();
        self.shared.report_all(events).await;
    }
}
