//! The per-connection state machine.
//!
//! Handshake (WIRE.md): both sides send PROTOCOL_VERSION, CAPABILITIES (Rust peers) and
//! IDENTIFICATION at once, without waiting. MESSAGE and ACK are only valid after the peer's
//! IDENTIFICATION. A Python peer never sends CAPABILITIES, which is how we know to fall back
//! to its at-most-once semantics. After any violation the connection is closed and nothing
//! more from it is processed.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::frame::{
    CAP_ACKS, CAP_UNACKED, Frame, MessageFrame, PROTOCOL_VERSION, Uuid, encode_ack,
};
use super::{ProtoError, encode_message};

/// Longest remote identity accepted, in bytes.
pub const MAX_REMOTE_IDENTITY: usize = 200;

/// Unknown frames tolerated in a burst, then refilled at this many per second.
const UNKNOWN_FRAME_BUDGET: u32 = 64;

/// Most message ids carried by one ACK frame.
const MAX_ACK_BATCH: usize = 4096;

/// Pending acknowledgements that go out at once, without waiting for the ack delay: enough
/// to keep a sender's in-flight window moving.
const ACK_FLUSH_COUNT: usize = 256;

/// Keepalive timing: after `interval` without any received packet a PING is sent; if
/// nothing arrives within `wait` after it, the connection is declared dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Idle time before a PING.
    pub interval: Duration,
    /// Time allowed for the answer.
    pub wait: Duration,
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            interval: Duration::from_secs(2),
            wait: Duration::from_secs(3),
        }
    }
}

/// Settings of one connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectionConfig {
    /// Our identity (already validated by the caller).
    pub identity: String,
    /// Whether we announce and use acknowledgements (CAPABILITIES bit 0).
    pub acks: bool,
    /// Keepalive, `None` to turn it off.
    pub keepalive: Option<Keepalive>,
    /// Time allowed for the peer's IDENTIFICATION.
    pub handshake_timeout: Duration,
    /// How long an acknowledgement may wait for outgoing data to ride with (see
    /// [`Connection::poll_transmit`]): `Some(ZERO)` (the default) sends every
    /// acknowledgement with the next transmit; `None` holds them, without a timer, until
    /// data rides along, many are pending, or the owner calls
    /// [`Connection::take_transmit`] (which an owner does when it goes idle).
    pub ack_delay: Option<Duration>,
}

impl ConnectionConfig {
    /// Defaults: acks on, keepalive on, 10 s handshake deadline, no ack delay.
    pub fn new(identity: impl Into<String>) -> Self {
        ConnectionConfig {
            identity: identity.into(),
            acks: true,
            keepalive: Some(Keepalive::default()),
            handshake_timeout: Duration::from_secs(10),
            ack_delay: Some(Duration::ZERO),
        }
    }

    /// Sets how long an acknowledgement may wait for outgoing data to ride with (`None`:
    /// until the owner sends them).
    pub fn ack_delay(mut self, delay: Option<Duration>) -> Self {
        self.ack_delay = delay;
        self
    }

    /// Sets whether acknowledgements are announced.
    pub fn acks(mut self, on: bool) -> Self {
        self.acks = on;
        self
    }

    /// Sets keepalive.
    pub fn keepalive(mut self, keepalive: Option<Keepalive>) -> Self {
        self.keepalive = keepalive;
        self
    }

    /// Sets the handshake deadline.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }
}

