//! The link over QUIC on loopback, with certificates made at test time: packets both ways
//! (small and large), connection facts (addresses, certificates), mutual TLS and its
//! refusal, TLS being required, reconnects when the listener goes away and comes back,
//! the port being free once the listener is removed, the connection limit and the
//! establish timeout.
//!
//! Every wait is bounded, so a broken link fails a test instead of hanging it.

#![cfg(feature = "quic")]

mod tls_certs;

#[path = "support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use snakemq_link::middleware::{ByteStream, ServiceBuilder, TraceLayer};
use snakemq_link::tls::{TlsClient, TlsServer, TlsVersion, certificate_names};
use snakemq_link::{
    ConnInfo, ConnectOptions, Connection, Direction, Endpoint, Incoming, Link, LinkError,
    ListenOptions, ListenerId, PacketReader, PacketWriter, TransportKind,
};
use support::*;
use tls_certs::{Ca, Leaf};

/// Waits until `reader`'s connection ends (cleanly or with an error).
async fn expect_end(reader: &mut PacketReader, what: &str) -> TestResult {
    loop {
        match within(what, reader.next()).await? {
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return Ok(()),
        }
    }
}

fn len_of(index: u32) -> usize {
    // Mostly small packets, and one of 1 MiB to go past the stream's flow-control window.
    if index == 7 {
        1 << 20
    } else {
        1 + (index as usize * 37) % 300
    }
}

async fn send_numbered(writer: &PacketWriter, count: u32) -> Result<(), LinkError> {
    for i in 0..count {
        writer.send_packet(body(i, len_of(i))).await?;
    }
    Ok(())
}

async fn expect_numbered(reader: &mut PacketReader, count: u32) -> TestResult {
    for i in 0..count {
        let got = within("a packet", reader.next())
            .await??
            .ok_or_else(|| format!("stream ended before packet {i}"))?;
        if got != body(i, len_of(i)) {
            return Err(format!("packet {i} differs ({} bytes)", got.len()).into());
        }
    }
    Ok(())
}

/// One end of a connection, split.
struct End {
    info: ConnInfo,
    reader: PacketReader,
    writer: PacketWriter,
}

impl From<Connection> for End {
    fn from(connection: Connection) -> Self {
        let (info, reader, writer) = connection.into_parts();
        End {
            info,
            reader,
            writer,
        }
    }
}

/// A listener and a connector over QUIC, connected, with the connector having spoken first
/// (a QUIC stream reaches the listener with its first bytes).
struct Pair {
    server: Link,
    server_in: Incoming,
    client: Link,
    client_in: Incoming,
    listener: ListenerId,
    bound: Endpoint,
    accepted: End,
    connected: End,
}

async fn listen(server: &Link, tls: TlsServer) -> Result<(ListenerId, Endpoint), BoxError> {
    let options = ListenOptions::tls(tls);
    Ok(server
        .listen_with(&"quic://127.0.0.1:0".parse()?, options)
        .await?)
}

/// The next connection on `client_in`, which says hello, and its accepted end on
/// `server_in`, which has read the hello.
async fn hello(client_in: &mut Incoming, server_in: &mut Incoming) -> Result<(End, End), BoxError> {
    let connected = End::from(next_conn(client_in, "the client's connection").await?);
    connected
        .writer
        .send_packet(Bytes::from_static(b"hello"))
        .await?;
    let mut accepted = End::from(next_conn(server_in, "the server's connection").await?);
    let got = within("the hello", accepted.reader.next()).await??;
    assert_eq!(got.as_deref(), Some(&b"hello"[..]));
    Ok((connected, accepted))
}

async fn pair(server_tls: TlsServer, client_tls: TlsClient) -> Result<Pair, BoxError> {
    let (server, mut server_in) = Link::new(config());
    let (listener, bound) = listen(&server, server_tls).await?;
    let (client, mut client_in) = Link::new(config());
    client.connect_with(bound.clone(), ConnectOptions::tls(client_tls))?;
    let (connected, accepted) = hello(&mut client_in, &mut server_in).await?;
    Ok(Pair {
        server,
        server_in,
        client,
        client_in,
        listener,
        bound,
        accepted,
        connected,
    })
}

/// `count` numbered packets each way at once, all arriving intact and in order.
async fn exchange(a: &mut End, b: &mut End, count: u32) -> TestResult {
    let (a_sent, b_sent, a_got, b_got) = tokio::join!(
        send_numbered(&a.writer, count),
        send_numbered(&b.writer, count),
        expect_numbered(&mut a.reader, count),
        expect_numbered(&mut b.reader, count),
    );
    a_sent?;
    b_sent?;
    a_got?;
    b_got
}

