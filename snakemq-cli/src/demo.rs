//! `snakemq demo`: a narrated scenario on loopback.
//!
//! The scenario is a list of [`Step`]s run in order against one [`Scene`]; each step
//! slots into [`STEPS`] without touching the others. The last one (typed RPC, in
//! [`rpc`]) brings its own peers.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use snakemq::storage::{SqliteOptions, SqliteStore};
use snakemq::{Event, Events, Message, Messaging};

use crate::common::CliError;

mod rpc;

/// Arguments of `snakemq demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {}

/// How long any single wait of the demo may take before it is reported as a failure: the
/// demo must end by itself even if something is broken.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages alice queues while bob is away.
const QUEUED: [&str; 3] = [
    "while you were away #1",
    "while you were away #2",
    "while you were away #3",
];

/// One step of the scenario.
#[derive(Debug, Clone, Copy)]
enum Step {
    Start,
    Hello,
    Reply,
    BobLeaves,
    QueueWhileAway,
    BobReturns,
    SurvivesRestart,
    RpcSurvivesRestart,
}

/// The steps, in order.
const STEPS: &[Step] = &[
    Step::Start,
    Step::Hello,
    Step::Reply,
    Step::BobLeaves,
    Step::QueueWhileAway,
    Step::BobReturns,
    Step::SurvivesRestart,
    Step::RpcSurvivesRestart,
];

/// The persistent message of [`Step::SurvivesRestart`].
const PERSISTED: &str = "kept on disk across a restart";

/// The peers and what the steps hand to each other.
struct Scene {
    alice: Messaging,
    alice_events: Events,
    /// alice's listening address, where bob connects (again).
    addr: String,
    bob: Option<(Messaging, Events)>,
    /// Messages delivered in total, for the summary.
    delivered: u64,
}

pub(crate) async fn run(_args: DemoArgs) -> Result<ExitCode, CliError> {
    let started = Instant::now();
    // alice listens and bob connects, so bob can leave and come back on a fresh
    // connection without any port having to be reused.
    let alice = Messaging::builder("alice")
        .listen("127.0.0.1:0")
        .start()
        .await?;
    let alice_events = alice.events();
    let addr = alice
        .local_endpoints()
        .first()
        .map(|e| e.to_string())
        .ok_or("alice has no listener")?;
    let mut scene = Scene {
        alice,
        alice_events,
        addr,
        bob: None,
        delivered: 0,
    };
    for (n, step) in STEPS.iter().enumerate() {
        print!("[{}/{}] ", n + 1, STEPS.len());
        let result = tokio::time::timeout(STEP_TIMEOUT, run_step(*step, &mut scene)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(format!("demo step {step:?} failed: {error}").into()),
            Err(_) => return Err(format!("demo step {step:?} timed out").into()),
        }
    }
    let alice_stats = scene.alice.stats();
    if let Some((bob, _)) = scene.bob.take() {
        bob.shutdown().await;
    }
    scene.alice.shutdown().await;
    println!(
        "done in {:.2} s: {} messages delivered ({} alice -> bob, {} bob -> alice), \
         {} dropped, order kept across bob's absence, a persistent message kept across a \
         restart, an RPC call run exactly once across bob's restart",
        started.elapsed().as_secs_f64(),
        scene.delivered,
        // The restarted alice's message counts too.
        scene.delivered.saturating_sub(alice_stats.received),
        alice_stats.received,
        alice_stats.dropped,
    );
    Ok(ExitCode::SUCCESS)
}

async fn run_step(step: Step, scene: &mut Scene) -> Result<(), CliError> {
    match step {
        Step::Start => {
            println!("alice listens on {}; bob connects to her", scene.addr);
            bob_connects(scene).await?;
            println!("      alice and bob are connected (acknowledged delivery on)");
        }
        Step::Hello => {
            let (_, bob_events) = scene.bob.as_mut().ok_or("bob is not there")?;
            let uuid = scene.alice.send("bob", "hello bob").await?;
            println!("alice sends \"hello bob\" ({})", snakemq::uuid_hex(&uuid));
            let data = receive(bob_events).await?;
            println!("      bob receives {}", show(&data));
            wait_delivered(&mut scene.alice_events, 1).await?;
            scene.delivered += 1;
            println!("      alice gets bob's acknowledgement: delivered");
        }
        Step::Reply => {
            let (bob, _) = scene.bob.as_ref().ok_or("bob is not there")?;
            bob.send("alice", "hi alice, got it").await?;
            println!("bob replies \"hi alice, got it\"");
            let data = receive(&mut scene.alice_events).await?;
            scene.delivered += 1;
            println!("      alice receives {}", show(&data));
        }
        Step::BobLeaves => {
            let (bob, _) = scene.bob.take().ok_or("bob is not there")?;
            bob.shutdown().await;
            next(&mut scene.alice_events, |e| {
                matches!(e, Event::Disconnected { .. }).then_some(())
            })
            .await?;
            println!("bob goes away; alice sees him disconnect");
        }
        Step::QueueWhileAway => {
            for text in QUEUED {
                scene.alice.send("bob", text).await?;
            }
            let stats = scene.alice.queue_stats("bob")?;
            println!(
                "alice sends {} messages to bob anyway: they wait in her queue \
                 (queue for bob: {} messages, {} bytes)",
                QUEUED.len(),
                stats.messages,
                stats.bytes
            );
        }
        Step::BobReturns => {
            println!("bob comes back and connects to alice again");
            bob_connects(scene).await?;
            let (_, bob_events) = scene.bob.as_mut().ok_or("bob is not there")?;
            for expected in QUEUED {
                let data = receive(bob_events).await?;
                if data != expected.as_bytes() {
                    return Err(format!("bob got {} instead of {expected:?}", show(&data)).into());
                }
                println!("      bob receives {}", show(&data));
            }
            wait_delivered(&mut scene.alice_events, QUEUED.len()).await?;
            scene.delivered += QUEUED.len() as u64;
            let stats = scene.alice.queue_stats("bob")?;
            println!(
                "      all {} delivered in order; alice's queue for bob: {} messages",
                QUEUED.len(),
                stats.messages
            );
        }
        Step::SurvivesRestart => survives_restart(scene).await?,
        Step::RpcSurvivesRestart => rpc::call_survives_restart().await?,
    }
    Ok(())
}

