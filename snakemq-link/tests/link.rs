//! The link end to end over loopback TCP (IPv4, IPv6, a host name) and the memory transport:
//! packets arrive intact and in order, connectors retry and reconnect, listeners and
//! connectors can be removed, limits (packet size, connection count) hold, and address
//! conflicts are reported.
//!
//! Every wait is bounded, so a broken link fails a test instead of hanging it. Bounds are
//! generous: they say "must happen", they are not timing benchmarks.

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use snakemq_link::packet::encode_packet;
use snakemq_link::{
    Connection, ConnectorId, Direction, Endpoint, Incoming, Link, LinkConfig, LinkError,
    ListenerId, PacketReader, PacketWriter, TransportKind,
};
use support::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

fn port_of(endpoint: &Endpoint) -> Result<u16, BoxError> {
    let text = endpoint.to_string();
    let (_, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("no port in {text}"))?;
    Ok(port.parse()?)
}

/// A listening server link and a connecting client link, with the first connection of each.
struct Pair {
    server: Link,
    server_in: Incoming,
    client: Link,
    client_in: Incoming,
    accepted: Connection,
    connected: Connection,
    bound: Endpoint,
    listener: ListenerId,
    connector: ConnectorId,
}

/// Listens on `listen`, connects to what `target` makes of the bound endpoint.
async fn pair_with(
    listen: &str,
    server_config: LinkConfig,
    target: impl FnOnce(&Endpoint) -> Result<Endpoint, BoxError>,
) -> Result<Pair, BoxError> {
    let (server, mut server_in) = Link::new(server_config);
    let (listener, bound) = server.listen(&listen.parse()?).await?;
    let (client, mut client_in) = Link::new(config());
    let connector = client.connect(target(&bound)?)?;
    let connected = next_conn(&mut client_in, "the client's connection").await?;
    let accepted = next_conn(&mut server_in, "the server's connection").await?;
    Ok(Pair {
        server,
        server_in,
        client,
        client_in,
        accepted,
        connected,
        bound,
        listener,
        connector,
    })
}

async fn pair(listen: &str) -> Result<Pair, BoxError> {
    pair_with(listen, config(), |bound| Ok(bound.clone())).await
}

/// Sends `count` packets each way at once and checks both sides receive all of them in
/// order.
async fn exchange(a: Connection, b: Connection, count: u32) -> TestResult {
    let (_, mut a_reader, a_writer) = a.into_parts();
    let (_, mut b_reader, b_writer) = b.into_parts();
    let a_send = tokio::spawn(send_numbered(a_writer, count));
    let b_send = tokio::spawn(send_numbered(b_writer, count));
    within("packets from a", expect_numbered(&mut b_reader, count)).await??;
    within("packets from b", expect_numbered(&mut a_reader, count)).await??;
    a_send.await??;
    b_send.await??;
    Ok(())
}

async fn send_numbered(writer: PacketWriter, count: u32) -> Result<(), LinkError> {
    for i in 0..count {
        writer.send_packet(body(i, 1 + (i as usize % 100))).await?;
    }
    Ok(())
}

async fn expect_numbered(reader: &mut PacketReader, count: u32) -> TestResult {
    for i in 0..count {
        let got = reader
            .next()
            .await?
            .ok_or_else(|| format!("stream ended before packet {i}"))?;
        if got != body(i, 1 + (i as usize % 100)) {
            return Err(format!("packet {i} differs: {got:?}").into());
        }
    }
    Ok(())
}

#[tokio::test]
async fn tcp_ipv4_carries_packets_both_ways() -> TestResult {
    let p = pair("127.0.0.1:0").await?;
    let bound: SocketAddr = p.bound.to_string().parse()?;
    assert!(bound.ip().is_loopback() && bound.is_ipv4(), "{bound}");

    let server_info = p.accepted.info().clone();
    let client_info = p.connected.info().clone();
    assert_eq!(server_info.transport, TransportKind::Tcp);
    assert_eq!(
        server_info.tls, None,
        "a plain connection has no TLS session"
    );
    assert_eq!(server_info.direction, Direction::Inbound);
    assert_eq!(client_info.direction, Direction::Outbound);
    assert_eq!(client_info.remote_addr, Some(bound));
    assert_eq!(server_info.remote_addr, client_info.local_addr);
    assert_ne!(server_info.id, client_info.id);

    exchange(p.accepted, p.connected, 500).await
}

