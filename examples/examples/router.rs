//! Routing received messages to handlers by prefix, several handlers per prefix.
//!
//! Run: `cargo run -p examples --example router`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use snakemq::router::PrefixRouter;
use snakemq::{Event, Messaging};

#[tokio::main]
async fn main() -> Result<(), snakemq::Error> {
    let worker = Messaging::builder("worker")
        .listen("memory:router-example")
        .start()
        .await?;
    let boss = Messaging::builder("boss")
        .connect("memory:router-example")
        .start()
        .await?;

    let handled = Arc::new(AtomicUsize::new(0));
    let (audit, jobs) = (handled.clone(), handled.clone());
    let router = PrefixRouter::new()
        .route("job:", move |from, msg| {
            println!(
                "job handler: {from} asks {:?}",
                String::from_utf8_lossy(msg.data())
            );
            jobs.fetch_add(1, Ordering::Relaxed);
        })
        .route("job:", move |_, _| {
            // A second handler on the same prefix: both run, nothing is replaced.
            audit.fetch_add(1, Ordering::Relaxed);
        })
        .fallback(|from, msg| println!("unrouted from {from}: {:?}", msg.data()));

    boss.send("worker", "job:build").await?;
    boss.send("worker", "chat:hello").await?;

    let mut events = worker.events();
    let mut messages = 0;
    let run = async {
        while messages < 2 {
            if let Some(event) = events.next().await {
                if matches!(event, Event::Received { .. }) {
                    router.dispatch(&event);
                    messages += 1;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .map_err(|_| snakemq::Error::Shutdown)?;
    println!("handlers run: {}", handled.load(Ordering::Relaxed));
    boss.shutdown().await;
    worker.shutdown().await;
    Ok(())
}
