//! The delivery contract (DESIGN.md §3): queue limits and their policies, at-least-once
//! re-sending in order after a reconnect, duplicate suppression, Python-style peers without
//! acks, TTL on the wire, replacing a connection of the same identity, keepalive, and the
//! blocking API.
//!
//! Raw peers are plain `TcpStream`s that speak the wire protocol by hand, so every ACK and
//! every field on the wire is visible to the test. Every wait is bounded.

#[path = "common/raw.rs"]
mod raw;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use raw::{BOUND, BoxError, Server, TestResult, connect, frame, hang_up, hello, server, version};
use snakemq::proto::{CAP_ACKS, Frame, Keepalive, MessageFrame, ProtoError, TTL_INFINITE, Uuid};
use snakemq::{DropReason, Error, Event, Events, Message, Messaging, QueueLimits, QueuePolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits (bounded) for the first event `f` accepts; other events are skipped.
async fn wait_for<T>(
    events: &mut Events,
    what: &str,
    mut f: impl FnMut(Event) -> Option<T>,
) -> Result<T, BoxError> {
    let wait = async {
        while let Some(event) = events.next().await {
            if let Some(found) = f(event) {
                return Ok(found);
            }
        }
        Err(format!("event stream ended waiting for {what}"))
    };
    Ok(tokio::time::timeout(BOUND, wait)
        .await
        .map_err(|_| format!("timed out waiting for {what}"))??)
}

/// The payload of the next received message.
async fn next_received(events: &mut Events) -> Result<Bytes, BoxError> {
    wait_for(events, "a message", |e| match e {
        Event::Received { message, .. } => Some(message.data),
        _ => None,
    })
    .await
}

/// The id of the next delivered message.
async fn next_delivered(events: &mut Events) -> Result<Uuid, BoxError> {
    wait_for(events, "Delivered", |e| match e {
        Event::Delivered { uuid, .. } => Some(uuid),
        _ => None,
    })
    .await
}

/// The id and reason of the next dropped message.
async fn next_dropped(events: &mut Events) -> Result<(Uuid, DropReason), BoxError> {
    wait_for(events, "Dropped", |e| match e {
        Event::Dropped { uuid, reason, .. } => Some((uuid, reason)),
        _ => None,
    })
    .await
}

/// The peer and error of the next reported error.
async fn next_error(events: &mut Events) -> Result<(Option<Arc<str>>, Arc<Error>), BoxError> {
    wait_for(events, "Error", |e| match e {
        Event::Error { peer, error, .. } => Some((peer, error)),
        _ => None,
    })
    .await
}

/// A `memory:` endpoint no other test uses.
fn memory(name: &str) -> String {
    format!("memory:delivery-{name}-{}", std::process::id())
}

fn limits(max_messages: u64, max_bytes: u64, policy: QueuePolicy) -> QueueLimits {
    QueueLimits {
        max_messages,
        max_bytes,
        policy,
    }
}

/// What a Rust peer sends first: version, CAPABILITIES(acks), identity.
fn rust_hello(identity: &str) -> Vec<u8> {
    let mut out = version(1);
    out.extend(frame(&Frame::Capabilities(CAP_ACKS)));
    out.extend(frame(&Frame::Identification(Bytes::copy_from_slice(
        identity.as_bytes(),
    ))));
    out
}

fn ack(ids: &[Uuid]) -> Vec<u8> {
    frame(&Frame::Ack(ids.to_vec()))
}

fn message_frame(uuid: Uuid, data: &str) -> Vec<u8> {
    frame(&Frame::Message(MessageFrame {
        uuid,
        ttl: TTL_INFINITE,
        flags: 0,
        data: Bytes::copy_from_slice(data.as_bytes()),
    }))
}

/// A raw peer that decodes what the server sends, frame by frame.
struct Wire {
    stream: TcpStream,
    buf: BytesMut,
}

impl Wire {
    async fn open(server: &Server, first: &[u8]) -> Result<Wire, BoxError> {
        let mut wire = Wire {
            stream: connect(server.addr).await?,
            buf: BytesMut::new(),
        };
        wire.write(first).await?;
        Ok(wire)
    }

    async fn write(&mut self, bytes: &[u8]) -> TestResult {
        tokio::time::timeout(BOUND, self.stream.write_all(bytes))
            .await
            .map_err(|_| "timed out writing")??;
        Ok(())
    }

    /// The next frame, `None` once the server closed; waits at most `bound`.
    async fn frame_within(&mut self, bound: Duration) -> Result<Option<Frame>, BoxError> {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            if let Some(prefix) = self.buf.first_chunk::<4>() {
                let size = usize::try_from(u32::from_be_bytes(*prefix))?;
                if self.buf.len() >= 4 + size {
                    self.buf.advance(4);
                    let body = self.buf.split_to(size).freeze();
                    return Ok(Some(Frame::decode(body)?));
                }
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf))
                .await
                .map_err(|_| format!("no frame within {bound:?}"))?;
            match read {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The next MESSAGE; handshake frames and pings are skipped.
    async fn message(&mut self) -> Result<MessageFrame, BoxError> {
        loop {
            match self.frame_within(BOUND).await? {
                Some(Frame::Message(m)) => return Ok(m),
                Some(Frame::Ack(ids)) => return Err(format!("unexpected ACK {ids:?}").into()),
                Some(_) => {}
                None => return Err("closed while waiting for a MESSAGE".into()),
            }
        }
    }

    /// Collects ACK frames until `count` ids arrived.
    async fn acks(&mut self, count: usize) -> Result<Vec<Uuid>, BoxError> {
        let mut ids = Vec::new();
        while ids.len() < count {
            match self.frame_within(BOUND).await? {
                Some(Frame::Ack(more)) => ids.extend(more),
                Some(Frame::Message(m)) => return Err(format!("unexpected MESSAGE {m:?}").into()),
                Some(_) => {}
                None => return Err(format!("closed after {} of {count} acks", ids.len()).into()),
            }
        }
        Ok(ids)
    }

    /// Reads until the server closes (bounded); returns the frames seen on the way.
    async fn closed(&mut self) -> Result<Vec<Frame>, BoxError> {
        let mut seen = Vec::new();
        while let Some(frame) = self.frame_within(BOUND).await? {
            seen.push(frame);
        }
        Ok(seen)
    }
}

fn data(m: &MessageFrame) -> String {
    String::from_utf8_lossy(&m.data).into_owned()
}

// ---------------------------------------------------------------- 1. queue limits

#[tokio::test]
async fn error_policy_refuses_sends_beyond_the_message_and_byte_limits() -> TestResult {
    let alice = Messaging::builder("alice")
        .queue_limits(limits(3, u64::MAX, QueuePolicy::Error))
        .start()
        .await?;
    for i in 0..3 {
        alice.send("bob", format!("m{i}").into_bytes()).await?;
    }
    let refused = alice.send("bob", "m3").await;
    assert!(
        matches!(&refused, Err(Error::QueueFull { peer, messages: 3, bytes: 6 }) if peer == "bob"),
        "{refused:?}"
    );
    assert_eq!(alice.queue_stats("bob")?.messages, 3);
    // Other peers have their own queues.
    alice.send("carol", "c0").await?;

    let bytes = Messaging::builder("bytes")
        .queue_limits(limits(u64::MAX, 10, QueuePolicy::Error))
        .start()
        .await?;
    bytes.send("bob", "123456").await?;
    let refused = bytes.send("bob", "abcdef").await;
    assert!(
        matches!(
            &refused,
            Err(Error::QueueFull {
                messages: 1,
                bytes: 6,
                ..
            })
        ),
        "{refused:?}"
    );
    // Exactly at the limit still fits.
    bytes.send("bob", "abcd").await?;
    assert_eq!(bytes.queue_stats("bob")?.bytes, 10);
    assert!(bytes.send("bob", "x").await.is_err());
    assert_eq!(bytes.stats().dropped, 0, "a refused send is not a drop");
    Ok(())
}

#[tokio::test]
async fn drop_oldest_policy_reports_the_oldest_and_keeps_the_newest() -> TestResult {
    let addr = memory("drop-oldest");
    let alice = Messaging::builder("alice")
        .listen(&addr)
        .queue_limits(limits(3, u64::MAX, QueuePolicy::DropOldest))
        .start()
        .await?;
    let mut events = alice.events();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(alice.send("bob", format!("m{i}").into_bytes()).await?);
    }
    for expected in ids.iter().take(2) {
        let (uuid, reason) = next_dropped(&mut events).await?;
        assert_eq!((uuid, reason), (*expected, DropReason::QueueFull));
    }
    assert_eq!(alice.queue_stats("bob")?.messages, 3);
    assert_eq!(alice.stats().dropped, 2);

    let bob = Messaging::builder("bob").connect(&addr).start().await?;
    let mut bob_events = bob.events();
    for i in 2..5 {
        assert_eq!(next_received(&mut bob_events).await?, format!("m{i}"));
    }
    bob.shutdown().await;
    alice.shutdown().await;
    Ok(())
}

/// Dropping one old message is not always enough room for a larger new one: the byte limit
/// must still hold afterwards.
#[tokio::test]
async fn drop_oldest_policy_keeps_the_byte_limit() -> TestResult {
    let alice = Messaging::builder("alice")
        .queue_limits(limits(u64::MAX, 10, QueuePolicy::DropOldest))
        .start()
        .await?;
    alice.send("bob", "aaaaa").await?;
    alice.send("bob", "bbbbb").await?;
    alice.send("bob", "cccccccccc").await?;
    let stats = alice.queue_stats("bob")?;
    assert!(
        stats.bytes <= 10,
        "queue holds {} bytes, limit 10",
        stats.bytes
    );
    Ok(())
}

#[tokio::test]
async fn wait_policy_blocks_a_send_until_the_peer_drains_the_queue() -> TestResult {
    for (name, limits, payloads) in [
        (
            "wait-messages",
            limits(2, u64::MAX, QueuePolicy::Wait),
            ["w0", "w1", "w2"],
        ),
        (
            "wait-bytes",
            limits(u64::MAX, 10, QueuePolicy::Wait),
            ["12345", "67890", "abcde"],
        ),
    ] {
        let addr = memory(name);
        let alice = Messaging::builder("alice")
            .listen(&addr)
            .queue_limits(limits)
            .start()
            .await?;
        alice.send("bob", payloads[0]).await?;
        alice.send("bob", payloads[1]).await?;
        let mut blocked = tokio::spawn({
            let alice = alice.clone();
            let last = payloads[2];
            async move { alice.send("bob", last).await }
        });
        // Absence can only be shown by waiting a while.
        let early = tokio::time::timeout(Duration::from_millis(300), &mut blocked).await;
        assert!(early.is_err(), "{name}: send did not wait: {early:?}");
        assert_eq!(alice.queue_stats("bob")?.messages, 2, "{name}");

        let bob = Messaging::builder("bob").connect(&addr).start().await?;
        let mut bob_events = bob.events();
        for payload in &payloads[..2] {
            assert_eq!(next_received(&mut bob_events).await?, *payload, "{name}");
        }
        // bob is done with them: their acknowledgements make room in alice's queue.
        bob_events.confirm();
        tokio::time::timeout(BOUND, blocked)
            .await
            .map_err(|_| format!("{name}: send still blocked after the peer drained"))???;
        assert_eq!(next_received(&mut bob_events).await?, payloads[2], "{name}");
        bob.shutdown().await;
        alice.shutdown().await;
    }
    Ok(())
}

// ------------------------------------------------- 2. re-send after reconnect, in order

#[tokio::test]
async fn unacknowledged_messages_are_resent_in_order_after_a_reconnect() -> TestResult {
    let mut server = server(|b| b.keepalive(None)).await?;
    let mut ids = Vec::new();
    for i in 1..=10 {
        ids.push(
            server
                .messaging
                .send("peer", format!("m{i}").into_bytes())
                .await?,
        );
    }
    let mut wire = Wire::open(&server, &rust_hello("peer")).await?;
    let mut got = Vec::new();
    for _ in 0..10 {
        got.push(wire.message().await?);
    }
    let got_ids: Vec<Uuid> = got.iter().map(|m| m.uuid).collect();
    assert_eq!(got_ids, ids, "all ten, in order");
    let texts: Vec<String> = got.iter().map(data).collect();
    let expected: Vec<String> = (1..=10).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, expected);
    let (acked, rest) = ids.split_at(4);
    wire.write(&ack(acked)).await?;
    hang_up(wire.stream).await?;

    let mut delivered = Vec::new();
    wait_for(&mut server.events, "Disconnected", |e| match e {
        Event::Delivered { uuid, .. } => {
            delivered.push(uuid);
            None
        }
        Event::Disconnected { .. } => Some(()),
        _ => None,
    })
    .await?;
    assert_eq!(delivered, acked, "Delivered for exactly the acked four");
    assert_eq!(server.messaging.queue_stats("peer")?.messages, 6);
    assert_eq!(server.messaging.stats().delivered, 4);

    let peer = Messaging::builder("peer")
        .connect(&server.addr.to_string())
        .start()
        .await?;
    let mut peer_events = peer.events();
    for i in 5..=10 {
        assert_eq!(next_received(&mut peer_events).await?, format!("m{i}"));
    }
    peer_events.confirm();
    for expected in rest {
        let uuid = next_delivered(&mut server.events).await?;
        assert_eq!(uuid, *expected);
    }
    assert_eq!(server.messaging.queue_stats("peer")?.messages, 0);
    let stats = peer.stats();
    assert_eq!((stats.received, stats.duplicates), (6, 0));
    peer.shutdown().await;
    Ok(())
}