/// Listener settings presenting `leaf`; with `clients_from`, mutual TLS with that CA.
fn server_tls(leaf: &Leaf, clients_from: Option<&Ca>) -> Result<TlsServer, LinkError> {
    let builder = TlsServer::builder(leaf.cert.as_bytes(), leaf.key.as_bytes())?;
    match clients_from {
        Some(ca) => builder.require_client_certificates(ca.pem.as_bytes())?,
        None => builder,
    }
    .build()
}

/// Connector settings trusting `ca`, presenting `leaf` if given.
fn client_tls(ca: &Ca, leaf: Option<&Leaf>) -> Result<TlsClient, LinkError> {
    let builder = TlsClient::builder().trust_roots(ca.pem.as_bytes())?;
    match leaf {
        Some(leaf) => builder.client_certificate(leaf.cert.as_bytes(), leaf.key.as_bytes())?,
        None => builder,
    }
    .build()
}

/// A listener with a certificate for 127.0.0.1 and a client trusting its CA.
fn plain_tls() -> Result<(TlsServer, TlsClient), BoxError> {
    let ca = Ca::new("test CA")?;
    let leaf = ca.leaf(&["localhost", "127.0.0.1"])?;
    Ok((server_tls(&leaf, None)?, client_tls(&ca, None)?))
}

/// The DNS names of the peer's leaf certificate on `info`.
fn peer_names(info: &ConnInfo) -> Result<Vec<String>, BoxError> {
    let leaf = info
        .peer_certificates
        .first()
        .ok_or("no peer certificate")?;
    Ok(certificate_names(leaf)?.dns_names)
}

#[tokio::test]
async fn quic_carries_packets_both_ways() -> TestResult {
    let (server_tls, client_tls) = plain_tls()?;
    let mut p = pair(server_tls, client_tls).await?;

    let Endpoint::Quic(addr) = &p.bound else {
        return Err(format!("bound to {:?}", p.bound).into());
    };
    let bound: SocketAddr = addr.parse()?;
    assert_ne!(bound.port(), 0);
    assert_eq!(p.bound.to_string(), format!("quic://{bound}"));

    let (server, client) = (&p.accepted.info, &p.connected.info);
    assert_eq!(server.transport, TransportKind::Quic);
    assert_eq!(client.transport, TransportKind::Quic);
    assert_eq!(server.direction, Direction::Inbound);
    assert_eq!(client.direction, Direction::Outbound);
    assert_eq!(server.local_addr, Some(bound));
    assert_eq!(client.remote_addr, Some(bound));
    let client_port = client.local_addr.map(|a| a.port());
    assert_eq!(server.remote_addr.map(|a| a.port()), client_port);
    // The client saw the server's certificate; the server asked for none.
    assert_eq!(peer_names(client)?, ["localhost"]);
    assert!(server.peer_certificates.is_empty());
    for info in [server, client] {
        let version = info.tls.as_ref().map(|tls| tls.version.as_str());
        assert_eq!(version, Some("TLSv1_3"), "{info:?}");
    }

    exchange(&mut p.accepted, &mut p.connected, 20).await
}

/// IPv6, and a host name resolved at each attempt (to every address it has, tried at once).
#[tokio::test]
async fn quic_over_ipv6_and_by_host_name() -> TestResult {
    let ca = Ca::new("test CA")?;
    let leaf = ca.leaf(&["localhost", "::1", "127.0.0.1"])?;
    for (listen_on, dial) in [
        ("quic://[::1]:0", None),
        ("quic://127.0.0.1:0", Some("localhost")),
    ] {
        let (server, mut server_in) = Link::new(config());
        let (_, bound) = server
            .listen_with(
                &listen_on.parse()?,
                ListenOptions::tls(server_tls(&leaf, None)?),
            )
            .await?;
        let target = match (dial, &bound) {
            (Some(host), Endpoint::Quic(addr)) => {
                let port = addr
                    .rsplit_once(':')
                    .map(|(_, port)| port)
                    .ok_or("no port")?;
                format!("quic://{host}:{port}").parse()?
            }
            _ => bound.clone(),
        };
        let (client, mut client_in) = Link::new(config());
        client.connect_with(target, ConnectOptions::tls(client_tls(&ca, None)?))?;
        let (mut connected, mut accepted) = hello(&mut client_in, &mut server_in).await?;
        assert_eq!(accepted.info.local_addr.map(Endpoint::quic), Some(bound));
        exchange(&mut accepted, &mut connected, 3).await?;
    }
    Ok(())
}

