//! Raw-socket peers for tests that misbehave on purpose: a real listener on 127.0.0.1 port 0,
//! a plain `TcpStream` that writes hand-made bytes, and bounded waits for the server's events
//! and for the socket to be closed.
//!
//! Every wait here is bounded by [`BOUND`]; a test that hits it fails with a message saying
//! what it was waiting for, it never hangs.
#![allow(dead_code)] // each test binary uses a different part of this helper

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use snakemq::link::ConnInfo;
use snakemq::proto::{Frame, MessageFrame, TTL_INFINITE};
use snakemq::{Event, Events, Messaging, MessagingBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Error type of the tests.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Result type of the tests.
pub(crate) type TestResult = Result<(), BoxError>;

/// Longest wait for anything (a close, an event). Generous: the machine may be busy with
/// other builds, and a passing test never waits this long.
pub(crate) const BOUND: Duration = Duration::from_secs(15);

/// A listening messaging instance and its event stream (subscribed before anything connects,
/// so no event is missed).
pub(crate) struct Server {
    /// The instance.
    pub(crate) messaging: Messaging,
    /// Its events.
    pub(crate) events: Events,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
}

/// Starts a server named "server" on 127.0.0.1 port 0 with a 1 s handshake deadline;
/// `configure` may change anything.
pub(crate) async fn server(
    configure: impl FnOnce(MessagingBuilder) -> MessagingBuilder,
) -> Result<Server, BoxError> {
    let builder = Messaging::builder("server")
        .listen("127.0.0.1:0")
        .handshake_timeout(Duration::from_secs(1));
    let messaging = configure(builder).start().await?;
    let events = messaging.events();
    let addr = messaging
        .local_endpoints()
        .first()
        .ok_or("server has no listener")?
        .to_string()
        .parse()?;
    Ok(Server {
        messaging,
        events,
        addr,
    })
}

/// Opens a raw connection.
pub(crate) async fn connect(addr: SocketAddr) -> Result<TcpStream, BoxError> {
    let stream = tokio::time::timeout(BOUND, TcpStream::connect(addr))
        .await
        .map_err(|_| "timed out connecting")??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One packet: the big-endian length prefix and `body`, nothing checked.
pub(crate) fn packet(body: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(body.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(body);
    out
}

/// A frame as a whole packet.
pub(crate) fn frame(frame: &Frame) -> Vec<u8> {
    let mut out = BytesMut::new();
    frame.encode(&mut out);
    out.to_vec()
}

/// PROTOCOL_VERSION(`version`).
pub(crate) fn version(version: u32) -> Vec<u8> {
    frame(&Frame::ProtocolVersion(version))
}

/// IDENTIFICATION with raw identity bytes.
pub(crate) fn ident(raw: &[u8]) -> Vec<u8> {
    frame(&Frame::Identification(Bytes::copy_from_slice(raw)))
}

/// What a Python peer sends first: version 1 and its identity.
pub(crate) fn hello(identity: &str) -> Vec<u8> {
    let mut out = version(1);
    out.extend(ident(identity.as_bytes()));
    out
}

/// A MESSAGE with a fixed uuid, no expiry, flags 0.
pub(crate) fn message(uuid: u8, data: &[u8]) -> Vec<u8> {
    frame(&Frame::Message(MessageFrame {
        uuid: [uuid; 16],
        ttl: TTL_INFINITE,
        flags: 0,
        data: Bytes::copy_from_slice(data),
    }))
}

/// Writes everything, tolerating a server that already hung up (it may close while we are
/// still writing the rest of an attack; that is the point).
pub(crate) async fn send(stream: &mut TcpStream, bytes: &[u8]) -> TestResult {
    match tokio::time::timeout(BOUND, stream.write_all(bytes)).await {
        Err(_) => Err("timed out writing to the server".into()),
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if is_reset(&e) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// How the server ended the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    /// Orderly close (read returned 0).
    Eof,
    /// Reset: the server closed with our unread bytes in its buffer.
    Reset,
}

/// Reads until the server closes the connection; returns everything it sent and how it
/// closed. Fails if the connection is still open after `BOUND`.
pub(crate) async fn read_until_closed(
    stream: &mut TcpStream,
) -> Result<(Vec<u8>, Closed), BoxError> {
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + BOUND;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .map_err(|_| format!("connection still open after {BOUND:?}"))?;
        match read {
            Ok(0) => return Ok((received, Closed::Eof)),
            Ok(n) => received.extend_from_slice(buf.get(..n).ok_or("read past the buffer")?),
            Err(e) if is_reset(&e) => return Ok((received, Closed::Reset)),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Ends a raw connection the polite way: our FIN, then drain until the server closes too.
/// (Dropping a socket with unread bytes makes the kernel send a reset, which the server
/// rightly reports as an i/o error.)
pub(crate) async fn hang_up(mut stream: TcpStream) -> TestResult {
    tokio::time::timeout(BOUND, stream.shutdown())
        .await
        .map_err(|_| "timed out shutting down")??;
    read_until_closed(&mut stream).await?;
    Ok(())
}

/// Asserts that nothing arrives and the connection stays open for `quiet` (used to show a
/// connection was *not* closed).
pub(crate) async fn assert_open(stream: &mut TcpStream, quiet: Duration) -> TestResult {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(quiet, stream.read(&mut buf)).await {
            Err(_) => return Ok(()),
            Ok(Ok(0)) => return Err("connection closed, expected it to stay open".into()),
            Ok(Ok(_)) => {} // handshake, pings
            Ok(Err(e)) => return Err(format!("connection failed: {e}").into()),
        }
    }
}

/// The frames in what the server sent (a trailing partial packet is ignored).
pub(crate) fn frames(mut bytes: &[u8]) -> Result<Vec<Frame>, BoxError> {
    let mut out = Vec::new();
    while bytes.len() >= 4 {
        let size = usize::try_from(bytes.get_u32())?;
        let Some(body) = bytes.get(..size) else {
            break;
        };
        out.push(Frame::decode(Bytes::copy_from_slice(body))?);
        bytes.advance(size);
    }
    Ok(out)
}

/// An error the server reported.
#[derive(Debug, Clone)]
pub(crate) struct Reported {
    /// The connection it belongs to.
    pub(crate) conn: Option<ConnInfo>,
    /// The peer, if it had identified.
    pub(crate) peer: Option<Arc<str>>,
    /// The error.
    pub(crate) error: Arc<snakemq::Error>,
}

/// Waits for the next `Event::Error` and checks it with `expected`. Fails on any delivered
/// message on the way (nothing from an attacker may reach the application) and on an error
/// that does not match.
pub(crate) async fn expect_error(
    events: &mut Events,
    what: &str,
    expected: impl Fn(&snakemq::Error) -> bool,
) -> Result<Reported, BoxError> {
    let wait = async {
        loop {
            match events.next().await {
                None => return Err(format!("event stream ended waiting for {what}")),
                Some(Event::Received { from, message }) => {
                    return Err(format!(
                        "waiting for {what}: {from} delivered {:?}",
                        message.data
                    ));
                }
                Some(Event::Error { conn, peer, error }) => {
                    if !expected(&error) {
                        return Err(format!("expected {what}, the server reported: {error:?}"));
                    }
                    return Ok(Reported { conn, peer, error });
                }
                Some(_) => {}
            }
        }
    };
    Ok(tokio::time::timeout(BOUND, wait)
        .await
        .map_err(|_| format!("no Event::Error ({what}) within {BOUND:?}"))??)
}

/// Waits for `Event::Connected` of `identity` (failing on errors and deliveries meanwhile).
pub(crate) async fn expect_connected(events: &mut Events, identity: &str) -> TestResult {
    let wait = async {
        loop {
            match events.next().await {
                None => return Err("event stream ended".to_owned()),
                Some(Event::Connected { peer, .. }) if &*peer == identity => return Ok(()),
                Some(event @ (Event::Error { .. } | Event::Received { .. })) => {
                    return Err(format!("waiting for {identity} to connect: {event}"));
                }
                Some(_) => {}
            }
        }
    };
    Ok(tokio::time::timeout(BOUND, wait)
        .await
        .map_err(|_| format!("{identity} did not connect within {BOUND:?}"))??)
}

/// Waits for a message from `from`; fails on errors and on messages from anyone else.
pub(crate) async fn expect_received(events: &mut Events, from: &str) -> Result<Bytes, BoxError> {
    let wait = async {
        loop {
            match events.next().await {
                None => return Err("event stream ended".to_owned()),
                Some(Event::Received {
                    from: sender,
                    message,
                }) => {
                    if &*sender != from {
                        return Err(format!(
                            "expected a message from {from}, {sender} delivered {:?}",
                            message.data
                        ));
                    }
                    return Ok(message.data);
                }
                Some(event @ Event::Error { .. }) => {
                    return Err(format!("waiting for a message from {from}: {event}"));
                }
                Some(_) => {}
            }
        }
    };
    Ok(tokio::time::timeout(BOUND, wait)
        .await
        .map_err(|_| format!("no message from {from} within {BOUND:?}"))??)
}

/// Shows the listener still serves: a well-behaved peer named `good-{tag}` connects, sends a
/// message and the server receives exactly that.
pub(crate) async fn assert_serves(server: &mut Server, tag: &str) -> TestResult {
    let name = format!("good-{tag}");
    let good = Messaging::builder(name.as_str())
        .connect(&server.addr.to_string())
        .start()
        .await?;
    let payload = format!("still serving after {tag}");
    good.send("server", payload.as_bytes().to_vec()).await?;
    let got = expect_received(&mut server.events, &name).await;
    good.shutdown().await;
    assert_eq!(got?, Bytes::from(payload));
    Ok(())
}

/// Deterministic pseudo-random bytes (xorshift64*), so a failure can be replayed.
pub(crate) fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.max(1);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}
