//! Two peers over TCP on loopback; alice's link is throttled to 32 KiB/s and traced. She
//! sends 48 messages of 1 KiB to bob, and the example prints the rate her link actually
//! wrote at (about 1.5 s of transfer).
//!
//! Run: `cargo run -p examples --example throttle`

use std::time::{Duration, Instant};

use snakemq::link::LinkConfig;
use snakemq::link::middleware::{ServiceBuilder, ThrottleLayer, TraceLayer};
use snakemq::{Event, Message, Messaging};

/// Alice's write budget in bytes per second.
const RATE: u64 = 32 * 1024;
const MESSAGES: usize = 48;
const SIZE: usize = 1024;

#[tokio::main]
async fn main() -> Result<(), snakemq::Error> {
    let bob = Messaging::builder("bob")
        .listen("127.0.0.1:0")
        .start()
        .await?;
    let addr = bob
        .local_endpoints()
        .first()
        .map(ToString::to_string)
        .ok_or(snakemq::Error::Shutdown)?;
    let mut bob_events = bob.events();

    // The throttle nearest the socket, the trace nearest the link (it counts the bytes the
    // throttle let through and follows the packets).
    let trace = TraceLayer::new();
    let stats = trace.stats();
    let link = LinkConfig::default().middleware(
        ServiceBuilder::new()
            .layer(ThrottleLayer::per_connection(RATE))
            .layer(trace),
    );
    let start = Instant::now();
    let alice = Messaging::builder("alice")
        .link_config(link)
        .connect(&addr)
        .start()
        .await?;
    println!("alice connects to bob at {addr}, writing at most {RATE} B/s");
    for i in 0..MESSAGES {
        let mut body = vec![b'.'; SIZE];
        for (slot, byte) in body.iter_mut().zip((i as u32).to_be_bytes()) {
            *slot = byte;
        }
        alice.send("bob", Message::new(body)).await?;
    }

    let receive = async {
        let mut received = 0;
        while received < MESSAGES {
            match bob_events.next().await {
                Some(Event::Received { .. }) => received += 1,
                Some(_) => {}
                None => break,
            }
        }
        received
    };
    let received = tokio::time::timeout(Duration::from_secs(10), receive)
        .await
        .map_err(|_| snakemq::Error::Shutdown)?;
    let elapsed = start.elapsed();
    let bytes = stats.bytes_written();
    let measured = bytes as f64 / elapsed.as_secs_f64();
    println!(
        "bob received {received} messages; alice's link wrote {bytes} bytes in {} packets in {:.2} s: {measured:.0} B/s ({:+.1}% of the limit)",
        stats.packets_written(),
        elapsed.as_secs_f64(),
        (measured / RATE as f64 - 1.0) * 100.0,
    );
    bob_events.confirm();
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}