/// What happened on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The peer identified itself. `acks` tells whether both sides use acknowledgements
    /// (false for Python peers).
    Identified {
        /// The peer's identity.
        identity: String,
        /// Acknowledgements in use on this connection.
        acks: bool,
    },
    /// A message arrived.
    Message(MessageFrame),
    /// A message arrived that must not be acknowledged: its sender keeps no copy (an
    /// UNACKED_MESSAGE frame; see [`Connection::unacked_in_use`]).
    UnackedMessage(MessageFrame),
    /// The peer acknowledged these messages.
    Acked(Vec<Uuid>),
    /// The connection must be closed: flush [`Connection::take_transmit`] and close.
    Closed(ProtoError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshake,
    Identified,
    Closed,
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Connection {
    config: ConnectionConfig,
    state: State,
    out: BytesMut,
    events: VecDeque<Event>,
    peer_caps: Option<u32>,
    acks_in_use: bool,
    /// Acks are in use and the peer understands UNACKED_MESSAGE frames.
    unacked_in_use: bool,
    pending_acks: Vec<Uuid>,
    /// When the oldest pending acknowledgement must go out at the latest (`None` with no
    /// pending ones, or no ack delay timer).
    acks_due: Option<Instant>,
    handshake_deadline: Instant,
    last_received: Instant,
    ping_sent_at: Option<Instant>,
    unknown_budget: u32,
    unknown_refilled: Instant,
    unknown_seen: u64,
    /// Emptied id lists of [`Event::Acked`] handed back by the owner
    /// ([`Connection::recycle_acked`]), reused for the next ACK frames.
    spare_acks: Vec<Vec<Uuid>>,
}

/// Id lists kept for reuse (see [`Connection::recycle_acked`]), and the largest kept.
const SPARE_ACK_LISTS: usize = 4;
const SPARE_ACK_CAPACITY: usize = 4096;

impl Connection {
    /// A new connection; the handshake frames are queued for transmission at once.
    pub fn new(config: ConnectionConfig, now: Instant) -> Self {
        let mut out = BytesMut::with_capacity(64 + config.identity.len());
        Frame::ProtocolVersion(PROTOCOL_VERSION).encode(&mut out);
        if config.acks {
            Frame::Capabilities(CAP_ACKS | CAP_UNACKED).encode(&mut out);
        }
        Frame::Identification(Bytes::copy_from_slice(config.identity.as_bytes())).encode(&mut out);
        Connection {
            handshake_deadline: now + config.handshake_timeout,
            config,
            state: State::Handshake,
            out,
            events: VecDeque::new(),
            peer_caps: None,
            acks_in_use: false,
            unacked_in_use: false,
            pending_acks: Vec::new(),
            acks_due: None,
            last_received: now,
            ping_sent_at: None,
            unknown_budget: UNKNOWN_FRAME_BUDGET,
            unknown_refilled: now,
            unknown_seen: 0,
            spare_acks: Vec::new(),
        }
    }

    /// Whether the peer has identified.
    pub fn is_identified(&self) -> bool {
        self.state == State::Identified
    }

    /// Whether the connection is closed (by a violation or a timeout).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether acknowledgements are in use (both sides announced them).
    pub fn acks_in_use(&self) -> bool {
        self.acks_in_use
    }

    /// Whether messages that need no acknowledgement may go out as UNACKED_MESSAGE frames
    /// ([`Frame::UnackedMessage`]): acks are in use and the peer announced
    /// [`CAP_UNACKED`]. Otherwise such a message goes out as a MESSAGE, and the peer's
    /// acknowledgement of it is to be ignored.
    pub fn unacked_in_use(&self) -> bool {
        self.unacked_in_use
    }

    /// Number of frames of unknown type received so far.
    pub fn unknown_frames(&self) -> u64 {
        self.unknown_seen
    }

    /// Bytes of a packet that has not arrived whole yet came in: the peer is alive, even
    /// though the answer to a PING may be queued behind that packet (a large message
    /// through a slow or throttled link). Keepalive counts from `now`.
    pub fn handle_progress(&mut self, now: Instant) {
        if self.state != State::Closed {
            self.last_received = self.last_received.max(now);
            self.ping_sent_at = None;
        }
    }

    /// Processes one received packet body.
    pub fn handle_packet(&mut self, body: Bytes, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        self.last_received = now;
        self.ping_sent_at = None;
        if let Err(error) = self.process(body, now) {
            self.close(error);
        }
    }

    /// Hands back the id list of an [`Event::Acked`] once it was read: the next ACK
    /// frame's ids go into it instead of a new allocation (two per RPC call otherwise).
    pub fn recycle_acked(&mut self, mut ids: Vec<Uuid>) {
        if self.spare_acks.len() < SPARE_ACK_LISTS && ids.capacity() <= SPARE_ACK_CAPACITY {
            ids.clear();
            self.spare_acks.push(ids);
        }
    }

    fn process(&mut self, body: Bytes, now: Instant) -> Result<(), ProtoError> {
        // ACK frames are decoded here, into a recycled list (by `Frame::decode`'s own
        // decoder, so with its checks and errors).
        if let Some((&super::kind::ACK, payload)) = body.split_first() {
            let mut list = self.spare_acks.pop().unwrap_or_default();
            super::frame::decode_ack_ids(payload, &mut list)?;
            return self.acked(list);
        }
        match Frame::decode(body)? {
            Frame::ProtocolVersion(PROTOCOL_VERSION) => Ok(()),
            Frame::ProtocolVersion(other) => {
                Frame::IncompatibleProtocol.encode(&mut self.out);
                Err(ProtoError::IncompatibleVersion(other))
            }
            Frame::IncompatibleProtocol => Err(ProtoError::RefusedByPeer),
            Frame::Identification(raw) => self.identify(&raw),
            Frame::Message(message) => {
                if self.state != State::Identified {
                    return Err(ProtoError::BeforeIdentification("MESSAGE"));
                }
                self.events.push_back(Event::Message(message));
                Ok(())
            }
            Frame::UnackedMessage(message) => {
                if self.state != State::Identified {
                    return Err(ProtoError::BeforeIdentification("UNACKED_MESSAGE"));
                }
                self.events.push_back(Event::UnackedMessage(message));
                Ok(())
            }
            Frame::Ping => {
                Frame::Pong.encode(&mut self.out);
                Ok(())
            }
            Frame::Pong => Ok(()),
            Frame::Capabilities(bits) => {
                if self.state == State::Identified {
                    // Capabilities are part of the handshake; late ones would change the
                    // delivery contract mid-stream.
                    return Err(ProtoError::Malformed("CAPABILITIES after IDENTIFICATION"));
                }
                self.peer_caps = Some(bits);
                Ok(())
            }
            // (Taken above, before `Frame::decode`.)
            Frame::Ack(ids) => self.acked(ids),
            Frame::Unknown { .. } => self.count_unknown(now),
        }
    }

    fn identify(&mut self, raw: &[u8]) -> Result<(), ProtoError> {
        if self.state == State::Identified {
            return Err(ProtoError::DuplicateIdentification);
        }
        if raw.is_empty() {
            return Err(ProtoError::InvalidIdentity("empty"));
        }
        if raw.len() > MAX_REMOTE_IDENTITY {
            return Err(ProtoError::InvalidIdentity("longer than 200 bytes"));
        }
        let identity =
            std::str::from_utf8(raw).map_err(|_| ProtoError::InvalidIdentity("not UTF-8"))?;
        self.acks_in_use = self.config.acks && self.peer_caps.is_some_and(|b| b & CAP_ACKS != 0);
        self.unacked_in_use =
            self.acks_in_use && self.peer_caps.is_some_and(|b| b & CAP_UNACKED != 0);
        self.state = State::Identified;
        self.events.push_back(Event::Identified {
            identity: identity.to_owned(),
            acks: self.acks_in_use,
        });
        Ok(())
    }

    fn acked(&mut self, ids: Vec<Uuid>) -> Result<(), ProtoError> {
        if self.state != State::Identified {
            return Err(ProtoError::BeforeIdentification("ACK"));
        }
        if !self.acks_in_use {
            return Err(ProtoError::UnexpectedAck);
        }
        self.events.push_back(Event::Acked(ids));
        Ok(())
    }

    fn count_unknown(&mut self, now: Instant) -> Result<(), ProtoError> {
        self.unknown_seen += 1;
        let elapsed = now.saturating_duration_since(self.unknown_refilled);
        let refill = (elapsed.as_millis() as u64 * u64::from(UNKNOWN_FRAME_BUDGET) / 1000) as u32;
        if refill > 0 {
            self.unknown_budget =
                (self.unknown_budget.saturating_add(refill)).min(UNKNOWN_FRAME_BUDGET);
            self.unknown_refilled = now;
        }
        match self.unknown_budget.checked_sub(1) {
            Some(left) => {
                self.unknown_budget = left;
                Ok(())
            }
            None => Err(ProtoError::UnknownFlood),
        }
    }

    /// Queues a message for transmission.
    ///
    /// # Errors
    /// Refused before the peer identified (the protocol forbids it) or after close.
    pub fn send_message(&mut self, message: &MessageFrame) -> Result<(), ProtoError> {
        if self.state != State::Identified {
            return Err(ProtoError::BeforeIdentification("MESSAGE"));
        }
        encode_message(message, self.transmit_buffer());
        Ok(())
    }

    /// The transmit buffer, for callers that encode messages themselves (after checking
    /// [`Connection::is_identified`]).
    ///
    /// Pending acknowledgements are encoded first: whatever is written next rides with
    /// them, and never ahead of them (a reply does not overtake the acknowledgement of the
    /// request it answers).
    pub fn transmit_buffer(&mut self) -> &mut BytesMut {
        self.encode_pending_acks();
        &mut self.out
    }

    /// Records that a received message has been handed to the application. Its ACK goes
    /// out batched with others: with the next outgoing data, once
    /// [`ConnectionConfig::ack_delay`] has passed since the oldest pending one, at once
    /// when many are pending, or with [`Connection::take_transmit`]. No-op when acks are
    /// not in use.
    pub fn ack(&mut self, uuid: Uuid, now: Instant) {
        if self.acks_in_use && self.state == State::Identified {
            self.pending_acks.push(uuid);
            if let Some(delay) = self.config.ack_delay {
                self.acks_due.get_or_insert(now + delay);
            }
        }
    }

    /// Number of acknowledgements waiting for the next transmit.
    pub fn pending_acks(&self) -> usize {
        self.pending_acks.len()
    }

    fn encode_pending_acks(&mut self) {
        if !self.pending_acks.is_empty() && self.state != State::Closed {
            for chunk in self.pending_acks.chunks(MAX_ACK_BATCH) {
                encode_ack(chunk, &mut self.out);
            }
        }
        self.pending_acks.clear();
        self.acks_due = None;
    }

    /// Everything to send, pending ACKs included however young (for a connection that is
    /// closing); `None` when there is nothing.
    pub fn take_transmit(&mut self) -> Option<Bytes> {
        self.encode_pending_acks();
        self.take_out()
    }

    /// What to send at `now`: everything queued, with the pending ACKs when there is other
    /// data for them to ride with, when the oldest has waited the ack delay, or when many
    /// are pending; younger lone ACKs wait (their deadline is in
    /// [`Connection::poll_timeout`]). `None` when there is nothing to send yet.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        self.transmit_due(now);
        self.take_out()
    }

    /// [`Connection::poll_transmit`] in place: the transmit buffer with what is to be
    /// sent at `now` (empty when nothing is), for the caller to write from and clear.
    pub fn transmit_due(&mut self, now: Instant) -> &mut BytesMut {
        let acks_ready = !self.out.is_empty()
            || self.pending_acks.len() >= ACK_FLUSH_COUNT
            || self.acks_due.is_some_and(|due| due <= now);
        // (`handle_timeout` at the deadline does the same; this spares a caller that
        // flushes after every turn the extra timer round.)
        if acks_ready {
            self.encode_pending_acks();
        }
        &mut self.out
    }

    fn take_out(&mut self) -> Option<Bytes> {
        if self.out.is_empty() {
            None
        } else {
            Some(self.out.split().freeze())
        }
    }

    /// Whether an event waits for [`Connection::poll_event`].
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Connection::handle_timeout`] (and then [`Connection::poll_transmit`]) must
    /// be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Closed => None,
            State::Handshake => {
                let keepalive = self.keepalive_deadline();
                Some(keepalive.map_or(self.handshake_deadline, |k| k.min(self.handshake_deadline)))
            }
            State::Identified => match (self.keepalive_deadline(), self.acks_due) {
                (Some(keepalive), Some(acks)) => Some(keepalive.min(acks)),
                (keepalive, acks) => keepalive.or(acks),
            },
        }
    }

    fn keepalive_deadline(&self) -> Option<Instant> {
        let keepalive = self.config.keepalive?;
        Some(match self.ping_sent_at {
            Some(sent) => sent + keepalive.wait,
            None => self.last_received + keepalive.interval,
        })
    }

    /// Runs the timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        if self.state == State::Handshake && now >= self.handshake_deadline {
            self.close(ProtoError::HandshakeTimeout(self.config.handshake_timeout));
            return;
        }
        if self.acks_due.is_some_and(|due| now >= due) {
            // Due acknowledgements move to the transmit buffer (the timer moves on).
            self.encode_pending_acks();
        }
        let Some(keepalive) = self.config.keepalive else {
            return;
        };
        match self.ping_sent_at {
            Some(sent) if now >= sent + keepalive.wait => {
                self.close(ProtoError::KeepaliveTimeout(keepalive.wait));
            }
            None if now >= self.last_received + keepalive.interval => {
                Frame::Ping.encode(self.transmit_buffer());
                self.ping_sent_at = Some(now);
            }
            _ => {}
        }
    }

    /// Closes the connection with `reason`; nothing more is processed.
    pub fn close(&mut self, reason: ProtoError) {
        if self.state != State::Closed {
            self.state = State::Closed;
            self.pending_acks.clear();
            self.acks_due = None;
            self.events.push_back(Event::Closed(reason));
        }
    }
}

#[cfg(test)]
#[path = "connection_tests.rs"]
mod tests;
