//! Typed RPC over throttled links: calls and replies pass through a `ThrottleLayer` on
//! both peers unchanged, concurrent calls included, at the throttled pace. Paused time on
//! the memory transport.
#![cfg(feature = "rpc")]

use std::time::Duration;

use bytes::Bytes;
use snakemq::link::LinkConfig;
use snakemq::link::middleware::{ThrottleDirection, ThrottleLayer};
use snakemq::router::PrefixRouter;
use snakemq::rpc::Rpc;
use snakemq::{Event, Messaging};
use tokio::sync::mpsc;
use tokio::time::Instant;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Bytes per second each peer may write (and read).
const RATE: u64 = 2000;

/// The service under test.
#[snakemq::service]
pub trait Echo {
    /// Returns its argument.
    async fn echo(&self, data: Bytes) -> Bytes;
    /// Adds.
    async fn add(&self, a: i64, b: i64) -> i64;
}

struct EchoImpl;

impl Echo for EchoImpl {
    async fn echo(&self, data: Bytes) -> Bytes {
        data
    }
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
}

/// Runs a peer's event loop: RPC messages to the RPC route, connection changes to the
/// returned channel.
fn pump(messaging: &Messaging, rpc: &Rpc) -> mpsc::UnboundedReceiver<Event> {
    let mut events = messaging.events();
    let router = rpc.route(PrefixRouter::new());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if router.dispatch(&event) == 0 {
                let _ = tx.send(event);
            }
        }
    });
    rx
}

fn throttled() -> LinkConfig {
    LinkConfig::default()
        .middleware(ThrottleLayer::per_connection(RATE).direction(ThrottleDirection::Both))
}

#[tokio::test(start_paused = true)]
async fn typed_calls_work_under_throttle() -> TestResult {
    let endpoint = "memory:throttle-rpc";
    let server = Messaging::builder("server")
        .link_config(throttled())
        .listen(endpoint)
        .start()
        .await?;
    // (The builder's shorthand for the same stack.)
    let client = Messaging::builder("client")
        .middleware(ThrottleLayer::per_connection(RATE).direction(ThrottleDirection::Both))
        .connect(endpoint)
        .start()
        .await?;
    let (server_rpc, client_rpc) = (Rpc::new(&server)?, Rpc::new(&client)?);
    server_rpc.serve("echo", EchoServer::new(EchoImpl));
    let mut server_rest = pump(&server, &server_rpc);
    let _client_rest = pump(&client, &client_rpc);
    let echo =
        EchoClient::new(&client_rpc, "server", "echo").with_deadline(Duration::from_secs(120));

    assert_eq!(echo.add(2, 40).await?, 42);

    // 4 KB each way at 2000 B/s: about 4 s of virtual time, and the bytes come back intact.
    let payload = Bytes::from((0..4000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let start = Instant::now();
    assert_eq!(echo.echo(payload.clone()).await?, payload);
    let elapsed = start.elapsed();
    println!("rpc: 4 KB echo at {RATE} B/s took {elapsed:?}");
    assert!(elapsed >= Duration::from_secs(3), "{elapsed:?}");

    // Many calls in flight at once, all answered correctly.
    let calls = (0..20i64).map(|i| {
        let echo = echo.clone();
        tokio::spawn(async move { echo.add(i, 1000).await })
    });
    let calls: Vec<_> = calls.collect();
    for (i, call) in (0..20i64).zip(calls) {
        assert_eq!(call.await??, i + 1000);
    }

    // No connection was lost on the way.
    while let Ok(event) = server_rest.try_recv() {
        assert!(!matches!(event, Event::Disconnected { .. }), "{event:?}");
    }
    client.shutdown().await;
    server.shutdown().await;
    Ok(())
}
