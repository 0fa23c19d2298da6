//! What leaves on a connection: queued messages moved into the transmit buffer as the
//! in-flight window allows, and the writes that carry them (with pending acknowledgements).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use snakemq_storage::{Expiry, Record};

use super::{DIRECT_PAYLOAD, Driver, now};
use crate::Error;
use crate::messaging::event::DropReason;
use crate::messaging::state::{InFlight, is_persistent};
use crate::messaging::tap::Unqueued;
use crate::proto::{self, TTL_INFINITE};

impl Driver {
    /// Moves queued messages into the transmit buffer, as many as the in-flight window
    /// allows. Messages whose deadline passed are dropped (and reported) instead.
    pub(super) async fn pump(&mut self) {
        self.pump_drained = false;
        let Some(peer) = self.peer.clone() else {
            return;
        };
        if self.proto.is_closed() || !self.proto.is_identified() || self.hold_until.is_some() {
            return;
        }
        let settings = &self.shared.settings;
        let mut now_ms = 0;
        // The driver's buffers, empty between turns: no allocation per turn for the
        // records read. Used in place (taken out below only when a turn has something in
        // them: putting an empty vector back costs a call of its drop glue, several turns
        // per RPC call).
        self.scratch.records.clear();
        let mut expired: Vec<Record> = Vec::new();
        'read: {
            let batch = &mut self.scratch.records;
            let mut state = self.shared.lock();
            let state = &mut *state;
            let Some(link) = state.peers.get_mut(&peer) else {
                break 'read;
            };
            // Handed over while nothing queued waited unsent: they go before whatever this
            // turn reads from the queue (all of it queued later).
            if !link.unqueued.is_empty() {
                std::mem::swap(&mut link.unqueued, &mut self.scratch.unqueued);
            }
            let room = settings
                .max_in_flight_messages
                .saturating_sub(link.in_flight.len());
            let paging = !state.backlogs.is_empty();
            let drained = link.drained(state.inserted, paging);
            if drained || room == 0 || link.in_flight_bytes >= settings.max_in_flight_bytes {
                self.pump_drained = drained;
                break 'read;
            }
            if let Err(error) = state.store.read(&peer, link.cursor, room, batch) {
                tracing::error!(%error, "store read failed");
                batch.clear();
                break 'read;
            }
            // The clock only when there is something to check: most turns of a driver
            // pump nothing, and a clock read is a measurable part of a short turn.
            if !batch.is_empty() {
                now_ms = self.shared.clock.now_ms();
            }
            let mut taken = 0;
            let mut bytes = link.in_flight_bytes;
            for record in batch.iter() {
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
            self.in_flight_seen = link.in_flight.len();
            // Read to the end and all of it taken: nothing more until an insertion.
            link.drained_at =
                (batch.len() < room && taken == batch.len()).then_some(state.inserted);
            self.pump_drained = link.drained(state.inserted, paging);
            batch.truncate(taken);
            let acks = link.acks;
            // (Only needed with a backlog: a store lookup per turn otherwise.)
            let paging = state.backlogs.contains_key(&peer);
            let unsent = if paging {
                (state.store.stats(&peer).map(|s| s.messages).unwrap_or(0) as usize)
                    .saturating_sub(link.in_flight.len() + taken)
            } else {
                usize::MAX
            };
            // Expired ones leave the queue; without acks (Python peers) a message counts as
            // delivered once written, so every taken message leaves the queue now.
            // (Split only when something expired: the common turn keeps its buffer.)
            let is_expired = |r: &Record| r.expiry.deadline_ms().is_some_and(|d| d <= now_ms);
            if batch.iter().any(is_expired) {
                let (gone, kept): (Vec<Record>, Vec<Record>) =
                    batch.drain(..).partition(is_expired);
                expired = gone;
                batch.extend(kept);
            }
            let leaving = expired.iter().chain(batch.iter().filter(|_| !acks));
            let seqs: Vec<u64> = leaving.clone().map(|r| r.seq).collect();
            if !seqs.is_empty() {
                if let Err(error) = state.store.remove(&peer, &seqs) {
                    tracing::error!(%error, "store remove failed");
                }
                self.shared.forget(&peer, leaving);
            }
            // A long durable queue is paged in: ask for more before this page runs out.
            if paging && unsent < crate::messaging::backlog::PAGE / 2 {
                crate::messaging::backlog::request_page(&self.shared, state, &peer);
            }
        }
        if !expired.is_empty() {
            self.shared.space.notify_waiters();
        }
        if !self.scratch.unqueued.is_empty() {
            let mut unqueued = std::mem::take(&mut self.scratch.unqueued);
            for message in unqueued.drain(..) {
                self.encode_unqueued(&message);
            }
            self.scratch.unqueued = unqueued;
        }
        if !self.scratch.records.is_empty() {
            let mut batch = std::mem::take(&mut self.scratch.records);
            // One allocation for the whole batch instead of doublings while encoding.
            // (Touching the transmit buffer brings pending acks along: only when there
            // is something for them to ride with.)
            let small: usize = batch
                .iter()
                .filter(|r| r.data.len() < DIRECT_PAYLOAD)
                .map(|r| 5 + proto::MESSAGE_HEADER_LEN + r.data.len())
                .sum();
            self.proto.transmit_buffer().reserve(small);
            for record in &batch {
                self.encode(record, now_ms);
            }
            if !self.acks {
                self.delivered_on_write.extend(batch.iter().map(|r| r.uuid));
            }
            batch.clear();
            self.scratch.records = batch;
        }
        if !expired.is_empty() {
            let uuids = expired.into_iter().map(|record| record.uuid);
            let dropped = self.shared.dropped(&peer, uuids, DropReason::Expired);
            self.shared.report_all(dropped).await;
        }
    }

