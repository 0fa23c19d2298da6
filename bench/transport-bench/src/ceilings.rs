//! The same-run ceilings: `rustls-memory` (TLS without sockets) and `quinn-raw` (QUIC
//! without our link). Both use the rustls settings of the link modes (the same
//! certificates, mutual TLS, ring), so the negotiated cipher suite is the same.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, Connection, ServerConnection};

use crate::certs::Pki;
use crate::{Args, BoxError, PACKET, WARM_UP, within};

/// Each packet is written and passed on in pieces of this size, as our link reads 64 KiB
/// at a time: the plaintext, the records and the decrypted bytes stay in the cache. Whole
/// 1 MiB writes measured about half as fast (three 1 MiB buffers pass through memory), which
/// would make a low ceiling.
const PIECE: usize = 64 * 1024;
/// Guard against a handshake that never ends between the two in-memory connections.
const HANDSHAKE_FLIGHTS: usize = 16;

/// Moves every TLS record `from` has to send into `to`, and appends the plaintext `to`
/// decrypts to `sink` (its received-plaintext buffer is bounded, so it is drained after
/// every record batch, as a socket reader would).
fn pump(
    from: &mut Connection,
    to: &mut Connection,
    wire: &mut Vec<u8>,
    sink: &mut Vec<u8>,
) -> Result<(), BoxError> {
    wire.clear();
    while from.wants_write() {
        from.write_tls(wire)?;
    }
    let mut pending = wire.as_slice();
    while !pending.is_empty() {
        to.read_tls(&mut pending)?;
        to.process_new_packets()?;
        drain(to, sink)?;
    }
    Ok(())
}

/// Appends the plaintext `conn` holds to `sink`.
fn drain(conn: &mut Connection, sink: &mut Vec<u8>) -> Result<(), BoxError> {
    let mut reader = conn.reader();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => sink.extend_from_slice(chunk.get(..n).ok_or("read past the buffer")?),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// One thread encrypts framed 1 MiB packets on a client connection and decrypts them on a
/// server connection, [`PIECE`] bytes at a time; the records and the plaintext go through
/// `Vec` buffers as they would through a socket's writes and reads.
pub(crate) fn rustls_memory(args: &Args) -> Result<String, BoxError> {
    let pki = Pki::generate()?;
    let server_config = pki.tls_server()?.rustls_config().clone();
    let client_config = pki.tls_client()?.rustls_config().clone();
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    let mut client = Connection::Client(ClientConnection::new(client_config, name)?);
    let mut server = Connection::Server(ServerConnection::new(server_config)?);
    // A piece is encrypted whole, whatever rustls's default buffer limit.
    client.set_buffer_limit(None);

    let mut wire = Vec::with_capacity(PACKET + PACKET / 8);
    let mut received = Vec::with_capacity(PACKET + 4);
    let mut flights = 0;
    while client.is_handshaking() || server.is_handshaking() {
        pump(&mut client, &mut server, &mut wire, &mut received)?;
        pump(&mut server, &mut client, &mut wire, &mut received)?;
        flights += 1;
        if flights > HANDSHAKE_FLIGHTS {
            return Err("the in-memory handshake does not finish".into());
        }
    }
    // Session tickets and the like, so only application data flows from here on.
    pump(&mut server, &mut client, &mut wire, &mut received)?;
    let suite = client
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    let version = client
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();

    let body = crate::body();
    let prefix = crate::prefix();
    let mut start = Instant::now();
    for index in 0..WARM_UP + args.mib {
        if index == WARM_UP {
            start = Instant::now();
        }
        received.clear();
        client.writer().write_all(&prefix)?;
        for piece in body.chunks(PIECE) {
            client.writer().write_all(piece)?;
            pump(&mut client, &mut server, &mut wire, &mut received)?;
        }
        if received.len() != PACKET + prefix.len() {
            return Err(format!("packet {index}: {} bytes decrypted", received.len()).into());
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    crate::throughput_json(
        args,
        seconds,
        &[("cipher_suite", suite), ("version", version)],
    )
}

/// quinn with its own UDP sockets and default transport settings, one bidirectional
/// stream, the same framed 1 MiB packets; the receiver takes the stream's chunks as they
/// come (no copy) and counts bytes.
pub(crate) async fn quinn_raw(args: &Args) -> Result<String, BoxError> {
    let pki = Pki::generate()?;
    let alpn = b"snakemq".to_vec();
    let mut server_tls = (**pki.tls_server()?.rustls_config()).clone();
    server_tls.alpn_protocols = vec![alpn.clone()];
    let mut client_tls = (**pki.tls_client()?.rustls_config()).clone();
    client_tls.alpn_protocols = vec![alpn];
    let server_config =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server_tls)?));
    let client_config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client_tls)?));

    let localhost = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let server = quinn::Endpoint::server(server_config, localhost)?;
    let server_addr = server.local_addr()?;
    let mut client = quinn::Endpoint::client(localhost)?;
    client.set_default_client_config(client_config);

    // quinn 0.11 answers a client only once the server side accepts its `Incoming`, so both
    // handshake halves run together.
    let connecting = client.connect(server_addr, "127.0.0.1")?;
    let accepting = async {
        let incoming = server
            .accept()
            .await
            .ok_or("the quinn server endpoint closed")?;
        Ok::<_, BoxError>(incoming.accept()?.await?)
    };
    let (connection, accepted) = within("the quinn handshake", async {
        tokio::join!(connecting, accepting)
    })
    .await?;
    let (connection, accepted) = (connection?, accepted?);
    let (mut send, _client_recv) = connection.open_bi().await?;
    let body = crate::body();
    let prefix = crate::prefix();
    let total = WARM_UP + args.mib;
    let sender = tokio::spawn(async move {
        for _ in 0..total {
            send.write_all(&prefix).await?;
            send.write_all(&body).await?;
        }
        send.finish()?;
        // Keep the stream until the peer has everything (dropping it would reset it).
        let _ = send.stopped().await;
        Ok::<(), BoxError>(())
    });

    // The stream reaches the server with its first bytes.
    let (_server_send, mut recv) = within("the stream", accepted.accept_bi()).await??;
    let frame = (PACKET + prefix.len()) as u64;
    let warm_up_bytes = frame * WARM_UP as u64;
    let total_bytes = frame * total as u64;
    let mut got = 0u64;
    let mut start = Instant::now();
    let mut started = false;
    while got < total_bytes {
        let chunk = within("stream data", recv.read_chunk(usize::MAX, true))
            .await??
            .ok_or("the stream ended early")?;
        got += chunk.bytes.len() as u64;
        if !started && got >= warm_up_bytes {
            start = Instant::now();
            started = true;
        }
    }
    // The warm-up boundary falls inside a chunk of at most a datagram: negligible against
    // the measured megabytes.
    let seconds = start.elapsed().as_secs_f64();
    if within("the end of the stream", recv.read_chunk(usize::MAX, true))
        .await??
        .is_some()
    {
        return Err("more bytes than were sent".into());
    }
    within("the sender", sender).await???;
    accepted.close(0u32.into(), b"done");
    server.close(0u32.into(), b"done");
    client.close(0u32.into(), b"done");
    crate::throughput_json(args, seconds, &[])
}
