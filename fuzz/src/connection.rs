//! `connection`: an arbitrary sequence of operations against the sans-IO
//! [`Connection`], checked against a small model after every step.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use snakemq::proto::{
    CAP_ACKS, CAP_UNACKED, Connection, ConnectionConfig, Event, Frame, Keepalive, MessageFrame,
    PROTOCOL_VERSION, Uuid,
};
use snakemq_link::PacketDecoder;

/// Our identity in every run.
const IDENTITY: &str = "fuzz";

/// Whole input of the `connection` target.
#[derive(Debug, Arbitrary)]
pub struct ConnectionInput {
    /// Announce acknowledgements.
    pub acks: bool,
    /// Keepalive (interval, wait) in milliseconds, or off.
    pub keepalive: Option<(u16, u16)>,
    /// Handshake deadline in milliseconds.
    pub handshake_ms: u16,
    /// What happens, in order.
    pub ops: Vec<Op>,
}

/// One step.
#[derive(Debug, Arbitrary)]
pub enum Op {
    /// A packet body of arbitrary bytes.
    Raw(Vec<u8>),
    /// A well-formed frame.
    Frame(FuzzFrame),
    /// The clock moves on by this many milliseconds.
    AdvanceMs(u16),
    /// The clock moves on by this many seconds.
    AdvanceSecs(u8),
    /// `handle_timeout(now)`, whether or not a timer is due.
    Timeout,
    /// Jump to the connection's own deadline and run it, like the async shell does.
    RunDeadline,
    /// `send_message`.
    Send {
        /// Id.
        uuid: Uuid,
        /// TTL.
        ttl: u32,
        /// Flags.
        flags: u32,
        /// Payload.
        data: Vec<u8>,
    },
    /// `ack` of an arbitrary id.
    Ack(Uuid),
    /// `ack` of the oldest received message not yet acknowledged.
    AckReceived,
    /// `take_transmit`.
    Take,
}

/// A well-formed frame, biased towards the handshake.
#[derive(Debug, Arbitrary)]
pub enum FuzzFrame {
    /// PROTOCOL_VERSION 1.
    Version,
    /// PROTOCOL_VERSION of any number.
    OtherVersion(u32),
    /// INCOMPATIBLE_PROTOCOL.
    Incompatible,
    /// IDENTIFICATION with a plausible identity.
    Ident(u8),
    /// IDENTIFICATION with arbitrary bytes.
    IdentRaw(Vec<u8>),
    /// MESSAGE.
    Message {
        /// Id.
        uuid: Uuid,
        /// TTL.
        ttl: u32,
        /// Flags.
        flags: u32,
        /// Payload.
        data: Vec<u8>,
    },
    /// PING.
    Ping,
    /// PONG.
    Pong,
    /// CAPABILITIES.
    Capabilities(u32),
    /// CAPABILITIES with the ACK bit.
    CapAcks,
    /// ACK.
    Ack(Vec<Uuid>),
    /// Unknown type with a payload of this many zero bytes.
    Unknown(u8, u8),
}

impl FuzzFrame {
    fn into_frame(self) -> Frame {
        match self {
            FuzzFrame::Version => Frame::ProtocolVersion(PROTOCOL_VERSION),
            FuzzFrame::OtherVersion(v) => Frame::ProtocolVersion(v),
            FuzzFrame::Incompatible => Frame::IncompatibleProtocol,
            FuzzFrame::Ident(n) => Frame::Identification(Bytes::from(format!("peer-{n}"))),
            FuzzFrame::IdentRaw(raw) => Frame::Identification(Bytes::from(raw)),
            FuzzFrame::Message {
                uuid,
                ttl,
                flags,
                data,
            } => Frame::Message(MessageFrame {
                uuid,
                ttl,
                flags,
                data: Bytes::from(data),
            }),
            FuzzFrame::Ping => Frame::Ping,
            FuzzFrame::Pong => Frame::Pong,
            FuzzFrame::Capabilities(bits) => Frame::Capabilities(bits),
            FuzzFrame::CapAcks => Frame::Capabilities(CAP_ACKS),
            FuzzFrame::Ack(ids) => Frame::Ack(ids),
            // Type numbers 0..=7 are known frames; keep "unknown" unknown.
            FuzzFrame::Unknown(kind, len) => Frame::Unknown {
                kind: kind.max(8),
                len: usize::from(len),
            },
        }
    }
}