/// A temporary directory, removed with everything in it when dropped (also when a step
/// fails), so the demo leaves nothing behind.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, CliError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("snakemq-demo-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh alice with her queues in the SQLite store at `path`, listening on a free port.
async fn alice_with_store(path: &Path) -> Result<(Messaging, String), CliError> {
    let store = SqliteStore::open(path, SqliteOptions::default())?;
    let alice = Messaging::builder("alice")
        .listen("127.0.0.1:0")
        .store(store)
        .start()
        .await?;
    let addr = alice
        .local_endpoints()
        .first()
        .map(|e| e.to_string())
        .ok_or("alice has no listener")?;
    Ok((alice, addr))
}

/// bob leaves; an alice with a store queues a persistent message for him, restarts from
/// the same file, and bob, connecting to the new alice, gets it.
async fn survives_restart(scene: &mut Scene) -> Result<(), CliError> {
    if let Some((bob, _)) = scene.bob.take() {
        bob.shutdown().await;
    }
    let dir = TempDir::new()?;
    let path = dir.path().join("alice.db");
    let (alice, _) = alice_with_store(&path).await?;
    alice
        .send("bob", Message::new(PERSISTED).persistent())
        .await?;
    println!(
        "bob is away again; alice, now with a SQLite store ({}), sends a persistent \
         message: it is on disk before send returns",
        path.display()
    );
    alice.shutdown().await;
    drop(alice);

    let (alice, addr) = alice_with_store(&path).await?;
    let mut alice_events = alice.events();
    let waiting = alice.queue_stats("bob")?.messages;
    println!("      alice restarts from the same file: {waiting} message waiting for bob");
    let bob = Messaging::builder("bob").connect(&addr).start().await?;
    let mut bob_events = bob.events();
    let data = receive(&mut bob_events).await?;
    if data != PERSISTED.as_bytes() {
        return Err(format!("bob got {} instead of {PERSISTED:?}", show(&data)).into());
    }
    println!(
        "      bob connects to the new alice and receives {}",
        show(&data)
    );
    wait_delivered(&mut alice_events, 1).await?;
    scene.delivered += 1;
    let left = alice.queue_stats("bob")?.messages;
    println!("      acknowledged: deleted from the store ({left} left)");
    bob.shutdown().await;
    alice.shutdown().await;
    Ok(())
}

/// Starts a bob connecting to alice and waits until both sides see the connection.
async fn bob_connects(scene: &mut Scene) -> Result<(), CliError> {
    let bob = Messaging::builder("bob")
        .connect(&scene.addr)
        .start()
        .await?;
    let mut bob_events = bob.events();
    // Connection events are recorded from the first `events()` on: bob may have
    // connected before that, and then only his list of peers says so (if he connected
    // in between, the stale event is skipped by later waits).
    if !bob.connected_peers().iter().any(|p| p == "alice") {
        next(&mut bob_events, |e| {
            matches!(e, Event::Connected { .. }).then_some(())
        })
        .await?;
    }
    next(&mut scene.alice_events, |e| {
        matches!(e, Event::Connected { .. }).then_some(())
    })
    .await?;
    scene.bob = Some((bob, bob_events));
    Ok(())
}

/// The next event `pick` accepts; other events are logged and skipped.
async fn next<T>(
    events: &mut Events,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> Result<T, CliError> {
    while let Some(event) = events.next().await {
        if let Some(found) = pick(&event) {
            return Ok(found);
        }
        tracing::debug!("{event}");
    }
    Err("messaging stopped".into())
}

/// The next received message; the demo is done with it at once, so it is acknowledged.
async fn receive(events: &mut Events) -> Result<Bytes, CliError> {
    let data = next(events, |e| match e {
        Event::Received { message, .. } => Some(message.data.clone()),
        _ => None,
    })
    .await?;
    events.confirm();
    Ok(data)
}

async fn wait_delivered(events: &mut Events, n: usize) -> Result<(), CliError> {
    for _ in 0..n {
        next(events, |e| match e {
            Event::Delivered { .. } => Some(()),
            _ => None,
        })
        .await?;
    }
    Ok(())
}

fn show(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(text) => format!("{text:?}"),
        Err(_) => format!("{} bytes", data.len()),
    }
}
