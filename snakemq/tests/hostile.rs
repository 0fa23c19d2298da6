//! Hostile peers against a real listener on 127.0.0.1: oversized and empty packets, garbage,
//! protocol violations, floods and silent peers, each from a raw TCP socket.
//!
//! For every attack the raw socket must see the connection closed within a bound, the server
//! must report an `Event::Error` for that very connection (with the meaningful variant), no
//! message from the attacker may reach the application, and the listener must keep serving
//! well-behaved peers, during the attacks and after them.

#[path = "common/raw.rs"]
mod raw;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use raw::{
    BoxError, Reported, Server, TestResult, assert_open, assert_serves, connect, expect_connected,
    expect_error, expect_received, frame, frames, garbage, hang_up, hello, ident, message, packet,
    read_until_closed, send, server, version,
};
use snakemq::link::{LinkConfig, LinkError};
use snakemq::proto::{Frame, Keepalive, ProtoError};
use snakemq::{Error, Event, Messaging};

/// Sends `bytes` on a new raw connection, then checks that the server closes it and reports
/// an error matching `expected` for that connection. Returns what the server sent and the
/// report.
async fn attack(
    server: &mut Server,
    bytes: &[u8],
    what: &str,
    expected: impl Fn(&Error) -> bool,
) -> Result<(Vec<u8>, Reported), BoxError> {
    let mut stream = connect(server.addr).await?;
    let local = stream.local_addr()?;
    send(&mut stream, bytes).await?;
    let (received, _how) = read_until_closed(&mut stream).await?;
    let reported = expect_error(&mut server.events, what, expected).await?;
    let conn = reported.conn.as_ref().and_then(|c| c.remote_addr);
    assert_eq!(
        conn,
        Some(local),
        "{what}: error reported for another connection"
    );
    Ok((received, reported))
}

fn is_proto(error: &Error, want: impl Fn(&ProtoError) -> bool) -> bool {
    matches!(error, Error::Protocol(e) if want(e))
}

fn too_large(error: &Error, size: u64, max: u32) -> bool {
    matches!(error, Error::Link(LinkError::PacketTooLarge { size: s, max: m }) if *s == size && *m == max)
}