/// The middleware stack runs on QUIC connections as on any other: it sees the stream with
/// its facts, and the bytes pass through it.
#[tokio::test]
async fn quic_connections_run_the_middleware_stack() -> TestResult {
    let (server_tls, client_tls) = plain_tls()?;
    let trace = TraceLayer::new();
    let stats = trace.stats();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let stack = ServiceBuilder::new()
        .map_request(move |stream: ByteStream| {
            if let Ok(mut seen) = record.lock() {
                seen.push(stream.info.transport);
            }
            stream
        })
        .layer(trace);
    let (server, mut server_in) = Link::new(config().middleware(stack));
    let (_, bound) = listen(&server, server_tls).await?;
    let (client, mut client_in) = Link::new(config());
    client.connect_with(bound, ConnectOptions::tls(client_tls))?;
    let (mut connected, mut accepted) = hello(&mut client_in, &mut server_in).await?;
    exchange(&mut accepted, &mut connected, 5).await?;

    assert_eq!(
        seen.lock().map(|seen| seen.clone()).ok(),
        Some(vec![TransportKind::Quic])
    );
    assert_eq!(stats.connections(), 1);
    // The hello and the five numbered packets in, the five numbered packets out.
    assert_eq!(stats.packets_read(), 6);
    assert_eq!(stats.packets_written(), 5);
    Ok(())
}

#[tokio::test]
async fn quic_mutual_tls_shows_the_client_certificate() -> TestResult {
    let ca = Ca::new("test CA")?;
    let server_leaf = ca.leaf(&["127.0.0.1"])?;
    let client_leaf = ca.leaf(&["alice"])?;
    let mut p = pair(
        server_tls(&server_leaf, Some(&ca))?,
        client_tls(&ca, Some(&client_leaf))?,
    )
    .await?;
    assert_eq!(peer_names(&p.accepted.info)?, ["alice"]);
    assert_eq!(p.connected.info.peer_certificates.len(), 1);
    exchange(&mut p.accepted, &mut p.connected, 5).await
}

#[tokio::test]
async fn quic_mutual_tls_refuses_a_client_without_certificate() -> TestResult {
    let ca = Ca::new("test CA")?;
    let server_leaf = ca.leaf(&["127.0.0.1"])?;
    let (server, mut server_in) = Link::new(config());
    let (_, bound) = listen(&server, server_tls(&server_leaf, Some(&ca))?).await?;

    let (client, mut client_in) = Link::new(config());
    client.connect_with(bound, ConnectOptions::tls(client_tls(&ca, None)?))?;
    // TLS 1.3 checks the client's certificate last, so the client may finish its half of
    // the handshake and hand out a connection; the server's refusal then ends it.
    let mut refused = 0;
    while refused < 3 {
        let mut end = End::from(next_conn(&mut client_in, "a client connection").await?);
        let _ = end
            .writer
            .send_packet(Bytes::from_static(b"let me in"))
            .await;
        expect_end(&mut end.reader, "the refusal").await?;
        refused += 1;
    }
    expect_no_conn(&mut server_in, "server side, client without certificate").await
}

#[tokio::test]
async fn quic_needs_tls_settings() -> TestResult {
    let (link, _incoming) = Link::new(config());
    let endpoint: Endpoint = "quic://127.0.0.1:0".parse()?;
    let listened = link.listen(&endpoint).await;
    assert!(
        matches!(listened, Err(LinkError::InvalidEndpoint { .. })),
        "{listened:?}"
    );
    let connected = link.connect(endpoint.clone());
    assert!(
        matches!(connected, Err(LinkError::InvalidEndpoint { .. })),
        "{connected:?}"
    );

    // No Python peer speaks QUIC, so the opt-out made for them is refused here.
    let insecure = TlsClient::insecure_python_compat_no_verification()?;
    let connected = link.connect_with(endpoint.clone(), ConnectOptions::tls(insecure));
    assert!(
        matches!(connected, Err(LinkError::InvalidEndpoint { .. })),
        "{connected:?}"
    );

    // QUIC is TLS 1.3: settings limited to TLS 1.2 are refused up front.
    let ca = Ca::new("test CA")?;
    let leaf = ca.leaf(&["127.0.0.1"])?;
    let tls12 = TlsServer::builder(leaf.cert.as_bytes(), leaf.key.as_bytes())?
        .versions(&[TlsVersion::Tls12])
        .build()?;
    let listened = link.listen_with(&endpoint, ListenOptions::tls(tls12)).await;
    assert!(
        matches!(listened, Err(LinkError::TlsConfig(_))),
        "{listened:?}"
    );
    let tls12 = TlsClient::builder()
        .trust_roots(ca.pem.as_bytes())?
        .versions(&[TlsVersion::Tls12])
        .build()?;
    let connected = link.connect_with(endpoint, ConnectOptions::tls(tls12));
    assert!(
        matches!(connected, Err(LinkError::TlsConfig(_))),
        "{connected:?}"
    );
    Ok(())
}