// ---------------------------------------------------------- 3. duplicate suppression

#[tokio::test]
async fn duplicates_are_delivered_once_and_every_copy_is_acknowledged() -> TestResult {
    let mut server = server(|b| b.keepalive(None)).await?;
    let dup = [7u8; 16];
    let mut wire = Wire::open(&server, &rust_hello("dup")).await?;
    let mut twice = message_frame(dup, "once");
    twice.extend(message_frame(dup, "once"));
    wire.write(&twice).await?;
    let first = wait_for(&mut server.events, "Received", |e| match e {
        Event::Received { from, message } => Some((from, message)),
        _ => None,
    })
    .await?;
    assert_eq!((&*first.0, first.1.uuid), ("dup", dup));
    // One acknowledgement covers both copies, once the application is done with it.
    server.events.confirm();
    assert_eq!(wire.acks(1).await?, vec![dup]);
    hang_up(wire.stream).await?;
    wait_for(&mut server.events, "Disconnected", |e| {
        matches!(e, Event::Disconnected { .. }).then_some(())
    })
    .await?;

    // The window outlives the connection: a re-send after a reconnect is a duplicate too.
    let fresh = [8u8; 16];
    let mut wire = Wire::open(&server, &rust_hello("dup")).await?;
    let mut again = message_frame(dup, "once");
    again.extend(message_frame(fresh, "new"));
    wire.write(&again).await?;
    let mut received = Vec::new();
    let new = wait_for(&mut server.events, "Received", |e| match e {
        Event::Received { message, .. } => Some(message.uuid),
        _ => None,
    })
    .await?;
    received.push(new);
    server.events.confirm();
    assert_eq!(wire.acks(2).await?, vec![dup, fresh]);
    while let Some(event) = server.events.try_next() {
        if let Event::Received { message, .. } = event {
            received.push(message.uuid);
        }
    }
    assert_eq!(
        received,
        vec![fresh],
        "only the new message reaches the application"
    );
    let stats = server.messaging.stats();
    assert_eq!((stats.received, stats.duplicates), (2, 2));
    hang_up(wire.stream).await
}

