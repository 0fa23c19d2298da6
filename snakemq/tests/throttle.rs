//! Messaging over a throttled link (`snakemq_link::middleware::ThrottleLayer`): messages
//! and acknowledgements flow in order at the configured rate, keepalive pings pass on an
//! idle throttled connection, and neither a single packet that takes longer than the
//! keepalive window to pass nor, without acknowledgements, a backlog that takes longer than
//! the keepalive wait to drain closes the connection (bytes arriving and bytes leaving both
//! count as signs of life).
//!
//! All tests run with paused time on the memory transport, so the rates measured are the
//! throttle's and the tests take no real time.

use std::time::Duration;

use snakemq::link::LinkConfig;
use snakemq::link::middleware::{
    ServiceBuilder, ThrottleDirection, ThrottleLayer, TraceLayer, TraceStats,
};
use snakemq::proto::Keepalive;
use snakemq::{Event, Events, Message, Messaging};
use tokio::time::Instant;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Bound of any wait, in virtual time.
const WAIT: Duration = Duration::from_secs(300);

/// A link config whose connections write at most `rate` bytes per second, traced.
fn throttled(rate: u64, direction: ThrottleDirection) -> (LinkConfig, TraceStats) {
    let trace = TraceLayer::new();
    let stats = trace.stats();
    let config = LinkConfig::default().middleware(
        ServiceBuilder::new()
            .layer(ThrottleLayer::per_connection(rate).direction(direction))
            .layer(trace),
    );
    (config, stats)
}