#[tokio::test]
async fn tcp_ipv6_carries_packets_both_ways() -> TestResult {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("note: no IPv6 loopback on this machine, skipping the IPv6 test");
        return Ok(());
    }
    let p = pair("[::1]:0").await?;
    let bound: SocketAddr = p.bound.to_string().parse()?;
    assert!(bound.is_ipv6() && bound.ip().is_loopback(), "{bound}");
    assert_eq!(p.connected.info().remote_addr, Some(bound));
    exchange(p.accepted, p.connected, 500).await
}

#[tokio::test]
async fn tcp_host_name_is_resolved() -> TestResult {
    let p = pair_with("localhost:0", config(), |bound| {
        Ok(Endpoint::Tcp(format!("localhost:{}", port_of(bound)?)))
    })
    .await?;
    assert_eq!(
        p.connected.info().remote_addr.map(|a| a.port()),
        Some(port_of(&p.bound)?)
    );
    exchange(p.accepted, p.connected, 200).await
}

#[tokio::test]
async fn port_zero_is_replaced_by_the_bound_port() -> TestResult {
    let (server, mut server_in) = Link::new(config());
    let (_, bound) = server.listen(&"127.0.0.1:0".parse()?).await?;
    let port = port_of(&bound)?;
    assert_ne!(port, 0, "{bound}");
    assert_eq!(bound, Endpoint::Tcp(format!("127.0.0.1:{port}")));
    // The port is really ours: a plain socket reaches the listener through it.
    let _stream = within("a raw connect", TcpStream::connect(("127.0.0.1", port))).await??;
    next_conn(&mut server_in, "the raw connection").await?;
    Ok(())
}

#[tokio::test]
async fn connector_retries_until_a_listener_appears() -> TestResult {
    // A port that was free a moment ago; nothing listens on it now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let target = Endpoint::Tcp(format!("127.0.0.1:{port}"));

    let (client, mut client_in) = Link::new(config());
    client.connect(target.clone())?;
    // Several attempts fail during this time (10 to 50 ms apart).
    expect_no_conn(&mut client_in, "nothing listens yet").await?;

    let (server, mut server_in) = Link::new(config());
    server.listen(&target).await?;
    let started = Instant::now();
    let bound = Duration::from_secs(2);
    let connected = timeout(bound, client_in.next())
        .await
        .map_err(|_| format!("the connector did not connect within {bound:?}"))?
        .ok_or("incoming closed")?;
    eprintln!(
        "connected {:?} after the listener appeared",
        started.elapsed()
    );
    let accepted = next_conn(&mut server_in, "the accepted connection").await?;
    exchange(accepted, connected, 10).await
}

#[tokio::test]
async fn connector_reconnects_after_the_peer_drops_the_connection() -> TestResult {
    let mut p = pair("127.0.0.1:0").await?;
    let first_id = p.connected.info().id;
    drop(p.accepted);

    let (_, mut reader, writer) = p.connected.into_parts();
    let end = within("the end of the first connection", reader.next()).await?;
    assert!(
        matches!(end, Ok(None) | Err(LinkError::Io(_))),
        "expected the connection to end, got {end:?}"
    );
    // The connector reconnects once every part of its connection is gone.
    drop((reader, writer));

    let again = next_conn(&mut p.client_in, "the reconnection").await?;
    assert_ne!(again.info().id, first_id);
    assert_eq!(again.info().direction, Direction::Outbound);
    let accepted = next_conn(&mut p.server_in, "the second accepted connection").await?;
    exchange(accepted, again, 10).await
}