// ------------------------------------------------------- 4. peers without acks (Python)

#[tokio::test]
async fn python_style_peer_gets_at_most_once_and_may_not_send_acks() -> TestResult {
    let mut server = server(|b| b.keepalive(None)).await?;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            server
                .messaging
                .send("py", format!("p{i}").into_bytes())
                .await?,
        );
    }
    let mut wire = Wire::open(&server, &hello("py")).await?;
    for (i, id) in ids.iter().enumerate() {
        let m = wire.message().await?;
        assert_eq!((m.uuid, data(&m)), (*id, format!("p{i}")));
    }
    let acks = wait_for(&mut server.events, "Connected", |e| match e {
        Event::Connected { acks, .. } => Some(acks),
        _ => None,
    })
    .await?;
    assert!(!acks, "no CAPABILITIES from the peer: no acks");
    for id in &ids {
        let uuid = next_delivered(&mut server.events).await?;
        assert_eq!(uuid, *id, "delivered on write, in order, without any ACK");
    }
    assert_eq!(server.messaging.queue_stats("py")?.messages, 0);
    assert_eq!(server.messaging.stats().delivered, 3);

    wire.write(&ack(&ids)).await?;
    wire.closed().await?;
    let error = next_error(&mut server.events).await?;
    assert_eq!(error.0.as_deref(), Some("py"));
    assert!(
        matches!(&*error.1, Error::Protocol(ProtoError::UnexpectedAck)),
        "{:?}",
        error.1
    );
    Ok(())
}