/// What the harness knows about the connection from its events and calls.
#[derive(Debug, Default)]
struct Model {
    identified: bool,
    acks: bool,
    closed: bool,
    /// Messages accepted by `send_message`, not yet seen in a transmit.
    sent: VecDeque<MessageFrame>,
    /// Ids passed to `ack` while it must take effect, not yet seen in a transmit.
    acked: VecDeque<Uuid>,
    /// Received message ids not yet acknowledged (for [`Op::AckReceived`]).
    received: VecDeque<Uuid>,
    /// PINGs received while open, not yet answered in a transmit.
    pongs_due: usize,
    /// Whether the handshake prefix has been checked (first transmit).
    greeted: bool,
}

/// Runs one input; panics on a broken invariant.
pub fn run(input: ConnectionInput) {
    let start = Instant::now();
    let mut now = start;
    let config = ConnectionConfig::new(IDENTITY)
        .acks(input.acks)
        .keepalive(input.keepalive.map(|(interval, wait)| Keepalive {
            interval: Duration::from_millis(u64::from(interval)),
            wait: Duration::from_millis(u64::from(wait)),
        }))
        .handshake_timeout(Duration::from_millis(u64::from(input.handshake_ms)));
    let mut conn = Connection::new(config, now);
    // `model.acks` means "in use", known at identification; `announced` is our half.
    let mut model = Model::default();
    let announced = input.acks;

    for op in input.ops {
        match op {
            Op::Raw(body) => packet(&mut conn, &mut model, Bytes::from(body), now),
            Op::Frame(frame) => {
                let mut out = BytesMut::new();
                frame.into_frame().encode(&mut out);
                // An ACK with no ids encodes as nothing at all (there is no such frame).
                if out.len() >= 4 {
                    packet(&mut conn, &mut model, out.split_off(4).freeze(), now);
                }
            }
            Op::AdvanceMs(ms) => now += Duration::from_millis(u64::from(ms)),
            Op::AdvanceSecs(s) => now += Duration::from_secs(u64::from(s)),
            Op::Timeout => timeout(&mut conn, now),
            Op::RunDeadline => {
                if let Some(due) = conn.poll_timeout() {
                    now = now.max(due);
                    timeout(&mut conn, now);
                }
            }
            Op::Send {
                uuid,
                ttl,
                flags,
                data,
            } => {
                let message = MessageFrame {
                    uuid,
                    ttl,
                    flags,
                    data: Bytes::from(data),
                };
                let result = conn.send_message(&message);
                let may_send = model.identified && !model.closed;
                assert_eq!(result.is_ok(), may_send, "send_message: {result:?}");
                if result.is_ok() {
                    model.sent.push_back(message);
                }
            }
            Op::Ack(uuid) => ack(&mut conn, &mut model, uuid, now),
            Op::AckReceived => {
                if let Some(uuid) = model.received.pop_front() {
                    ack(&mut conn, &mut model, uuid, now);
                }
            }
            Op::Take => {
                if let Some(bytes) = conn.take_transmit() {
                    check_transmit(&mut model, announced, bytes);
                } else {
                    assert!(model.sent.is_empty() && model.pongs_due == 0);
                    assert!(model.closed || model.acked.is_empty());
                }
            }
        }
        drain_events(&mut conn, &mut model);
        assert_eq!(
            conn.is_closed(),
            model.closed,
            "is_closed disagrees with events"
        );
        assert_eq!(
            conn.is_identified(),
            model.identified && !model.closed,
            "is_identified disagrees with events"
        );
        if model.closed {
            assert_eq!(conn.poll_timeout(), None, "a closed connection has a timer");
            assert_eq!(conn.pending_acks(), 0, "a closed connection holds acks");
        }
    }
    // Whatever is still queued must be well formed too.
    if let Some(bytes) = conn.take_transmit() {
        check_transmit(&mut model, announced, bytes);
    }
}

fn packet(conn: &mut Connection, model: &mut Model, body: Bytes, now: Instant) {
    if !model.closed && matches!(Frame::decode(body.clone()), Ok(Frame::Ping)) {
        model.pongs_due += 1;
    }
    conn.handle_packet(body, now);
}

fn ack(conn: &mut Connection, model: &mut Model, uuid: Uuid, now: Instant) {
    let before = conn.pending_acks();
    conn.ack(uuid, now);
    let takes_effect = model.identified && model.acks && !model.closed;
    assert_eq!(
        conn.pending_acks(),
        before + usize::from(takes_effect),
        "ack() effect does not match negotiation"
    );
    if takes_effect {
        model.acked.push_back(uuid);
    }
}

