//! Middleware over TLS: the stack runs after the handshake, on the plaintext, so the trace
//! follows the packets and counts plaintext bytes, and the throttle's rate holds. Paused
//! time on the memory transport.
#![cfg(feature = "tls")]

mod tls_certs;

use std::time::Duration;

use bytes::Bytes;
use snakemq_link::middleware::{ServiceBuilder, ThrottleLayer, TraceLayer};
use snakemq_link::tls::{TlsClient, TlsServer};
use snakemq_link::{ConnectOptions, Link, LinkConfig, ListenOptions};
use tls_certs::Ca;
use tokio::time::{Instant, timeout};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const RATE: u64 = 20_000;

#[tokio::test(start_paused = true)]
async fn throttle_and_trace_see_the_plaintext_under_tls() -> TestResult {
    let ca = Ca::new("test CA")?;
    let leaf = ca.leaf(&["alice"])?;
    let server_tls = TlsServer::builder(leaf.cert.as_bytes(), leaf.key.as_bytes())?.build()?;
    let client_tls = TlsClient::builder()
        .trust_roots(ca.pem.as_bytes())?
        .server_name("alice")?
        .build()?;

    let trace = TraceLayer::new();
    let stats = trace.stats();
    let (server, mut accepted) = Link::new(LinkConfig::default());
    let (_, bound) = server
        .listen_with(&"memory:mw-tls".parse()?, ListenOptions::tls(server_tls))
        .await?;
    let (client, mut connected) = Link::new(
        LinkConfig::default().middleware(
            ServiceBuilder::new()
                .layer(ThrottleLayer::per_connection(RATE))
                .layer(trace),
        ),
    );
    client.connect_with(bound, ConnectOptions::tls(client_tls))?;
    let wait = Duration::from_secs(60);
    let (_, _, writer) = timeout(wait, connected.next())
        .await?
        .ok_or("client link closed")?
        .into_parts();
    let (_, mut reader, _) = timeout(wait, accepted.next())
        .await?
        .ok_or("server link closed")?
        .into_parts();

    let packets: Vec<Bytes> = (0..100u32)
        .map(|i| Bytes::from(vec![i as u8; 1000 + i as usize * 37]))
        .collect();
    let wire: u64 = packets.iter().map(|p| p.len() as u64 + 4).sum();
    let start = Instant::now();
    let sender = {
        let packets = packets.clone();
        tokio::spawn(async move {
            for packet in packets {
                writer.send_packet(packet).await?;
            }
            writer.finish().await;
            Ok::<_, snakemq_link::LinkError>(())
        })
    };
    for (i, want) in packets.iter().enumerate() {
        let got = timeout(wait, reader.next())
            .await??
            .ok_or_else(|| format!("stream ended before packet {i}"))?;
        assert_eq!(&got, want, "packet {i}");
    }
    let elapsed = start.elapsed();
    sender.await??;

    // The trace sits above TLS: plaintext bytes and whole packets.
    assert_eq!(stats.bytes_written(), wire);
    assert_eq!(stats.packets_written(), packets.len() as u64);
    let measured = wire as f64 / elapsed.as_secs_f64();
    let error = (measured - RATE as f64).abs() / RATE as f64;
    println!(
        "tls: {wire} plaintext bytes in {elapsed:?} = {measured:.0} B/s against {RATE} B/s, error {:.2}%",
        error * 100.0
    );
    assert!(error < 0.10, "rate off by {:.1}%", error * 100.0);
    Ok(())
}
