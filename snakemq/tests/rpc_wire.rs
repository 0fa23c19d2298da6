//! What typed RPC puts on the wire, seen by a proxy between caller and server that parses
//! every packet: calls and replies written outside the queue go out as UNACKED_MESSAGE
//! frames to a peer that announced it understands them, so neither side acknowledges
//! them; to a peer that did not (an older Rust peer, simulated by clearing the bit in its
//! CAPABILITIES on the way), they go out as MESSAGE frames and are acknowledged as before.
#![cfg(feature = "rpc")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use snakemq::Messaging;
use snakemq::proto::{CAP_UNACKED, kind};
use snakemq::rpc::Rpc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Longest wait for any call; a passing test never comes near it.
const BOUND: Duration = Duration::from_secs(15);

/// The service under test.
#[snakemq::service]
pub trait Counter {
    /// Returns `n + 1`.
    async fn next(&self, n: u32) -> u32;
}

struct Adder;

impl Counter for Adder {
    async fn next(&self, n: u32) -> u32 {
        n + 1
    }
}

/// The frame kinds seen in each direction, in order.
#[derive(Default)]
struct Seen {
    to_server: Vec<u8>,
    to_caller: Vec<u8>,
}

/// Forwards whole packets from `from` to `to`, recording each one's kind before it is
/// forwarded (so a frame the other side reacted to is already recorded). With
/// `clear_unacked`, the CAPABILITIES frame loses its UNACKED bit on the way.
async fn forward(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    seen: Arc<Mutex<Seen>>,
    to_server: bool,
    clear_unacked: bool,
) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Ok(n) = from.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buffer.extend_from_slice(chunk.get(..n).unwrap_or_default());
        while let Some(prefix) = buffer.get(..4).and_then(|p| <[u8; 4]>::try_from(p).ok()) {
            let size = u32::from_be_bytes(prefix) as usize;
            if buffer.len() < 4 + size {
                break;
            }
            let mut packet: Vec<u8> = buffer.drain(..4 + size).collect();
            let frame_kind = packet.get(4).copied().unwrap_or(u8::MAX);
            if clear_unacked && frame_kind == kind::CAPABILITIES {
                if let Some(low) = packet.get_mut(8) {
                    *low &= !(CAP_UNACKED as u8);
                }
            }
            {
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                let list = if to_server {
                    &mut seen.to_server
                } else {
                    &mut seen.to_caller
                };
                list.push(frame_kind);
            }
            if to.write_all(&packet).await.is_err() {
                return;
            }
        }
    }
}

/// A proxy to `upstream` for one connection; returns its address and what it saw.
async fn proxy(
    upstream: String,
    clear_unacked: bool,
) -> Result<(String, Arc<Mutex<Seen>>), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let recorder = seen.clone();
    tokio::spawn(async move {
        let Ok((caller, _)) = listener.accept().await else {
            return;
        };
        let Ok(server) = TcpStream::connect(&upstream).await else {
            return;
        };
        let (caller_read, caller_write) = caller.into_split();
        let (server_read, server_write) = server.into_split();
        tokio::spawn(forward(
            caller_read,
            server_write,
            recorder.clone(),
            true,
            clear_unacked,
        ));
        tokio::spawn(forward(server_read, caller_write, recorder, false, false));
    });
    Ok((addr, seen))
}

/// Makes `calls` calls through a proxy and returns the kinds it saw after the handshake.
async fn calls_through_proxy(
    calls: u32,
    clear_unacked: bool,
) -> Result<(Vec<u8>, Vec<u8>), Box<dyn std::error::Error>> {
    let server = Messaging::builder("server")
        .listen("127.0.0.1:0")
        .start()
        .await?;
    let server_rpc = Rpc::new(&server)?;
    server_rpc.serve("counter", CounterServer::new(Adder));
    server_rpc.spawn_dispatch(&server);
    let upstream = server
        .local_endpoints()
        .first()
        .map(ToString::to_string)
        .ok_or("no listener")?;
    let (addr, seen) = proxy(upstream, clear_unacked).await?;
    let caller = Messaging::builder("caller").connect(&addr).start().await?;
    let caller_rpc = Rpc::new(&caller)?;
    caller_rpc.spawn_dispatch(&caller);
    let counter = CounterClient::new(&caller_rpc, "server", "counter");
    for n in 0..calls {
        let reply = tokio::time::timeout(BOUND, counter.next(n)).await??;
        assert_eq!(reply, n + 1);
    }
    // Whatever the caller had to say about the replies before its last call (an ACK rides
    // with the next request, or goes out before it) was recorded before that call reached
    // the server, so before its reply came back.
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    caller.shutdown().await;
    server.shutdown().await;
    let after_handshake = |kinds: Vec<u8>| -> Vec<u8> {
        kinds
            .into_iter()
            .filter(|k| {
                ![
                    kind::PROTOCOL_VERSION,
                    kind::CAPABILITIES,
                    kind::IDENTIFICATION,
                ]
                .contains(k)
            })
            .collect()
    };
    Ok((
        after_handshake(seen.to_server),
        after_handshake(seen.to_caller),
    ))
}

fn count(kinds: &[u8], wanted: u8) -> usize {
    kinds.iter().filter(|k| **k == wanted).count()
}

#[tokio::test]
async fn rpc_messages_go_unacknowledged_between_peers_that_understand_it() -> TestResult {
    let calls = 20;
    let (to_server, to_caller) = calls_through_proxy(calls, false).await?;
    // Every call goes out once. A call made before the connection was up waits in the
    // queue and is a MESSAGE; the others leave outside the queue, unacknowledged.
    let (queued, unqueued) = (
        count(&to_server, kind::MESSAGE),
        count(&to_server, kind::UNACKED_MESSAGE),
    );
    assert_eq!(queued + unqueued, calls as usize, "{to_server:?}");
    assert!(unqueued >= calls as usize - 1, "{to_server:?}");
    // Every reply is an UNACKED_MESSAGE: the caller acknowledges nothing.
    assert_eq!(
        count(&to_caller, kind::UNACKED_MESSAGE),
        calls as usize,
        "{to_caller:?}"
    );
    assert_eq!(count(&to_caller, kind::MESSAGE), 0, "{to_caller:?}");
    assert_eq!(count(&to_server, kind::ACK), 0, "{to_server:?}");
    // The server acknowledges queued calls only.
    assert!(count(&to_caller, kind::ACK) <= queued, "{to_caller:?}");
    Ok(())
}

#[tokio::test]
async fn a_peer_without_the_bit_gets_acknowledged_messages_as_before() -> TestResult {
    let calls = 20;
    // The server sees the caller's CAPABILITIES without bit 1 (an older Rust peer).
    let (to_server, to_caller) = calls_through_proxy(calls, true).await?;
    assert_eq!(count(&to_caller, kind::UNACKED_MESSAGE), 0, "{to_caller:?}");
    assert_eq!(
        count(&to_caller, kind::MESSAGE),
        calls as usize,
        "{to_caller:?}"
    );
    // The caller acknowledges the replies (all but perhaps the last, whose ack may still
    // wait for company when the test looks). Its own calls may still be UNACKED_MESSAGE
    // frames: the server announced the bit.
    assert!(count(&to_server, kind::ACK) >= 1, "{to_server:?}");
    assert_eq!(
        count(&to_server, kind::MESSAGE) + count(&to_server, kind::UNACKED_MESSAGE),
        calls as usize,
        "{to_server:?}"
    );
    Ok(())
}