fn small_server(builder: snakemq::MessagingBuilder) -> snakemq::MessagingBuilder {
    builder.link_config(LinkConfig::default().max_packet_size(1024))
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[tokio::test]
async fn oversized_length_prefix_closes_the_connection() -> TestResult {
    let mut server = server(small_server).await?;
    for (n, prefix) in [0xFFFF_FFFF_u32, 1025].into_iter().enumerate() {
        // Before any handshake: the prefix alone is refused (a few body bytes follow).
        let bytes = cat(&[&prefix.to_be_bytes(), b"\x03abc"]);
        let what = format!("PacketTooLarge({prefix}) before the handshake");
        let (_, reported) = attack(&mut server, &bytes, &what, |e| {
            too_large(e, u64::from(prefix), 1024)
        })
        .await?;
        assert!(reported.peer.is_none());

        // After identifying (seen by the server first): same, and the report names the peer.
        let name = format!("big{n}");
        let mut stream = connect(server.addr).await?;
        send(&mut stream, &hello(&name)).await?;
        expect_connected(&mut server.events, &name).await?;
        send(&mut stream, &cat(&[&prefix.to_be_bytes(), b"\x03abc"])).await?;
        read_until_closed(&mut stream).await?;
        let what = format!("PacketTooLarge({prefix}) after identification");
        let reported = expect_error(&mut server.events, &what, |e| {
            too_large(e, u64::from(prefix), 1024)
        })
        .await?;
        assert_eq!(reported.peer.as_deref(), Some(name.as_str()));
    }
    assert_serves(&mut server, "oversized").await
}

/// Packets that arrived complete before an oversized prefix, in the same read, are valid
/// and should count as they do before a protocol violation: the peer identified, its message
/// is delivered, the error names it.
#[tokio::test]
async fn packets_before_an_oversized_prefix_in_the_same_read_still_count() -> TestResult {
    let mut server = server(small_server).await?;
    let bytes = cat(&[
        &hello("early"),
        &message(1, b"before"),
        &u32::MAX.to_be_bytes(),
    ]);
    let mut stream = connect(server.addr).await?;
    send(&mut stream, &bytes).await?;
    read_until_closed(&mut stream).await?;
    assert_eq!(
        expect_received(&mut server.events, "early").await?,
        "before"
    );
    let reported = expect_error(&mut server.events, "PacketTooLarge", |e| {
        too_large(e, u64::from(u32::MAX), 1024)
    })
    .await?;
    assert_eq!(reported.peer.as_deref(), Some("early"));
    assert_serves(&mut server, "early").await
}

#[tokio::test]
async fn packet_of_exactly_the_maximum_is_accepted() -> TestResult {
    let mut server = server(small_server).await?;
    let mut stream = connect(server.addr).await?;
    // 1 type byte + 24 header bytes + 999 data bytes = 1024, the configured maximum.
    let data = vec![b'x'; 999];
    send(&mut stream, &cat(&[&hello("edge"), &message(1, &data)])).await?;
    assert_eq!(
        expect_received(&mut server.events, "edge").await?,
        Bytes::from(data)
    );
    send(&mut stream, &1025u32.to_be_bytes()).await?;
    read_until_closed(&mut stream).await?;
    let reported = expect_error(&mut server.events, "PacketTooLarge(1025)", |e| {
        too_large(e, 1025, 1024)
    })
    .await?;
    assert_eq!(reported.peer.as_deref(), Some("edge"));
    assert_serves(&mut server, "edge").await
}

#[tokio::test]
async fn announced_large_packet_then_stall_is_closed_by_the_handshake_deadline() -> TestResult {
    // Default maximum (64 MiB): a 60 MiB announcement is legal, the peer just never sends it.
    // The decoder only buffers what arrives; the handshake deadline ends the connection.
    let mut server = server(|b| b).await?;
    let started = tokio::time::Instant::now();
    let bytes = cat(&[&(60u32 << 20).to_be_bytes(), &[3u8; 100]]);
    attack(&mut server, &bytes, "HandshakeTimeout", |e| {
        is_proto(e, |p| matches!(p, ProtoError::HandshakeTimeout(_)))
    })
    .await?;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the deadline"
    );
    assert_serves(&mut server, "stall").await
}

#[tokio::test]
async fn identified_peer_stalling_mid_packet_is_closed_by_keepalive() -> TestResult {
    let keepalive = Keepalive {
        interval: Duration::from_millis(300),
        wait: Duration::from_millis(300),
    };
    let mut server = server(|b| b.keepalive(Some(keepalive))).await?;
    let bytes = cat(&[&hello("staller"), &(60u32 << 20).to_be_bytes(), &[3u8; 100]]);
    let (sent, reported) = attack(&mut server, &bytes, "KeepaliveTimeout", |e| {
        is_proto(e, |p| matches!(p, ProtoError::KeepaliveTimeout(_)))
    })
    .await?;
    assert_eq!(reported.peer.as_deref(), Some("staller"));
    assert!(
        frames(&sent)?.contains(&Frame::Ping),
        "no PING before giving up"
    );
    assert_serves(&mut server, "staller").await
}

#[tokio::test]
async fn zero_length_packet_closes_the_connection() -> TestResult {
    let mut server = server(|b| b).await?;
    let empty = 0u32.to_be_bytes();
    attack(&mut server, &empty, "EmptyPacket", |e| {
        is_proto(e, |p| *p == ProtoError::EmptyPacket)
    })
    .await?;
    let bytes = cat(&[&hello("zero"), &empty, &message(1, b"after")]);
    let (_, reported) = attack(&mut server, &bytes, "EmptyPacket", |e| {
        is_proto(e, |p| *p == ProtoError::EmptyPacket)
    })
    .await?;
    assert_eq!(reported.peer.as_deref(), Some("zero"));
    assert_serves(&mut server, "zero").await
}