// ------------------------------------------------------------------------- 5. TTL

#[tokio::test]
async fn ttl_goes_on_the_wire_as_remaining_seconds() -> TestResult {
    let mut server = server(|b| b.keepalive(None)).await?;
    let mut wire = Wire::open(&server, &rust_hello("ttl")).await?;
    wait_for(&mut server.events, "Connected", |e| {
        matches!(e, Event::Connected { .. }).then_some(())
    })
    .await?;
    let m = &server.messaging;
    let ten = m
        .send(
            "ttl",
            Message::new("ten").ttl(Duration::from_secs(10)).flags(5),
        )
        .await?;
    let forever = m.send("ttl", Message::new("forever")).await?;
    let now_only = m
        .send("ttl", Message::new("now").ttl(Duration::ZERO))
        .await?;
    let got = [
        wire.message().await?,
        wire.message().await?,
        wire.message().await?,
    ];
    assert_eq!(got[0].uuid, ten);
    assert!(matches!(got[0].ttl, 9 | 10), "ttl {}", got[0].ttl);
    assert_eq!(got[0].flags, 5);
    assert_eq!((got[1].uuid, got[1].ttl), (forever, TTL_INFINITE));
    assert_eq!(
        (got[2].uuid, got[2].ttl),
        (now_only, 0),
        "ttl 0 to a connected peer"
    );
    wire.write(&ack(&[ten, forever, now_only])).await?;
    for _ in 0..3 {
        next_delivered(&mut server.events).await?;
    }

    // ttl 0 means "while connected": sent but not acknowledged when the peer goes away,
    // it is dropped and reported, not kept for the next connection.
    let lost = m
        .send("ttl", Message::new("lost").ttl(Duration::ZERO))
        .await?;
    assert_eq!(wire.message().await?.uuid, lost);
    hang_up(wire.stream).await?;
    let dropped = next_dropped(&mut server.events).await?;
    assert_eq!(dropped, (lost, DropReason::NotConnected));
    assert_eq!(m.queue_stats("ttl")?.messages, 0);
    Ok(())
}

