use super::*;
use crate::proto::MessageFrame;
use bytes::{Buf, BufMut};

fn packets(mut bytes: Bytes) -> Vec<Frame> {
    let mut frames = Vec::new();
    while bytes.len() >= 4 {
        let size = bytes.get_u32() as usize;
        frames.push(
            Frame::decode(bytes.split_to(size)).unwrap_or(Frame::Unknown { kind: 255, len: 0 }),
        );
    }
    frames
}

fn body(frame: Frame) -> Bytes {
    let mut out = BytesMut::new();
    frame.encode(&mut out);
    out.split_off(4).freeze()
}

fn message(byte: u8) -> MessageFrame {
    MessageFrame {
        uuid: [byte; 16],
        ttl: 10,
        flags: 0,
        data: Bytes::from_static(b"x"),
    }
}

fn identified_pair(now: Instant) -> Connection {
    identified_with(ConnectionConfig::new("alice"), now)
}

fn identified_with(config: ConnectionConfig, now: Instant) -> Connection {
    identified_with_caps(config, CAP_ACKS, now)
}

fn identified_with_caps(config: ConnectionConfig, caps: u32, now: Instant) -> Connection {
    let mut conn = Connection::new(config, now);
    conn.take_transmit();
    conn.handle_packet(body(Frame::ProtocolVersion(1)), now);
    conn.handle_packet(body(Frame::Capabilities(caps)), now);
    conn.handle_packet(body(Frame::Identification(Bytes::from_static(b"bob"))), now);
    conn
}

#[test]
fn handshake_frames_go_out_first_in_order() {
    let now = Instant::now();
    let mut conn = Connection::new(ConnectionConfig::new("alice"), now);
    let sent = packets(conn.take_transmit().unwrap_or_default());
    assert_eq!(
        sent,
        vec![
            Frame::ProtocolVersion(1),
            Frame::Capabilities(CAP_ACKS | CAP_UNACKED),
            Frame::Identification(Bytes::from_static(b"alice")),
        ]
    );
}

#[test]
fn unacked_messages_need_the_peers_bit_and_acks() {
    let now = Instant::now();
    let both = identified_with_caps(ConnectionConfig::new("alice"), CAP_ACKS | CAP_UNACKED, now);
    assert!(both.unacked_in_use());
    // An older Rust peer: acks, but no UNACKED_MESSAGE.
    let older = identified_with_caps(ConnectionConfig::new("alice"), CAP_ACKS, now);
    assert!(older.acks_in_use() && !older.unacked_in_use());
    // The bit without acks means nothing.
    let bit_only = identified_with_caps(ConnectionConfig::new("alice"), CAP_UNACKED, now);
    assert!(!bit_only.unacked_in_use());
    // Nor with our acks turned off.
    let ours_off = identified_with_caps(
        ConnectionConfig::new("alice").acks(false),
        CAP_ACKS | CAP_UNACKED,
        now,
    );
    assert!(!ours_off.unacked_in_use());
}

#[test]
fn an_unacked_message_is_its_own_event() {
    let now = Instant::now();
    let mut conn =
        identified_with_caps(ConnectionConfig::new("alice"), CAP_ACKS | CAP_UNACKED, now);
    let _ = conn.poll_event();
    conn.handle_packet(body(Frame::UnackedMessage(message(7))), now);
    conn.handle_packet(body(Frame::Message(message(8))), now);
    assert_eq!(conn.poll_event(), Some(Event::UnackedMessage(message(7))));
    assert_eq!(conn.poll_event(), Some(Event::Message(message(8))));
}

#[test]
fn an_unacked_message_before_identification_closes() {
    let now = Instant::now();
    let mut conn = Connection::new(ConnectionConfig::new("alice"), now);
    conn.handle_packet(body(Frame::ProtocolVersion(1)), now);
    conn.handle_packet(body(Frame::UnackedMessage(message(1))), now);
    assert_eq!(
        conn.poll_event(),
        Some(Event::Closed(ProtoError::BeforeIdentification(
            "UNACKED_MESSAGE"
        )))
    );
}

#[test]
fn python_peer_gets_no_acks() {
    let now = Instant::now();
    let mut conn = Connection::new(ConnectionConfig::new("alice"), now);
    conn.handle_packet(body(Frame::ProtocolVersion(1)), now);
    conn.handle_packet(body(Frame::Identification(Bytes::from_static(b"py"))), now);
    assert_eq!(
        conn.poll_event(),
        Some(Event::Identified {
            identity: "py".into(),
            acks: false
        })
    );
    conn.take_transmit();
    conn.ack([1; 16], now);
    assert_eq!(conn.take_transmit(), None);
}

#[test]
fn acks_are_batched_into_one_frame() {
    let now = Instant::now();
    let mut conn = identified_pair(now);
    assert_eq!(
        conn.poll_event(),
        Some(Event::Identified {
            identity: "bob".into(),
            acks: true
        })
    );
    for i in 0..3 {
        conn.handle_packet(body(Frame::Message(message(i))), now);
        conn.ack([i; 16], now);
    }
    let sent = packets(conn.take_transmit().unwrap_or_default());
    assert_eq!(sent, vec![Frame::Ack(vec![[0; 16], [1; 16], [2; 16]])]);
}