#[tokio::test]
async fn random_garbage_closes_the_connection() -> TestResult {
    for (max, tag) in [(None, "default-max"), (Some(1024), "small-max")] {
        let mut server = server(|b| match max {
            Some(max) => b.link_config(LinkConfig::default().max_packet_size(max)),
            None => b,
        })
        .await?;
        for seed in [1u64, 0x5eed, 0xdead_beef] {
            let blob = garbage(seed, 64 * 1024);
            // What the garbage means depends on its first bytes; any error is a correct
            // answer, silence or a delivery is not.
            attack(
                &mut server,
                &blob,
                &format!("an error (seed {seed})"),
                |_| true,
            )
            .await?;
            let bytes = cat(&[&hello(&format!("g{seed}")), &blob]);
            attack(
                &mut server,
                &bytes,
                &format!("an error (seed {seed}, after hello)"),
                |_| true,
            )
            .await?;
        }
        assert_serves(&mut server, tag).await?;
    }
    Ok(())
}

#[tokio::test]
async fn message_or_ack_before_identification_closes_the_connection() -> TestResult {
    let mut server = server(|b| b).await?;
    let before = |kind: &'static str| {
        move |e: &Error| is_proto(e, |p| *p == ProtoError::BeforeIdentification(kind))
    };
    let msg = message(1, b"sneaky");
    attack(
        &mut server,
        &cat(&[&version(1), &msg]),
        "MESSAGE before",
        before("MESSAGE"),
    )
    .await?;
    // Without even a version (which Python tolerates): still refused.
    attack(&mut server, &msg, "MESSAGE before", before("MESSAGE")).await?;
    // Identification after the message is too late: nothing is processed after the close.
    attack(
        &mut server,
        &cat(&[&msg, &ident(b"late")]),
        "MESSAGE before",
        before("MESSAGE"),
    )
    .await?;
    let ack = frame(&Frame::Ack(vec![[7; 16]]));
    attack(
        &mut server,
        &cat(&[&version(1), &ack]),
        "ACK before",
        before("ACK"),
    )
    .await?;
    assert_serves(&mut server, "before-ident").await
}

#[tokio::test]
async fn wrong_version_is_answered_with_incompatible_protocol() -> TestResult {
    let mut server = server(|b| b).await?;
    for bad in [2u32, 0, u32::MAX] {
        let bytes = cat(&[&version(bad), &ident(b"future"), &message(1, b"x")]);
        let (sent, _) = attack(&mut server, &bytes, "IncompatibleVersion", |e| {
            is_proto(e, |p| *p == ProtoError::IncompatibleVersion(bad))
        })
        .await?;
        assert!(
            sent.ends_with(&[0, 0, 0, 1, 1]),
            "version {bad}: INCOMPATIBLE_PROTOCOL not the last thing before the close: {sent:02x?}"
        );
        assert_eq!(frames(&sent)?.last(), Some(&Frame::IncompatibleProtocol));
    }
    // A version payload that is not 4 bytes is a broken frame: closed, no answer.
    let (sent, _) = attack(&mut server, &packet(&[0, 0, 0, 1]), "Malformed", |e| {
        is_proto(e, |p| matches!(p, ProtoError::Malformed(_)))
    })
    .await?;
    assert!(!frames(&sent)?.contains(&Frame::IncompatibleProtocol));
    assert_serves(&mut server, "version").await
}

#[tokio::test]
async fn invalid_identities_close_the_connection() -> TestResult {
    let mut server = server(|b| b).await?;
    let long = vec![b'a'; 300];
    let just_over = vec![b'a'; 201];
    let cases: [(&str, &[u8]); 5] = [
        ("invalid UTF-8", &[0xff, 0xfe, 0x80]),
        ("truncated UTF-8", &[b'a', 0xc3]),
        ("empty", &[]),
        ("300 bytes", &long),
        ("201 bytes", &just_over),
    ];
    for (what, identity) in cases {
        let bytes = cat(&[&version(1), &ident(identity), &message(1, b"x")]);
        let (_, reported) = attack(&mut server, &bytes, what, |e| {
            is_proto(e, |p| matches!(p, ProtoError::InvalidIdentity(_)))
        })
        .await?;
        assert!(reported.peer.is_none(), "{what}");
    }
    // The limit itself is fine: 200 bytes of two-byte characters.
    let edge = "é".repeat(100);
    let mut stream = connect(server.addr).await?;
    send(&mut stream, &cat(&[&hello(&edge), &message(1, b"ok")])).await?;
    assert_eq!(expect_received(&mut server.events, &edge).await?, "ok");
    hang_up(stream).await?;
    assert_serves(&mut server, "identities").await
}