/// `handle_timeout` must do nothing before the connection's own deadline, and running it at
/// the deadline must make progress (the timer moves on, or the connection closes).
fn timeout(conn: &mut Connection, now: Instant) {
    let due = conn.poll_timeout();
    let early = due.is_none_or(|due| now < due);
    let before = conn.transmit_buffer().len();
    let was_closed = conn.is_closed();
    conn.handle_timeout(now);
    if early {
        assert_eq!(
            conn.transmit_buffer().len(),
            before,
            "early timeout sent bytes"
        );
        assert_eq!(conn.is_closed(), was_closed, "early timeout closed");
        return;
    }
    // A zero keepalive wait can make the new deadline equal `now`; a few rounds at most.
    for _ in 0..3 {
        match conn.poll_timeout() {
            Some(due) if due <= now => conn.handle_timeout(now),
            _ => return,
        }
    }
    panic!("timer does not advance past {now:?}");
}

fn drain_events(conn: &mut Connection, model: &mut Model) {
    while let Some(event) = conn.poll_event() {
        assert!(!model.closed, "event after Closed: {event:?}");
        match event {
            Event::Identified { identity, acks } => {
                assert!(!model.identified, "second Identified");
                assert!(!identity.is_empty() && identity.len() <= 200);
                model.identified = true;
                model.acks = acks;
            }
            Event::Message(message) => {
                assert!(model.identified, "MESSAGE before Identified");
                model.received.push_back(message.uuid);
            }
            Event::UnackedMessage(_) => {
                // Never acknowledged, so the model has nothing to track for it.
                assert!(model.identified, "UNACKED_MESSAGE before Identified");
            }
            Event::Acked(ids) => {
                assert!(model.identified, "Acked before Identified");
                assert!(model.acks, "Acked without negotiated acks");
                assert!(!ids.is_empty(), "empty Acked");
            }
            Event::Closed(_) => {
                model.closed = true;
                model.acked.clear();
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
}

/// One transmit must be whole packets of valid frames, consistent with the model.
fn check_transmit(model: &mut Model, announced: bool, bytes: Bytes) {
    let mut decoder = PacketDecoder::new(u32::MAX);
    decoder.extend_from_slice(&bytes);
    let mut frames = Vec::new();
    loop {
        match decoder.next_packet() {
            Ok(Some(body)) => match Frame::decode(body.clone()) {
                Ok(Frame::Unknown { .. }) | Err(_) => panic!("sent an invalid frame {body:?}"),
                Ok(frame) => frames.push(frame),
            },
            Ok(None) => break,
            Err(e) => panic!("transmit does not parse: {e}"),
        }
    }
    assert_eq!(decoder.buffered(), 0, "transmit ends with a partial packet");

    let mut frames = frames.into_iter().peekable();
    if !model.greeted {
        model.greeted = true;
        let mut want = vec![Frame::ProtocolVersion(PROTOCOL_VERSION)];
        if announced {
            want.push(Frame::Capabilities(CAP_ACKS | CAP_UNACKED));
        }
        want.push(Frame::Identification(Bytes::from_static(
            IDENTITY.as_bytes(),
        )));
        let got: Vec<Frame> = frames.by_ref().take(want.len()).collect();
        assert_eq!(got, want, "handshake does not open the stream");
    }
    let mut acks_seen = false;
    for frame in frames {
        match frame {
            Frame::Message(message) => {
                assert_eq!(Some(&message), model.sent.front(), "unexpected MESSAGE");
                model.sent.pop_front();
            }
            Frame::Ack(ids) => {
                assert!(model.acks, "ACK sent without negotiated acks");
                acks_seen = true;
                for id in ids {
                    assert_eq!(Some(&id), model.acked.front(), "unexpected ACK id");
                    model.acked.pop_front();
                }
            }
            Frame::Pong => {
                assert!(model.pongs_due > 0, "PONG without PING");
                model.pongs_due -= 1;
            }
            Frame::Ping | Frame::IncompatibleProtocol => {}
            other => panic!("unexpected frame after the handshake: {other:?}"),
        }
    }
    assert!(model.sent.is_empty(), "accepted messages were not sent");
    assert_eq!(model.pongs_due, 0, "PING left unanswered");
    if !model.closed {
        assert!(
            model.acked.is_empty(),
            "acks left unsent (seen: {acks_seen})"
        );
    }
}