/// The next event `f` picks, within [`WAIT`]; any other event goes to `skipped`.
async fn next_matching<T>(
    events: &mut Events,
    mut f: impl FnMut(&Event) -> Option<T>,
) -> Result<T, Box<dyn std::error::Error>> {
    let wait = async {
        while let Some(event) = events.next().await {
            if let Some(found) = f(&event) {
                return Ok(found);
            }
        }
        Err("event stream ended".into())
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .map_err(|_| "timed out waiting for an event")?
}

/// Fails on a disconnection among the events ready now.
fn no_disconnection(events: &mut Events, who: &str) -> TestResult {
    while let Some(event) = events.try_next() {
        if let Event::Disconnected { peer, .. } = event {
            return Err(format!("{who} lost {peer}").into());
        }
    }
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn messages_and_acks_flow_in_order_at_the_rate() -> TestResult {
    const RATE: u64 = 4000;
    const COUNT: usize = 120;
    let endpoint = "memory:throttle-messages";
    let (config, stats) = throttled(RATE, ThrottleDirection::Write);
    let bob = Messaging::builder("bob").listen(endpoint).start().await?;
    let mut bob_events = bob.events();
    let start = Instant::now();
    let alice = Messaging::builder("alice")
        .link_config(config)
        .connect(endpoint)
        .start()
        .await?;
    let mut alice_events = alice.events();
    let mut sent = Vec::new();
    for i in 0..COUNT {
        let body = format!("{i:04} {}", "x".repeat(250));
        sent.push(alice.send("bob", Message::new(body)).await?);
    }
    // Everything arrives, in order, intact.
    for i in 0..COUNT {
        let data = next_matching(&mut bob_events, |e| match e {
            Event::Received { message, .. } => Some(message.data.clone()),
            _ => None,
        })
        .await?;
        assert_eq!(data.get(..5), Some(format!("{i:04} ").as_bytes()));
        assert_eq!(data.len(), 255);
    }
    let done = Instant::now();
    bob_events.confirm();
    // Everything is acknowledged, in order.
    for uuid in &sent {
        let delivered = next_matching(&mut alice_events, |e| match e {
            Event::Delivered { uuid, .. } => Some(*uuid),
            Event::Disconnected { .. } => Some([0; 16]),
            _ => None,
        })
        .await?;
        assert_eq!(&delivered, uuid);
    }
    // The transfer took longer than the keepalive window (2 s + 3 s), and no connection
    // was lost: the steady flow of messages and acks keeps both sides alive.
    let elapsed = done - start;
    assert!(elapsed > Duration::from_secs(5), "{elapsed:?}");
    no_disconnection(&mut bob_events, "bob")?;
    assert_eq!(stats.connections(), 1);
    // The link was busy for the whole transfer: alice wrote at the rate.
    let measured = stats.bytes_written() as f64 / elapsed.as_secs_f64();
    let error = (measured - RATE as f64).abs() / RATE as f64;
    println!(
        "messaging: {} bytes in {elapsed:?} = {measured:.0} B/s against {RATE} B/s, error {:.2}%",
        stats.bytes_written(),
        error * 100.0
    );
    assert!(error < 0.10, "rate off by {:.1}%", error * 100.0);
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn keepalive_passes_an_idle_throttled_connection() -> TestResult {
    let endpoint = "memory:throttle-idle";
    // Both sides throttled both ways, far below anything but pings.
    let (bob_config, bob_stats) = throttled(100, ThrottleDirection::Both);
    let (alice_config, _) = throttled(100, ThrottleDirection::Both);
    let bob = Messaging::builder("bob")
        .link_config(bob_config)
        .listen(endpoint)
        .start()
        .await?;
    let mut bob_events = bob.events();
    let alice = Messaging::builder("alice")
        .link_config(alice_config)
        .connect(endpoint)
        .start()
        .await?;
    next_matching(&mut bob_events, |e| {
        matches!(e, Event::Connected { .. }).then_some(())
    })
    .await?;
    let packets_before = bob_stats.packets_written();
    // A minute of silence: only keepalive pings and pongs cross.
    tokio::time::sleep(Duration::from_secs(60)).await;
    no_disconnection(&mut bob_events, "bob")?;
    let pings = bob_stats.packets_written() - packets_before;
    assert!(pings >= 10, "only {pings} packets in a minute");
    alice.send("bob", "still here").await?;
    let data = next_matching(&mut bob_events, |e| match e {
        Event::Received { message, .. } => Some(message.data.clone()),
        Event::Disconnected { .. } => Some("disconnected".into()),
        _ => None,
    })
    .await?;
    assert_eq!(data.as_ref(), b"still here");
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

/// Sends one 20 KB message at 1000 B/s (20 s on the wire) and returns the first of
/// bob's `Received` (true) or `Disconnected` (false).
async fn slow_single_packet(
    name: &str,
    keepalive: Keepalive,
) -> Result<bool, Box<dyn std::error::Error>> {
    let endpoint = format!("memory:throttle-{name}");
    let (config, _) = throttled(1000, ThrottleDirection::Write);
    let bob = Messaging::builder("bob")
        .keepalive(Some(keepalive))
        .listen(&endpoint)
        .start()
        .await?;
    let mut bob_events = bob.events();
    let alice = Messaging::builder("alice")
        .keepalive(Some(keepalive))
        .link_config(config)
        .connect(&endpoint)
        .start()
        .await?;
    alice.send("bob", vec![7u8; 20_000]).await?;
    let received = next_matching(&mut bob_events, |e| match e {
        Event::Received { message, .. } => Some(message.data.len() == 20_000),
        Event::Disconnected { .. } => Some(false),
        _ => None,
    })
    .await?;
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(received)
}

#[tokio::test(start_paused = true)]
async fn a_packet_slower_than_the_keepalive_window_still_arrives() -> TestResult {
    // 20 s on the wire for one packet, default keepalive (2 s + 3 s): bob's PING gets no
    // PONG in time (it waits behind the message that is still passing), but the bytes of
    // the message keep arriving, and those count as signs of life.
    assert!(slow_single_packet("slow-default", Keepalive::default()).await?);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn without_acks_a_backlog_longer_than_the_keepalive_wait_still_drains() -> TestResult {
    // 50 messages of 200 bytes at 1000 B/s: about 10 s of backlog. Bob has nothing to say
    // (no acks), so alice's PING after 2 s waits behind the backlog, and bob's PONG comes
    // long after her 3 s wait. The bytes bob's side keeps taking are signs of life: the
    // connection stays up and everything arrives.
    let endpoint = "memory:throttle-no-acks";
    let (config, _) = throttled(1000, ThrottleDirection::Write);
    let bob = Messaging::builder("bob")
        .acks(false)
        .listen(endpoint)
        .start()
        .await?;
    let mut bob_events = bob.events();
    let alice = Messaging::builder("alice")
        .acks(false)
        .link_config(config)
        .connect(endpoint)
        .start()
        .await?;
    let mut alice_events = alice.events();
    for i in 0..50 {
        alice
            .send("bob", format!("{i:03}{}", ".".repeat(197)).into_bytes())
            .await?;
    }
    let start = Instant::now();
    for i in 0..50 {
        let data = next_matching(&mut bob_events, |e| match e {
            Event::Received { message, .. } => Some(message.data.clone()),
            _ => None,
        })
        .await?;
        assert!(
            data.starts_with(format!("{i:03}").as_bytes()),
            "message {i}"
        );
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(8),
        "the throttle held: {took:?}"
    );
    while let Some(event) = alice_events.try_next() {
        assert!(
            !matches!(event, Event::Disconnected { .. } | Event::Error { .. }),
            "{event}"
        );
    }
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}