#[tokio::test]
async fn second_identification_closes_the_connection() -> TestResult {
    let mut server = server(|b| b).await?;
    for (first, second) in [("once", "twice"), ("same", "same")] {
        let bytes = cat(&[&hello(first), &ident(second.as_bytes()), &message(1, b"x")]);
        let (_, reported) = attack(&mut server, &bytes, "DuplicateIdentification", |e| {
            is_proto(e, |p| *p == ProtoError::DuplicateIdentification)
        })
        .await?;
        assert_eq!(reported.peer.as_deref(), Some(first));
    }
    assert_serves(&mut server, "reident").await
}

#[tokio::test]
async fn duplicate_identity_is_refused_and_the_first_connection_survives() -> TestResult {
    let mut server = server(|b| b).await?;
    let mut first = connect(server.addr).await?;
    send(&mut first, &hello("twin")).await?;
    expect_connected(&mut server.events, "twin").await?;

    let bytes = cat(&[&hello("twin"), &message(2, b"impostor")]);
    let (_, reported) = attack(
        &mut server,
        &bytes,
        "DuplicateIdentity",
        |e| matches!(e, Error::DuplicateIdentity(name) if name == "twin"),
    )
    .await?;
    assert!(
        reported.peer.is_none(),
        "the refused connection never became the peer"
    );
    assert_eq!(server.messaging.connected_peers(), vec!["twin".to_owned()]);

    assert_open(&mut first, Duration::from_millis(200)).await?;
    send(&mut first, &message(1, b"original")).await?;
    assert_eq!(
        expect_received(&mut server.events, "twin").await?,
        "original"
    );
    hang_up(first).await?;
    assert_serves(&mut server, "twin").await
}

#[tokio::test]
async fn flood_of_unknown_frame_types_closes_the_connection() -> TestResult {
    let mut server = server(|b| b).await?;
    let unknown = frame(&Frame::Unknown { kind: 200, len: 3 });
    let flood = unknown.repeat(5000);
    attack(&mut server, &flood, "UnknownFlood", |e| {
        is_proto(e, |p| *p == ProtoError::UnknownFlood)
    })
    .await?;
    let bytes = cat(&[&hello("flooder"), &flood, &message(1, b"after")]);
    let (_, reported) = attack(&mut server, &bytes, "UnknownFlood", |e| {
        is_proto(e, |p| *p == ProtoError::UnknownFlood)
    })
    .await?;
    assert_eq!(reported.peer.as_deref(), Some("flooder"));

    // A few unknown frames are ignored (that is what makes extensions safe).
    let mut stream = connect(server.addr).await?;
    let bytes = cat(&[&hello("polite"), &unknown.repeat(10), &message(1, b"fine")]);
    send(&mut stream, &bytes).await?;
    assert_eq!(expect_received(&mut server.events, "polite").await?, "fine");
    hang_up(stream).await?;
    assert_serves(&mut server, "flood").await
}

#[tokio::test]
async fn silent_peer_is_closed_by_the_handshake_deadline() -> TestResult {
    let mut server = server(|b| b.handshake_timeout(Duration::from_millis(300))).await?;
    let timeout = |e: &Error| is_proto(e, |p| matches!(p, ProtoError::HandshakeTimeout(_)));
    for (what, bytes) in [("nothing", Vec::new()), ("version only", version(1))] {
        let started = tokio::time::Instant::now();
        let (sent, _) = attack(&mut server, &bytes, what, timeout).await?;
        assert!(started.elapsed() >= Duration::from_millis(250), "{what}");
        // The server greeted us before giving up: version first.
        assert_eq!(frames(&sent)?.first(), Some(&Frame::ProtocolVersion(1)));
    }
    assert_serves(&mut server, "silent").await
}