#[tokio::test]
async fn removed_connector_does_not_reconnect() -> TestResult {
    let mut p = pair("127.0.0.1:0").await?;
    assert!(p.client.remove_connector(p.connector).await);
    assert!(
        !p.client.remove_connector(p.connector).await,
        "removed twice"
    );

    // The connection made before the removal stays usable by its owner...
    let (_, mut server_reader, server_writer) = p.accepted.into_parts();
    let (_, mut reader, writer) = p.connected.into_parts();
    writer
        .send_packet(Bytes::from_static(b"still here"))
        .await?;
    let got = within("a packet after removal", server_reader.next()).await??;
    assert_eq!(got.as_deref(), Some(&b"still here"[..]));

    // ...and when it ends, nobody reconnects.
    drop((server_reader, server_writer));
    let end = within("the end of the connection", reader.next()).await?;
    assert!(matches!(end, Ok(None) | Err(LinkError::Io(_))), "{end:?}");
    drop((reader, writer));
    expect_no_conn(&mut p.client_in, "client side, after removal").await?;
    expect_no_conn(&mut p.server_in, "server side, after removal").await?;
    Ok(())
}

#[tokio::test]
async fn removed_listener_frees_its_port() -> TestResult {
    let (server, _server_in) = Link::new(config());
    let (id, bound) = server.listen(&"127.0.0.1:0".parse()?).await?;
    let addr: SocketAddr = bound.to_string().parse()?;
    assert!(server.remove_listener(id).await);
    assert!(!server.remove_listener(id).await, "removed twice");

    // Right after the call, without yielding to the runtime first: the port can be bound
    // again and, once that socket is gone too, nothing accepts on it.
    let rebound = std::net::TcpListener::bind(addr);
    assert!(
        rebound.is_ok(),
        "port still taken right after remove_listener: {rebound:?}"
    );
    drop(rebound);
    let refused = within("a raw connect", TcpStream::connect(addr)).await?;
    assert!(refused.is_err(), "a connection was accepted after removal");
    let (again, rebound) = server.listen(&bound).await?;
    assert_eq!(rebound, bound);
    assert!(server.remove_listener(again).await);
    Ok(())
}

#[tokio::test]
async fn oversized_packet_is_refused() -> TestResult {
    let p = pair_with("127.0.0.1:0", config().max_packet_size(1024), |bound| {
        Ok(bound.clone())
    })
    .await?;
    let (_, mut reader, _server_writer) = p.accepted.into_parts();
    let (_, _client_reader, writer) = p.connected.into_parts();

    // The limit itself is allowed.
    writer.send_packet(body(1, 1024)).await?;
    let got = within("the 1024-byte packet", reader.next()).await??;
    assert_eq!(got, Some(body(1, 1024)));

    writer.send_packet(body(2, 2000)).await?;
    match within("the 2000-byte packet", reader.next()).await? {
        Err(LinkError::PacketTooLarge {
            size: 2000,
            max: 1024,
        }) => Ok(()),
        other => Err(format!("expected PacketTooLarge {{ 2000, 1024 }}, got {other:?}").into()),
    }
}

/// Packet `i` of the coalescing test: 1 to 100 bytes, except a 5 MiB one in the middle.
const SMALL_COUNT: u32 = 10_000;
const BIG_INDEX: u32 = 5_000;
const BIG_LEN: usize = 5 * 1024 * 1024;

fn coalescing_body(i: u32) -> Bytes {
    if i == BIG_INDEX {
        body(i, BIG_LEN)
    } else {
        body(i, 1 + (i.wrapping_mul(7919) % 100) as usize)
    }
}

#[tokio::test]
async fn small_packets_and_a_large_one_arrive_intact_and_in_order() -> TestResult {
    let p = pair("127.0.0.1:0").await?;
    let (_, mut reader, _server_writer) = p.accepted.into_parts();
    let (_, _client_reader, writer) = p.connected.into_parts();

    let sender = tokio::spawn(async move {
        let mut i = 0;
        while i <= SMALL_COUNT {
            if i % 1000 == 500 {
                // A batch of already-framed packets, queued with one call.
                let mut batch = BytesMut::new();
                for j in i..i + 50 {
                    encode_packet(&coalescing_body(j), &mut batch)?;
                }
                writer.send_raw(batch.freeze()).await?;
                i += 50;
            } else {
                writer.send_packet(coalescing_body(i)).await?;
                i += 1;
            }
        }
        // Everything queued is flushed, then the stream is shut down cleanly.
        writer.finish().await;
        Ok::<_, LinkError>(())
    });

    let receive = async {
        for i in 0..=SMALL_COUNT {
            let got = reader
                .next()
                .await?
                .ok_or_else(|| format!("stream ended before packet {i}"))?;
            if got != coalescing_body(i) {
                return Err(format!("packet {i} differs ({} bytes)", got.len()).into());
            }
        }
        Ok::<_, BoxError>(())
    };
    within("10 001 packets", receive).await??;
    within("the sender", sender).await???;
    let end = within("the clean end after finish", reader.next()).await??;
    assert_eq!(end, None);
    Ok(())
}