    pub(super) fn encode(&mut self, record: &Record, now_ms: u64) {
        let ttl = wire_ttl(record.expiry, now_ms);
        self.encode_parts(
            &record.uuid,
            ttl,
            record.flags,
            &record.data,
            proto::kind::MESSAGE,
        );
    }

    /// Writes the tap's replies to `peer` on this connection, outside the queue (see
    /// [`crate::messaging::Tap::received`]); hands back to the tap those that cannot go
    /// now. Takes them out of `replies`.
    ///
    /// Such a reply is an UNACKED_MESSAGE frame to a peer that understands it, otherwise a
    /// MESSAGE (the peer acknowledges it; the acknowledgement finds nothing in flight and
    /// is ignored); either way it costs no queue
    /// insertion, deadline index entry, store read, in-flight entry or removal: about a
    /// tenth of an RPC call's work with one call outstanding. It must not overtake
    /// messages queued for the peer earlier, so it goes through the queue while any wait
    /// there unsent.
    pub(super) fn write_replies(&mut self, peer: &Arc<str>, replies: &mut Vec<Unqueued>) {
        let Some(tap) = self.shared.tap.get().cloned() else {
            replies.clear();
            return;
        };
        let writable =
            !self.proto.is_closed() && self.proto.is_identified() && self.hold_until.is_none() && {
                let state = self.shared.lock();
                state.peers.get(peer).is_some_and(|link| {
                    // Read to the end since the last insertion (the common case: no store
                    // lookup), or everything queued is in flight.
                    state.drained(link)
                        || (state.store.stats(peer).map_or(u64::MAX, |s| s.messages)
                            == link.in_flight.len() as u64
                            && !state.backlogs.contains_key(peer))
                })
            };
        let max = self.shared.max_packet_size as usize;
        for reply in replies.drain(..) {
            if !writable || !proto::message_fits(reply.data.len(), max) {
                tap.unsent(peer, reply);
                continue;
            }
            self.encode_unqueued(&reply);
        }
    }