/// The attacks of the other tests, as byte blobs, for the concurrent test.
fn all_attacks() -> Vec<(&'static str, Vec<u8>)> {
    let flood = frame(&Frame::Unknown { kind: 200, len: 0 }).repeat(5000);
    vec![
        ("prefix 0xFFFFFFFF", 0xFFFF_FFFF_u32.to_be_bytes().to_vec()),
        ("prefix max+1", cat(&[&hello("a1"), &1025u32.to_be_bytes()])),
        ("empty packet", 0u32.to_be_bytes().to_vec()),
        ("garbage", garbage(42, 64 * 1024)),
        ("message first", cat(&[&version(1), &message(9, b"x")])),
        ("version 2", cat(&[&version(2), &ident(b"a2")])),
        ("bad utf-8", cat(&[&version(1), &ident(&[0xff])])),
        ("empty identity", cat(&[&version(1), &ident(b"")])),
        ("long identity", cat(&[&version(1), &ident(&[b'z'; 300])])),
        ("two idents", cat(&[&hello("a3"), &ident(b"a4")])),
        ("flood", cat(&[&hello("a5"), &flood])),
        ("silent", Vec::new()),
        ("stall", cat(&[&(1000u32).to_be_bytes(), b"\x03"])),
    ]
}

async fn run_attack(addr: SocketAddr, bytes: Vec<u8>) -> Result<SocketAddr, BoxError> {
    let mut stream = connect(addr).await?;
    let local = stream.local_addr()?;
    send(&mut stream, &bytes).await?;
    read_until_closed(&mut stream).await?;
    Ok(local)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_behaved_peer_is_served_while_under_attack() -> TestResult {
    const MESSAGES: usize = 200;
    let mut server = server(small_server).await?;
    let good = Messaging::builder("steady")
        .connect(&server.addr.to_string())
        .start()
        .await?;
    // Runs in this task, joined with the collector below: the future of `Messaging::send`
    // is not `Send` (it holds a std `MutexGuard` across an await), so it cannot be spawned.
    let sender = async {
        for i in 0..MESSAGES {
            good.send("server", format!("m{i}").into_bytes()).await?;
            // Spread the messages over the attacks (pacing, not synchronisation).
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok::<(), Error>(())
    };
    let attacks = all_attacks();
    let expected_errors = attacks.len();
    let handles: Vec<_> = attacks
        .into_iter()
        .map(|(what, bytes)| (what, tokio::spawn(run_attack(server.addr, bytes))))
        .collect();

    let mut received = Vec::new();
    let mut errors = Vec::new();
    let collect = async {
        while received.len() < MESSAGES || errors.len() < expected_errors {
            match server.events.next().await {
                None => return Err("event stream ended".to_owned()),
                Some(Event::Received { from, message }) if &*from == "steady" => {
                    received.push(message.data);
                }
                Some(Event::Received { from, message }) => {
                    return Err(format!("attacker {from} delivered {:?}", message.data));
                }
                Some(Event::Error { conn, peer, error }) => {
                    if peer.as_deref() == Some("steady") {
                        return Err(format!("the good peer failed: {error}"));
                    }
                    errors.push(conn.and_then(|c| c.remote_addr));
                }
                Some(_) => {}
            }
        }
        Ok(())
    };
    let (sent, collected) =
        tokio::time::timeout(raw::BOUND * 2, async { tokio::join!(sender, collect) })
            .await
            .map_err(|_| "timed out sending and collecting events")?;
    sent?;
    collected.map_err(|e| {
        format!(
            "{e} ({} of {MESSAGES} messages, {} of {expected_errors} errors)",
            received.len(),
            errors.len()
        )
    })?;

    let mut attackers = HashSet::new();
    for (what, handle) in handles {
        let local = handle.await?.map_err(|e| format!("{what}: {e}"))?;
        attackers.insert(Some(local));
    }
    let reported: HashSet<_> = errors.iter().copied().collect();
    assert_eq!(reported, attackers, "one error per attacking connection");
    assert_eq!(errors.len(), expected_errors);
    let want: Vec<Bytes> = (0..MESSAGES)
        .map(|i| Bytes::from(format!("m{i}")))
        .collect();
    assert_eq!(received, want, "the good peer's messages, in order");
    good.shutdown().await;
    assert_serves(&mut server, "siege").await
}