#[test]
fn delayed_acks_ride_with_outgoing_data_and_never_behind_it() {
    let now = Instant::now();
    let delay = Duration::from_millis(2);
    let mut conn = identified_with(ConnectionConfig::new("alice").ack_delay(Some(delay)), now);
    conn.poll_event();
    conn.handle_packet(body(Frame::Message(message(1))), now);
    conn.ack([1; 16], now);
    // Alone, the ack waits, and the connection asks to be woken when it is due.
    assert_eq!(conn.poll_transmit(now), None);
    assert_eq!(conn.poll_timeout(), Some(now + delay));
    // A reply queued meanwhile takes it along, behind it.
    assert_eq!(conn.send_message(&message(9)), Ok(()));
    let sent = packets(conn.poll_transmit(now).unwrap_or_default());
    assert_eq!(
        sent,
        vec![Frame::Ack(vec![[1; 16]]), Frame::Message(message(9))]
    );
    assert_eq!(conn.pending_acks(), 0);
}

#[test]
fn delayed_acks_go_out_when_due_or_when_many() {
    let now = Instant::now();
    let delay = Duration::from_millis(2);
    let mut conn = identified_with(ConnectionConfig::new("alice").ack_delay(Some(delay)), now);
    conn.poll_event();
    conn.ack([1; 16], now);
    conn.ack([2; 16], now + Duration::from_millis(1));
    assert_eq!(conn.poll_transmit(now + Duration::from_millis(1)), None);
    // Due counts from the oldest.
    let sent = packets(conn.poll_transmit(now + delay).unwrap_or_default());
    assert_eq!(sent, vec![Frame::Ack(vec![[1; 16], [2; 16]])]);
    assert_eq!(conn.poll_timeout(), conn.keepalive_deadline());

    for i in 0..ACK_FLUSH_COUNT {
        assert_eq!(conn.poll_transmit(now), None, "flushed after {i} acks");
        conn.ack([(i % 256) as u8; 16], now);
    }
    assert!(conn.poll_transmit(now).is_some());
    // A closing connection sends the young ones too.
    conn.ack([7; 16], now);
    let sent = packets(conn.take_transmit().unwrap_or_default());
    assert_eq!(sent, vec![Frame::Ack(vec![[7; 16]])]);
}

#[test]
fn acks_without_a_delay_timer_wait_for_the_owner() {
    let now = Instant::now();
    let mut conn = identified_with(ConnectionConfig::new("alice").ack_delay(None), now);
    conn.poll_event();
    conn.ack([1; 16], now);
    // No timer of their own: only keepalive wakes the owner.
    assert_eq!(conn.poll_timeout(), conn.keepalive_deadline());
    assert_eq!(conn.poll_transmit(now + Duration::from_secs(1)), None);
    let sent = packets(conn.take_transmit().unwrap_or_default());
    assert_eq!(sent, vec![Frame::Ack(vec![[1; 16]])]);
}

#[test]
fn violations_close_and_stop_processing() {
    let now = Instant::now();
    type Case = (Vec<Frame>, fn(&ProtoError) -> bool);
    let cases: Vec<Case> = vec![
        (vec![Frame::Message(message(1))], |e| {
            matches!(e, ProtoError::BeforeIdentification(_))
        }),
        (vec![Frame::ProtocolVersion(2)], |e| {
            matches!(e, ProtoError::IncompatibleVersion(2))
        }),
        (
            vec![
                Frame::Identification(Bytes::from_static(b"a")),
                Frame::Identification(Bytes::from_static(b"b")),
            ],
            |e| matches!(e, ProtoError::DuplicateIdentification),
        ),
        (vec![Frame::Identification(Bytes::new())], |e| {
            matches!(e, ProtoError::InvalidIdentity(_))
        }),
        (
            vec![Frame::Identification(Bytes::from_static(b"\xff\xfe"))],
            |e| matches!(e, ProtoError::InvalidIdentity(_)),
        ),
        (
            vec![Frame::Identification(Bytes::from(vec![b'a'; 201]))],
            |e| matches!(e, ProtoError::InvalidIdentity(_)),
        ),
    ];
    for (frames, check) in cases {
        let mut conn = Connection::new(ConnectionConfig::new("alice"), now);
        for frame in frames {
            conn.handle_packet(body(frame), now);
        }
        let closed = std::iter::from_fn(|| conn.poll_event()).find_map(|e| match e {
            Event::Closed(reason) => Some(reason),
            _ => None,
        });
        assert!(closed.as_ref().is_some_and(check), "{closed:?}");
        assert!(conn.is_closed());
        conn.handle_packet(
            body(Frame::Identification(Bytes::from_static(b"late"))),
            now,
        );
        assert_eq!(conn.poll_event(), None, "processed input after close");
    }
}

#[test]
fn wrong_version_is_answered_with_incompatible() {
    let now = Instant::now();
    let mut conn = Connection::new(ConnectionConfig::new("alice"), now);
    conn.take_transmit();
    conn.handle_packet(body(Frame::ProtocolVersion(7)), now);
    assert_eq!(
        packets(conn.take_transmit().unwrap_or_default()),
        vec![Frame::IncompatibleProtocol]
    );
}