// ------------------------------------------------------------ 6. replacing a peer

#[tokio::test]
async fn replacing_connection_takes_over_the_unacknowledged_queue() -> TestResult {
    let mut server = server(|b| b.keepalive(None).replace_duplicate_identities(true)).await?;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            server
                .messaging
                .send("twin", format!("t{i}").into_bytes())
                .await?,
        );
    }
    let mut first = Wire::open(&server, &rust_hello("twin")).await?;
    for id in &ids {
        assert_eq!(first.message().await?.uuid, *id);
    }
    // Received by the first connection, never acknowledged.
    let mut second = Wire::open(&server, &rust_hello("twin")).await?;
    let leftovers = first.closed().await?;
    assert!(
        !leftovers.iter().any(|f| matches!(f, Frame::Message(_))),
        "the replaced connection got more messages: {leftovers:?}"
    );
    for (i, id) in ids.iter().enumerate() {
        let m = second.message().await?;
        assert_eq!((m.uuid, data(&m)), (*id, format!("t{i}")));
    }
    second.write(&ack(&ids)).await?;
    let mut connected = 0;
    let mut delivered = Vec::new();
    let mut errors = Vec::new();
    wait_for(&mut server.events, "three Delivered", |e| {
        match e {
            Event::Connected { .. } => connected += 1,
            Event::Delivered { uuid, .. } => delivered.push(uuid),
            Event::Error { error, .. } => errors.push(error),
            _ => {}
        }
        (delivered.len() == 3 || !errors.is_empty()).then_some(())
    })
    .await?;
    assert!(
        errors.is_empty(),
        "a replaced connection is no error: {errors:?}"
    );
    assert_eq!(connected, 2);
    assert_eq!(delivered, ids);
    assert_eq!(server.messaging.queue_stats("twin")?.messages, 0);
    assert_eq!(server.messaging.connected_peers(), vec!["twin".to_owned()]);
    hang_up(second.stream).await
}