/// Whether the server took a new raw connection (true) or closed it at once (false).
async fn raw_connection_accepted(
    addr: &str,
    server_in: &mut Incoming,
) -> Result<(bool, TcpStream, Option<Connection>), BoxError> {
    let mut stream = within("a raw connect", TcpStream::connect(addr)).await??;
    let mut byte = [0u8; 1];
    tokio::select! {
        conn = next_conn(server_in, "an accepted raw connection") => Ok((true, stream, Some(conn?))),
        read = within("the refused connection to close", stream.read(&mut byte)) => {
            match read? {
                Ok(0) | Err(_) => Ok((false, stream, None)),
                Ok(_) => Err("the server sent bytes on a refused connection".into()),
            }
        }
    }
}

#[tokio::test]
async fn connection_limit_refuses_extra_inbound_connections() -> TestResult {
    let (server, mut server_in) = Link::new(config().max_connections(2));
    let (_, bound) = server.listen(&"127.0.0.1:0".parse()?).await?;
    let addr = bound.to_string();

    let (ok_a, _a, conn_a) = raw_connection_accepted(&addr, &mut server_in).await?;
    let (ok_b, _b, _conn_b) = raw_connection_accepted(&addr, &mut server_in).await?;
    assert!(ok_a && ok_b, "the first two connections must be accepted");
    let (ok_c, _c, _) = raw_connection_accepted(&addr, &mut server_in).await?;
    assert!(
        !ok_c,
        "a third connection was accepted with max_connections(2)"
    );

    // Once a connection is gone its slot is free again. The slot is released by the
    // connection's writer task a moment after the drop, so a refusal in between is retried.
    drop(conn_a);
    let started = Instant::now();
    loop {
        let (ok, _d, _conn_d) = raw_connection_accepted(&addr, &mut server_in).await?;
        if ok {
            break;
        }
        if started.elapsed() > WAIT {
            return Err("the slot of a dropped connection was never released".into());
        }
    }
    Ok(())
}

#[tokio::test]
async fn memory_transport_connects_and_names_are_exclusive() -> TestResult {
    let name = "link-tests-memory-exclusive";
    let endpoint: Endpoint = format!("memory:{name}").parse()?;
    let p = pair(&endpoint.to_string()).await?;
    assert_eq!(p.bound, endpoint);
    assert_eq!(p.accepted.info().transport, TransportKind::Memory);
    assert_eq!(p.connected.info().transport, TransportKind::Memory);

    // Taken, by this link or another.
    let (other, _other_in) = Link::new(config());
    for link in [&p.server, &other] {
        match link.listen(&endpoint).await {
            Err(LinkError::MemoryAddrInUse(taken)) => assert_eq!(taken, name),
            other => return Err(format!("expected MemoryAddrInUse, got {other:?}").into()),
        }
    }
    exchange(p.accepted, p.connected, 200).await?;
    assert!(p.server.remove_listener(p.listener).await);
    assert!(!p.server.remove_listener(p.listener).await, "removed twice");
    Ok(())
}

#[tokio::test]
async fn removed_memory_listener_frees_its_name() -> TestResult {
    let endpoint: Endpoint = "memory:link-tests-memory-rebind".parse()?;
    let (server, _server_in) = Link::new(config());
    let (id, _) = server.listen(&endpoint).await?;
    assert!(server.remove_listener(id).await);
    // Right after the call, as for TCP ports.
    let (again, _) = server.listen(&endpoint).await?;
    assert!(server.remove_listener(again).await);
    Ok(())
}

