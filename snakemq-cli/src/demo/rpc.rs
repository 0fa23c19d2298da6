//! The demo's RPC step: alice calls a typed method on bob, bob restarts on the same port
//! in the middle of the call, and the call still runs to completion exactly once.
//!
//! bob's handler is slow on purpose (it waits for a go-ahead that the first bob never
//! gets), so the restart lands while the call is running, every time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use snakemq::rpc::Rpc;
use snakemq::{Event, Events, Messaging};
use tokio::sync::{Notify, Semaphore, mpsc};

use crate::common::CliError;

/// How long alice's call may take in all; shorter than the step's own timeout so a
/// broken call fails with the RPC error rather than a bare timeout.
const CALL_DEADLINE: Duration = Duration::from_secs(5);

/// What bob offers alice. `#[snakemq::service]` generates `GreeterClient` and
/// `GreeterServer` from it.
#[snakemq::service]
pub(crate) trait Greeter {
    /// A greeting for `name`.
    async fn greet(&self, name: String) -> String;
}

/// One run of bob: which one (1 or 2) and how far its handler got.
struct Bob {
    number: usize,
    /// Told when a run of the handler starts.
    started: Notify,
    /// The handler's go-ahead: shut for the first bob, open for the second.
    go: Semaphore,
    /// Runs of the handler that started and finished.
    began: AtomicUsize,
    finished: AtomicUsize,
}

impl Bob {
    fn new(number: usize, go: bool) -> Arc<Bob> {
        Arc::new(Bob {
            number,
            started: Notify::new(),
            go: Semaphore::new(usize::from(go)),
            began: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
        })
    }
}

impl Greeter for Bob {
    async fn greet(&self, name: String) -> String {
        self.began.fetch_add(1, Ordering::SeqCst);
        self.started.notify_one();
        // The first bob never gets the go-ahead: it is shut down while waiting here. A
        // closed gate would mean the same: this run does not finish.
        // With the go-ahead every run finishes (the permit goes back), so a second run
        // on the second bob would show in `finished`.
        match self.go.acquire().await {
            Ok(permit) => drop(permit),
            Err(_) => std::future::pending::<()>().await,
        }
        self.finished.fetch_add(1, Ordering::SeqCst);
        format!("hello {name}, from bob #{}", self.number)
    }
}

/// Hands every event of a peer to its `Rpc` (which also follows connects and
/// disconnects, to send calls lost with a connection again); connection events go on
/// to `seen` so the step can narrate them.
///
/// `events` must be taken before the `Rpc` is made: connection events are recorded only
/// from the first `events()` on, and `Rpc::new` takes the peers connected before that.
fn pump(events: Events, rpc: &Rpc, seen: Option<mpsc::UnboundedSender<Event>>) {
    let (mut events, rpc) = (events, rpc.clone());
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            rpc.dispatch(&event);
            if let (Some(seen), Event::Connected { .. } | Event::Disconnected { .. }) =
                (&seen, &event)
            {
                let _ = seen.send(event);
            }
        }
    });
}

/// A bob listening on `endpoint` and serving `implementation` as "greeter".
async fn start_bob(endpoint: &str, implementation: &Arc<Bob>) -> Result<Messaging, CliError> {
    // The first bob's `shutdown` returned only once his listening socket was closed
    // (`Link::close`), so the address is free again.
    let bob = Messaging::builder("bob").listen(endpoint).start().await?;
    let events = bob.events();
    let rpc = Rpc::new(&bob)?;
    rpc.serve("greeter", GreeterServer::from_arc(implementation.clone()));
    pump(events, &rpc, None);
    Ok(bob)
}

/// The next connection event `want` accepts.
async fn wait_for(
    seen: &mut mpsc::UnboundedReceiver<Event>,
    want: impl Fn(&Event) -> bool,
) -> Result<(), CliError> {
    while let Some(event) = seen.recv().await {
        if want(&event) {
            return Ok(());
        }
    }
    Err("alice stopped".into())
}

/// The step: see the module docs. Fails unless the call is answered and the handler
/// finished exactly once over both bobs.
pub(super) async fn call_survives_restart() -> Result<(), CliError> {
    let first = Bob::new(1, false);
    let bob = start_bob("127.0.0.1:0", &first).await?;
    let addr = bob
        .local_endpoints()
        .first()
        .map(|e| e.to_string())
        .ok_or("bob has no listener")?;
    let alice = Messaging::builder("alice").connect(&addr).start().await?;
    let events = alice.events();
    let alice_rpc = Rpc::new(&alice)?;
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    pump(events, &alice_rpc, Some(seen_tx));

    let greeter = GreeterClient::new(&alice_rpc, "bob", "greeter").with_deadline(CALL_DEADLINE);
    let call = tokio::spawn(async move { greeter.greet("alice".to_owned()).await });
    println!(
        "typed RPC: bob listens on {addr} and serves `greeter`; alice calls \
         greet(\"alice\") on him (deadline {} s)",
        CALL_DEADLINE.as_secs()
    );
    first.started.notified().await;
    println!("      bob #1 takes the call and starts on it (his handler is slow)");

    bob.shutdown().await;
    wait_for(&mut seen, |e| matches!(e, Event::Disconnected { .. })).await?;
    println!("      bob #1 shuts down in the middle of the call: that run never finishes");

    let second = Bob::new(2, true);
    let bob = start_bob(&addr, &second).await?;
    wait_for(&mut seen, |e| matches!(e, Event::Connected { .. })).await?;
    println!(
        "      bob #2 starts on the same port; alice reconnects and sends the call again \
         with the same request id"
    );

    let answer = call.await??;
    let runs = [&first, &second].map(|b| {
        (
            b.began.load(Ordering::SeqCst),
            b.finished.load(Ordering::SeqCst),
        )
    });
    alice.shutdown().await;
    bob.shutdown().await;
    println!("      alice gets {answer:?}");
    let [(began_1, finished_1), (began_2, finished_2)] = runs;
    if (finished_1, began_2, finished_2) != (0, 1, 1) || answer != "hello alice, from bob #2" {
        return Err(format!(
            "the call should run once, on bob #2: bob #1 finished {finished_1}, \
             bob #2 started {began_2} and finished {finished_2}, alice got {answer:?}"
        )
        .into());
    }
    println!(
        "      the call ran to completion exactly once (handler runs started/finished: \
         bob #1 {began_1}/{finished_1}, bob #2 {began_2}/{finished_2})"
    );
    Ok(())
}
