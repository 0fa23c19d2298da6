//! Two peers that serve each other over one TCP link: alice keeps a clock, bob keeps a ledger.
//! Bob's ledger stamps every entry with the time it asks alice for, so while alice's call to
//! bob is running, bob calls back into alice over the same connection.
//!
//! Run: `cargo run -p examples --example rpc_two_way`

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use snakemq::Messaging;
use snakemq::rpc::Rpc;
use tokio::sync::Notify;

/// Served by alice: a logical clock.
#[snakemq::service]
pub trait Clock {
    /// The next tick.
    async fn tick(&self) -> u64;
}

/// Served by bob: an append-only ledger.
#[snakemq::service]
pub trait Ledger {
    /// Records an entry and returns the tick it was stamped with.
    async fn record(&self, entry: String) -> Result<u64, String>;
    /// All entries as `tick: entry`.
    async fn entries(&self) -> Vec<String>;
    /// One-way: tells the ledger its owner is leaving.
    #[signal]
    async fn goodbye(&self, from: String);
}

struct Ticker(AtomicU64);

impl Clock for Ticker {
    async fn tick(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
}

struct Book {
    /// Bob's client of alice's clock: the call back over the same link.
    clock: ClockClient,
    entries: Mutex<Vec<String>>,
    left: Notify,
}

impl Ledger for Book {
    async fn record(&self, entry: String) -> Result<u64, String> {
        if entry.is_empty() {
            return Err("an empty entry".into());
        }
        let tick = self
            .clock
            .tick()
            .await
            .map_err(|e| format!("cannot ask for the time: {e}"))?;
        self.entries
            .lock()
            .map_err(|_| "the ledger is poisoned".to_owned())?
            .push(format!("{tick}: {entry}"));
        Ok(tick)
    }

    async fn entries(&self) -> Vec<String> {
        self.entries.lock().map(|e| e.clone()).unwrap_or_default()
    }

    async fn goodbye(&self, from: String) {
        println!("bob: {from} says goodbye");
        self.left.notify_one();
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let alice = Messaging::builder("alice")
        .listen("127.0.0.1:0")
        .start()
        .await?;
    let addr = alice
        .local_endpoints()
        .first()
        .map(ToString::to_string)
        .ok_or("alice has no endpoint")?;
    let bob = Messaging::builder("bob").connect(&addr).start().await?;
    let (alice_rpc, bob_rpc) = (Rpc::new(&alice)?, Rpc::new(&bob)?);
    let deadline = Duration::from_secs(10);

    // Each peer serves one object and holds a client of the other's.
    alice_rpc.serve("clock", ClockServer::new(Ticker(AtomicU64::new(0))));
    let book = std::sync::Arc::new(Book {
        clock: ClockClient::new(&bob_rpc, "alice", "clock").with_deadline(deadline),
        entries: Mutex::new(Vec::new()),
        left: Notify::new(),
    });
    bob_rpc.serve("ledger", LedgerServer::from_arc(book.clone()));
    alice_rpc.spawn_dispatch(&alice);
    bob_rpc.spawn_dispatch(&bob);

    let ledger = LedgerClient::new(&alice_rpc, "bob", "ledger").with_deadline(deadline);
    let clock = ClockClient::new(&bob_rpc, "alice", "clock").with_deadline(deadline);

    // alice -> bob, and inside it bob -> alice.
    for entry in ["coffee", "bread"] {
        match ledger.record(entry.into()).await? {
            Ok(tick) => println!("alice: bob recorded {entry:?} at tick {tick}"),
            Err(e) => println!("alice: bob refused {entry:?}: {e}"),
        }
    }
    match ledger.record(String::new()).await? {
        Ok(tick) => println!("alice: bob recorded an empty entry at tick {tick}"),
        Err(e) => println!("alice: bob refused an empty entry: {e}"),
    }
    // bob -> alice directly, at the same time as alice -> bob.
    let (tick, entries) = tokio::try_join!(clock.tick(), ledger.entries())?;
    println!("bob: alice's clock is at {tick}");
    println!("alice: the ledger holds {entries:?}");

    ledger.goodbye("alice".into()).await?;
    tokio::time::timeout(deadline, book.left.notified()).await?;

    bob.shutdown().await;
    alice.shutdown().await;
    Ok(())
}