#[tokio::test]
async fn listening_twice_on_a_tcp_port_is_a_bind_error() -> TestResult {
    let (server, _server_in) = Link::new(config());
    let (_, bound) = server.listen(&"127.0.0.1:0".parse()?).await?;
    match server.listen(&bound).await {
        Err(LinkError::Bind { endpoint, .. }) => {
            assert_eq!(endpoint, bound.to_string());
            Ok(())
        }
        other => Err(format!("expected LinkError::Bind, got {other:?}").into()),
    }
}

#[tokio::test]
async fn incoming_ends_after_shutdown() -> TestResult {
    let (link, mut incoming) = Link::new(config());
    link.listen(&"127.0.0.1:0".parse()?).await?;
    link.shutdown();
    let next = within("Incoming::next after shutdown", incoming.next()).await?;
    assert!(next.is_none());
    Ok(())
}

#[tokio::test]
async fn incoming_ends_when_the_link_is_dropped() -> TestResult {
    let (link, mut incoming) = Link::new(config());
    link.listen(&"127.0.0.1:0".parse()?).await?;
    link.connect("127.0.0.1:9".parse()?)?;
    drop(link);
    let next = within("Incoming::next after the drop", incoming.next()).await?;
    assert!(next.is_none());
    Ok(())
}

/// `close` returns only once the listening sockets are gone: the same address can be bound
/// again at once, every time (with `shutdown` alone this raced the listener task).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_frees_the_listening_address_before_returning() -> TestResult {
    for _ in 0..20 {
        let (link, _incoming) = Link::new(LinkConfig::default());
        let (_, endpoint) = link.listen(&"127.0.0.1:0".parse()?).await?;
        link.close().await;
        let again = tokio::net::TcpListener::bind(endpoint.to_string()).await?;
        drop(again);
    }
    Ok(())
}

/// A peer that drops every connection right after it opens (a refused client certificate, a
/// rejected identity) must not be hammered: such connections count as failed attempts and
/// the backoff grows (paused time: 10 virtual seconds).
#[tokio::test(start_paused = true)]
async fn connections_dropped_at_once_back_off() -> Result<(), LinkError> {
    let (server, mut accepted) = Link::new(LinkConfig::default());
    server.listen(&"memory:drops-at-once".parse()?).await?;
    let (client, mut connected) = Link::new(LinkConfig::default());
    client.connect("memory:drops-at-once".parse()?)?;
    let dropper = tokio::spawn(async move {
        while let Some(connection) = connected.next().await {
            drop(connection);
        }
    });
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut attempts = 0;
    while let Ok(Some(connection)) = tokio::time::timeout_at(until, accepted.next()).await {
        attempts += 1;
        drop(connection);
    }
    // 20 ms doubling to the 3 s cap: about 10 attempts in 10 s (without the backoff,
    // one every ~20 ms: hundreds).
    assert!((4..=16).contains(&attempts), "{attempts} attempts in 10 s");
    client.shutdown();
    dropper.abort();
    Ok(())
}

/// Packets written at once by the handle and packets queued to the writer task (once the
/// socket is full) arrive in the order they were sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_keep_their_order_when_the_socket_fills_up() -> TestResult {
    let p = pair("127.0.0.1:0").await?;
    let (_, _, writer) = p.connected.into_parts();
    let (_, mut reader, _) = p.accepted.into_parts();
    // 32 MiB in 8 KiB packets: far more than the socket buffers hold, so some writes are
    // partial and the rest queues, while the reader below catches up.
    let count = 4096;
    let send = tokio::spawn(async move {
        for i in 0..count {
            writer.send_packet(body(i, 8192)).await?;
        }
        Ok::<_, LinkError>(writer)
    });
    for i in 0..count {
        let got = within("a packet", reader.next()).await??;
        if got.as_ref() != Some(&body(i, 8192)) {
            return Err(format!("packet {i} is not the one sent {i}th").into());
        }
    }
    within("the sender", send).await???;
    Ok(())
}