// ---------------------------------------------------------------------- 7. keepalive

#[tokio::test]
async fn keepalive_closes_a_silent_peer_and_spares_a_live_one() -> TestResult {
    let keepalive = Keepalive {
        interval: Duration::from_millis(200),
        wait: Duration::from_millis(300),
    };
    let mut server = server(|b| b.keepalive(Some(keepalive))).await?;

    // A live peer answers every PING, in the background for the whole test.
    let mut live = Wire::open(&server, &rust_hello("live")).await?;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let answering = tokio::spawn(async move {
        let mut pings = 0u32;
        loop {
            tokio::select! {
                _ = &mut stopped => return Ok::<_, BoxError>((live, pings)),
                frame = live.frame_within(BOUND) => match frame? {
                    Some(Frame::Ping) => {
                        pings += 1;
                        live.write(&raw::frame(&Frame::Pong)).await?;
                    }
                    Some(_) => {}
                    None => return Err("a peer answering pings was closed".into()),
                },
            }
        }
    });

    let started = tokio::time::Instant::now();
    let mut silent = Wire::open(&server, &rust_hello("silent")).await?;
    let seen = silent.closed().await?;
    let elapsed = started.elapsed();
    assert!(
        seen.contains(&Frame::Ping),
        "no PING before the close: {seen:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(5),
        "closed after {elapsed:?}, expected about 500 ms"
    );
    let (peer, error) = next_error(&mut server.events).await?;
    assert_eq!(peer.as_deref(), Some("silent"), "{error}");
    assert!(
        matches!(&*error, Error::Protocol(ProtoError::KeepaliveTimeout(w)) if *w == keepalive.wait),
        "{error:?}"
    );
    // Several keepalive rounds passed; the live peer is still there.
    assert_eq!(server.messaging.connected_peers(), vec!["live".to_owned()]);
    let _ = stop.send(());
    let (live, pings) = tokio::time::timeout(BOUND, answering).await???;
    assert!(pings >= 2, "the live peer was pinged only {pings} times");
    hang_up(live.stream).await
}

// ---------------------------------------------------------------- 8. blocking API

#[cfg(feature = "blocking")]
#[test]
fn blocking_api_sends_and_receives_from_plain_threads() -> TestResult {
    use snakemq::MessagingBuilder;
    use snakemq::blocking::Messaging as Blocking;

    let addr = memory("blocking");
    let bob = Blocking::start(MessagingBuilder::new_blocking("bob").listen(&addr))?;
    let alice = Blocking::start(MessagingBuilder::new_blocking("alice").connect(&addr))?;
    let mut bob_events = bob.events();
    let sender = std::thread::spawn(move || -> Result<usize, BoxError> {
        let mut events = alice.events();
        for i in 0..20 {
            alice.send("bob", format!("b{i}").into_bytes())?;
        }
        // The reply and the acknowledgements travel separately: either may come first.
        let mut delivered = 0;
        let mut reply = None;
        while delivered < 20 || reply.is_none() {
            match events.recv_timeout(BOUND) {
                Some(Event::Delivered { .. }) => delivered += 1,
                Some(Event::Received { message, .. }) => reply = Some(message.data),
                Some(_) => {}
                None => {
                    return Err(format!("{delivered} delivered, reply {reply:?}").into());
                }
            }
        }
        let reply = reply.unwrap_or_default();
        assert_eq!(reply, "done");
        alice.shutdown();
        Ok(delivered)
    });
    let mut got = Vec::new();
    while got.len() < 20 {
        match bob_events.recv_timeout(BOUND) {
            Some(Event::Received { message, .. }) => got.push(message.data),
            Some(_) => {}
            None => return Err(format!("only {} received", got.len()).into()),
        }
    }
    let expected: Vec<Bytes> = (0..20).map(|i| Bytes::from(format!("b{i}"))).collect();
    assert_eq!(got, expected);
    // Done with them: acknowledged now, so alice sees them delivered.
    bob_events.confirm();
    bob.send("alice", "done")?;
    let delivered = sender.join().map_err(|_| "sender thread panicked")??;
    assert_eq!(delivered, 20);
    bob.shutdown();
    Ok(())
}