#[tokio::test]
async fn quic_connector_reconnects_when_the_listener_comes_back() -> TestResult {
    let (server_tls, client_tls) = plain_tls()?;
    let mut p = pair(server_tls.clone(), client_tls).await?;
    let first = p.connected.info.id;

    // The server closes the connection and goes away.
    drop(p.accepted);
    expect_end(&mut p.connected.reader, "the end of the first connection").await?;
    drop(p.connected);
    assert!(p.server.remove_listener(p.listener).await);

    // It comes back on the same port (free again at once), and the connector finds it.
    let (_, again) = p
        .server
        .listen_with(&p.bound, ListenOptions::tls(server_tls))
        .await?;
    assert_eq!(again, p.bound);
    let (mut connected, mut accepted) = hello(&mut p.client_in, &mut p.server_in).await?;
    assert_ne!(connected.info.id, first);
    exchange(&mut accepted, &mut connected, 10).await?;
    drop(p.client);
    Ok(())
}

#[tokio::test]
async fn quic_removed_listener_frees_its_port_and_ends_its_connections() -> TestResult {
    let (server_tls, client_tls) = plain_tls()?;
    let mut p = pair(server_tls.clone(), client_tls).await?;
    let addr = p.accepted.info.local_addr.ok_or("no local address")?;

    assert!(p.server.remove_listener(p.listener).await);
    assert!(!p.server.remove_listener(p.listener).await, "removed twice");
    // Right after the call, without yielding to the runtime first.
    let rebound = std::net::UdpSocket::bind(addr);
    assert!(
        rebound.is_ok(),
        "port still taken right after remove_listener: {rebound:?}"
    );
    drop(rebound);
    // The accepted connection shared the listener's socket: it is over.
    expect_end(&mut p.accepted.reader, "the end of the accepted connection").await?;

    // The client's connection learns it from the listener that comes back on the port (a
    // stateless reset, the key being the process's), and the connector reconnects.
    let (_, again) = p
        .server
        .listen_with(&p.bound, ListenOptions::tls(server_tls))
        .await?;
    assert_eq!(again, p.bound);
    let _ = p
        .connected
        .writer
        .send_packet(Bytes::from_static(b"anyone?"))
        .await;
    expect_end(
        &mut p.connected.reader,
        "the end of the client's connection",
    )
    .await?;
    drop(p.connected);
    let (mut connected, mut accepted) = hello(&mut p.client_in, &mut p.server_in).await?;
    exchange(&mut accepted, &mut connected, 3).await?;
    drop(p.client);
    Ok(())
}

#[tokio::test]
async fn quic_connection_limit_holds() -> TestResult {
    let (server_tls, client_tls) = plain_tls()?;
    let (server, mut server_in) = Link::new(config().max_connections(1));
    let (_, bound) = listen(&server, server_tls).await?;

    let (first, mut first_in) = Link::new(config());
    first.connect_with(bound.clone(), ConnectOptions::tls(client_tls.clone()))?;
    let (first_end, first_accepted) = hello(&mut first_in, &mut server_in).await?;

    // A second client is refused while the first holds the only slot...
    let (second, mut second_in) = Link::new(config());
    second.connect_with(bound, ConnectOptions::tls(client_tls))?;
    expect_no_conn(&mut second_in, "a second client beyond the limit").await?;
    expect_no_conn(&mut server_in, "server side, beyond the limit").await?;

    // ...and gets in once the first connection is gone.
    drop((first, first_end, first_accepted));
    let (mut connected, mut accepted) = hello(&mut second_in, &mut server_in).await?;
    exchange(&mut accepted, &mut connected, 3).await
}

#[tokio::test]
async fn quic_connection_silent_past_the_establish_timeout_is_dropped() -> TestResult {
    let (server_tls, client_tls) = plain_tls()?;
    let server_config = config().establish_timeout(Duration::from_millis(300));
    let (server, mut server_in) = Link::new(server_config);
    let (_, bound) = listen(&server, server_tls).await?;

    let (client, mut client_in) = Link::new(config());
    client.connect_with(bound, ConnectOptions::tls(client_tls))?;
    // The client never sends, so its stream never reaches the listener, which gives up.
    let mut silent = End::from(next_conn(&mut client_in, "the client's connection").await?);
    expect_end(&mut silent.reader, "the listener giving up").await?;
    expect_no_conn(&mut server_in, "server side, silent client").await
}