#[test]
fn ping_is_answered_at_once() {
    let now = Instant::now();
    let mut conn = identified_pair(now);
    conn.take_transmit();
    conn.handle_packet(body(Frame::Ping), now);
    assert_eq!(
        packets(conn.take_transmit().unwrap_or_default()),
        vec![Frame::Pong]
    );
}

#[test]
fn keepalive_pings_then_closes() {
    let start = Instant::now();
    let mut conn = identified_pair(start);
    conn.take_transmit();
    let ka = Keepalive::default();
    assert_eq!(conn.poll_timeout(), Some(start + ka.interval));
    conn.handle_timeout(start + ka.interval);
    assert_eq!(
        packets(conn.take_transmit().unwrap_or_default()),
        vec![Frame::Ping]
    );
    let due = conn.poll_timeout().unwrap_or(start);
    assert_eq!(due, start + ka.interval + ka.wait);
    conn.handle_timeout(due);
    assert!(conn.is_closed());
}

#[test]
fn part_of_a_packet_counts_as_life() {
    let start = Instant::now();
    let mut conn = identified_pair(start);
    conn.take_transmit();
    let ka = Keepalive::default();
    conn.handle_timeout(start + ka.interval);
    assert_eq!(
        packets(conn.take_transmit().unwrap_or_default()),
        vec![Frame::Ping]
    );
    // No PONG (it waits behind a large packet), but bytes of that packet arrive.
    let progress = start + ka.interval + ka.wait - Duration::from_millis(10);
    conn.handle_progress(progress);
    assert_eq!(conn.poll_timeout(), Some(progress + ka.interval));
    conn.handle_timeout(start + ka.interval + ka.wait);
    assert!(!conn.is_closed());
}

#[test]
fn any_packet_counts_as_life() {
    let start = Instant::now();
    let mut conn = identified_pair(start);
    let ka = Keepalive::default();
    conn.handle_timeout(start + ka.interval);
    conn.handle_packet(
        body(Frame::Message(message(1))),
        start + ka.interval + Duration::from_millis(10),
    );
    conn.handle_timeout(start + ka.interval + ka.wait);
    assert!(!conn.is_closed());
}

#[test]
fn handshake_deadline_closes_silent_peer() {
    let start = Instant::now();
    let config = ConnectionConfig::new("alice")
        .keepalive(None)
        .handshake_timeout(Duration::from_secs(5));
    let mut conn = Connection::new(config, start);
    assert_eq!(conn.poll_timeout(), Some(start + Duration::from_secs(5)));
    conn.handle_timeout(start + Duration::from_secs(5));
    assert!(matches!(
        conn.poll_event(),
        Some(Event::Closed(ProtoError::HandshakeTimeout(_)))
    ));
}

#[test]
fn unknown_frames_are_ignored_until_they_flood() {
    let now = Instant::now();
    let mut conn = identified_pair(now);
    for _ in 0..UNKNOWN_FRAME_BUDGET {
        conn.handle_packet(body(Frame::Unknown { kind: 200, len: 3 }), now);
    }
    assert!(!conn.is_closed());
    // Budget refills over time.
    let later = now + Duration::from_secs(1);
    for _ in 0..UNKNOWN_FRAME_BUDGET {
        conn.handle_packet(body(Frame::Unknown { kind: 200, len: 3 }), later);
    }
    assert!(!conn.is_closed());
    conn.handle_packet(body(Frame::Unknown { kind: 200, len: 3 }), later);
    assert!(conn.is_closed());
}

#[test]
fn ack_without_negotiation_is_a_violation() {
    let now = Instant::now();
    let mut conn = Connection::new(ConnectionConfig::new("alice"), now);
    conn.handle_packet(body(Frame::Identification(Bytes::from_static(b"py"))), now);
    conn.handle_packet(body(Frame::Ack(vec![[1; 16]])), now);
    assert!(conn.is_closed());
}

#[test]
fn acks_decode_into_recycled_lists_and_malformed_ones_close() {
    let now = Instant::now();
    let mut conn = identified_pair(now);
    while conn.poll_event().is_some() {}
    for round in 0..3u8 {
        conn.handle_packet(body(Frame::Ack(vec![[round; 16], [round + 1; 16]])), now);
        match conn.poll_event() {
            Some(Event::Acked(ids)) => {
                assert_eq!(ids, vec![[round; 16], [round + 1; 16]]);
                conn.recycle_acked(ids);
            }
            other => panic!("expected an ACK event, got {other:?}"),
        }
    }
    // 15 bytes of ids: not a whole id.
    let mut bad = BytesMut::new();
    bad.put_u8(crate::proto::kind::ACK);
    bad.put_bytes(7, 15);
    conn.handle_packet(bad.freeze(), now);
    assert!(conn.is_closed());
    assert!(matches!(
        conn.poll_event(),
        Some(Event::Closed(ProtoError::Malformed(_)))
    ));
}