    /// Encodes a message written outside the queue (a tap's reply, an unqueued call),
    /// with a fresh id. Nothing keeps a copy of one, so a peer that can be told not to
    /// acknowledge it is told (an UNACKED_MESSAGE): one ACK less to write, read and look
    /// up per RPC message, and no ACK packet of its own when the receiver sends nothing
    /// else soon.
    fn encode_unqueued(&mut self, message: &Unqueued) {
        let kind = if self.proto.unacked_in_use() {
            proto::kind::UNACKED_MESSAGE
        } else {
            proto::kind::MESSAGE
        };
        let ttl = finite_ttl(message.ttl.as_secs());
        self.encode_parts(
            &crate::messaging::random_uuid(),
            ttl,
            0,
            &message.data,
            kind,
        );
    }

    /// Encodes a message of `kind` (MESSAGE or UNACKED_MESSAGE) into the transmit buffer.
    fn encode_parts(&mut self, uuid: &proto::Uuid, ttl: u32, flags: u32, data: &Bytes, kind: u8) {
        self.shared.counters.sent.fetch_add(1, Ordering::Relaxed);
        if data.len() >= DIRECT_PAYLOAD {
            // Keep the payload out of the copy: what is buffered so far (pending acks
            // included), then the header alone, then the payload go to the writer as
            // separate chunks, in order.
            if let Some(before) = self.proto.take_transmit() {
                self.chunks.push(before);
            }
            let buf = self.proto.transmit_buffer();
            proto::encode_message_header_of_kind(kind, uuid, ttl, flags, data.len(), buf);
            self.chunks.push(buf.split().freeze());
            self.chunks.push(data.clone());
        } else {
            let buf = self.proto.transmit_buffer();
            proto::encode_message_header_of_kind(kind, uuid, ttl, flags, data.len(), buf);
            buf.extend_from_slice(data);
        }
    }

    /// Writes everything this turn produced; acknowledgements alone may wait for company
    /// up to the ack delay (the protocol core's timer brings them out).
    pub(super) async fn flush(&mut self) -> Result<(), Error> {
        self.write_out(false).await
    }

    /// Writes everything, the youngest acknowledgements included.
    pub(super) async fn flush_all(&mut self) -> Result<(), Error> {
        self.write_out(true).await
    }

    pub(super) async fn write_out(&mut self, everything: bool) -> Result<(), Error> {
        // (Large payloads only: an empty drain still cost its drop glue.)
        if !self.chunks.is_empty() {
            for chunk in self.chunks.drain(..) {
                self.writer.send_raw(chunk).await?;
            }
        }
        // (With no acknowledgement waiting both give the same; the clock is read only
        // when one is.)
        let out = if everything || self.proto.pending_acks() == 0 {
            self.proto.transmit_buffer()
        } else {
            self.proto.transmit_due(now())
        };
        // Written from the transmit buffer, which keeps its capacity, and at once in the
        // common case: no `Bytes` per write, and no `send_raw` future built for nothing.
        if let Some(queued) = self.writer.try_send_buf(out)? {
            self.writer.send_queued(queued).await?;
        }
        if !self.delivered_on_write.is_empty() {
            let Some(peer) = self.peer.clone() else {
                return Ok(());
            };
            let mut delivered = std::mem::take(&mut self.delivered_on_write);
            let count = delivered.len();
            if !self.shared.subscribed.load(Ordering::Acquire) {
                delivered.clear();
            }
            self.delivered(&peer, count, delivered).await;
        }
        Ok(())
    }
}

/// The TTL field of a queued message: remaining whole seconds, truncated.
pub(crate) fn wire_ttl(expiry: Expiry, now_ms: u64) -> u32 {
    match expiry {
        Expiry::Never => TTL_INFINITE,
        Expiry::WhileConnected => 0,
        Expiry::At(deadline) => finite_ttl(deadline.saturating_sub(now_ms) / 1000),
    }
}

/// The TTL field for `secs` whole seconds: at most one below `TTL_INFINITE`, which
/// means "no expiry".
fn finite_ttl(secs: u64) -> u32 {
    u32::try_from(secs)
        .unwrap_or(TTL_INFINITE - 1)
        .min(TTL_INFINITE - 1)
}
