//! `Rpc::spawn_dispatch`: RPC messages handed over inside messaging's connection tasks
//! (its tap) instead of the event stream, with the same guarantees as an event loop.
#![cfg(feature = "rpc")]

#[path = "common/poll.rs"]
mod poll;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use poll::{until, within};
use snakemq::Messaging;
use snakemq::rpc::Rpc;
use tokio::sync::{Notify, Semaphore};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The service under test.
#[snakemq::service]
pub trait Gate {
    /// Tells the test it started, waits until the test opens the gate, then counts.
    async fn pass(&self) -> u32;
    /// Returns its argument plus one, at once.
    async fn next(&self, n: u32) -> u32;
}

struct Gatekeeper {
    started: Notify,
    gate: Semaphore,
    passed: AtomicUsize,
}

impl Gatekeeper {
    fn new(permits: usize) -> Arc<Gatekeeper> {
        Arc::new(Gatekeeper {
            started: Notify::new(),
            gate: Semaphore::new(permits),
            passed: AtomicUsize::new(0),
        })
    }
}

impl Gate for Gatekeeper {
    async fn pass(&self) -> u32 {
        self.started.notify_one();
        if let Ok(permit) = self.gate.acquire().await {
            permit.forget();
        }
        self.passed.fetch_add(1, Ordering::SeqCst) as u32 + 1
    }
    async fn next(&self, n: u32) -> u32 {
        n + 1
    }
}

async fn start_server(
    endpoint: &str,
    keeper: &Arc<Gatekeeper>,
) -> Result<(Messaging, Rpc), Box<dyn std::error::Error>> {
    let server = Messaging::builder("server")
        .listen(endpoint)
        .start()
        .await?;
    let rpc = Rpc::new(&server)?;
    rpc.serve("gate", GateServer::from_arc(keeper.clone()));
    rpc.spawn_dispatch(&server);
    Ok((server, rpc))
}

/// A peer "client" connected to `server`'s listener, and that listener's address.
async fn connect_client(
    server: &Messaging,
) -> Result<(String, Messaging), Box<dyn std::error::Error>> {
    let addr = server
        .local_endpoints()
        .first()
        .map(ToString::to_string)
        .ok_or("no listener")?;
    let client = Messaging::builder("client").connect(&addr).start().await?;
    Ok((addr, client))
}

#[tokio::test]
async fn a_call_survives_the_server_restarting_and_runs_once() -> TestResult {
    // Both sides dispatch through messaging's tap: the client learns of the reconnect
    // from it and sends the call again; the first server never finishes the call.
    let first = Gatekeeper::new(0);
    let (server, _server_rpc) = start_server("127.0.0.1:0", &first).await?;
    let (addr, client) = connect_client(&server).await?;
    let client_rpc = Rpc::new(&client)?;
    client_rpc.spawn_dispatch(&client);
    let gate =
        GateClient::new(&client_rpc, "server", "gate").with_deadline(Duration::from_secs(30));
    let call = tokio::spawn(async move { gate.pass().await });
    within(first.started.notified()).await?;
    server.shutdown().await;

    let second = Gatekeeper::new(1);
    let (server, _server_rpc) = start_server(&addr, &second).await?;
    assert_eq!(within(call).await???, 1);
    assert_eq!(first.passed.load(Ordering::SeqCst), 0);
    assert_eq!(second.passed.load(Ordering::SeqCst), 1);
    client.shutdown().await;
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_call_queued_before_dispatch_starts_is_served() -> TestResult {
    let endpoint = "memory:rpc-dispatch-late";
    let server = Messaging::builder("server")
        .listen(endpoint)
        .start()
        .await?;
    let server_rpc = Rpc::new(&server)?;
    server_rpc.serve("gate", GateServer::from_arc(Gatekeeper::new(0)));
    let client = Messaging::builder("client")
        .connect(endpoint)
        .start()
        .await?;
    let client_rpc = Rpc::new(&client)?;
    client_rpc.spawn_dispatch(&client);
    let gate =
        GateClient::new(&client_rpc, "server", "gate").with_deadline(Duration::from_secs(30));
    // The call waits in the server's event stream: nothing dispatches there yet (and
    // messaging reports no event for that on either side).
    let early = tokio::spawn({
        let gate = gate.clone();
        async move { gate.next(1).await }
    });
    until(|| server.stats().received == 1).await?;
    server_rpc.spawn_dispatch(&server);
    assert_eq!(within(early).await???, 2);
    // And the calls after it, which the tap takes.
    assert_eq!(within(gate.next(41)).await??, 42);
    assert_eq!(server_rpc.stats().served, 2);
    client.shutdown().await;
    server.shutdown().await;
    Ok(())
}

/// The caller's side of the ordering test: takes notes sent to it.
#[snakemq::service]
pub trait Inbox {
    /// Records `n`.
    #[signal]
    async fn note(&self, n: u32);
}

#[derive(Default)]
struct Notes(std::sync::Mutex<Vec<u32>>);

impl Inbox for Notes {
    async fn note(&self, n: u32) {
        self.0
            .lock()
            .map(|mut notes| notes.push(n))
            .unwrap_or_default();
    }
}

/// The server's side: a call that first sends a note back to its caller.
#[snakemq::service]
pub trait Ping {
    /// Sends `n` to the caller's inbox, then returns it.
    async fn ping(&self, n: u32) -> u32;
}

struct Pinger(InboxClient);

impl Ping for Pinger {
    async fn ping(&self, n: u32) -> u32 {
        let _ = self.0.note(n).await;
        n
    }
}

/// A server on 127.0.0.1, a client connected to it, and an `Rpc` on each.
async fn rpc_pair() -> Result<(Messaging, Messaging, Rpc, Rpc), Box<dyn std::error::Error>> {
    let server = Messaging::builder("server")
        .listen("127.0.0.1:0")
        .start()
        .await?;
    let (_, client) = connect_client(&server).await?;
    let (server_rpc, client_rpc) = (Rpc::new(&server)?, Rpc::new(&client)?);
    Ok((server, client, server_rpc, client_rpc))
}

/// The RPC envelope kinds a peer receives, in arrival order (the byte after `08`, the
/// kind's key), recorded by a task that reads `messaging`'s event stream and dispatches
/// every event to `rpc`.
fn dispatch_recording_kinds(
    messaging: &Messaging,
    rpc: &Rpc,
) -> Arc<std::sync::Mutex<Vec<Option<u8>>>> {
    let arrived = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut events = messaging.events();
    let (rpc, log) = (rpc.clone(), arrived.clone());
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let snakemq::Event::Received { message, .. } = &event {
                let kind = message.data.get(snakemq::rpc::PREFIX.len() + 1).copied();
                log.lock().map(|mut log| log.push(kind)).unwrap_or_default();
            }
            rpc.dispatch(&event);
        }
    });
    arrived
}

/// The last two kinds recorded by [`dispatch_recording_kinds`].
fn last_two(arrived: &std::sync::Mutex<Vec<Option<u8>>>) -> Vec<Option<u8>> {
    arrived
        .lock()
        .map(|log| log.iter().rev().take(2).rev().copied().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_reply_never_overtakes_what_its_handler_sent_first() -> TestResult {
    // A reply ready at once is written by the server's connection driver outside the
    // queue; the handler's signal to the caller, queued before it, must still arrive
    // first. The caller reads its event stream itself to see the arrival order.
    let (server, client, server_rpc, client_rpc) = rpc_pair().await?;
    let notes = Arc::new(Notes::default());
    client_rpc.serve("inbox", InboxServer::from_arc(notes.clone()));
    let back = InboxClient::new(&server_rpc, "client", "inbox");
    server_rpc.serve("ping", PingServer::new(Pinger(back)));
    server_rpc.spawn_dispatch(&server);
    let arrived = dispatch_recording_kinds(&client, &client_rpc);
    let ping = PingClient::new(&client_rpc, "server", "ping");
    for n in 0..100 {
        assert_eq!(within(ping.ping(n)).await??, n);
        // A signal (kind 4), then the reply (kind 2).
        assert_eq!(last_two(&arrived), [Some(4), Some(2)], "call {n}");
    }
    assert_eq!(
        notes.0.lock().map(|notes| notes.len()).unwrap_or_default(),
        100
    );
    client.shutdown().await;
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_call_never_overtakes_what_its_caller_queued_first() -> TestResult {
    // A call to a connected peer whose queue is drained leaves outside the queue
    // (`Messaging::send_unqueued`); a signal queued before it must still arrive first.
    // The server reads its event stream itself to see the arrival order.
    let (server, client, server_rpc, client_rpc) = rpc_pair().await?;
    let notes = Arc::new(Notes::default());
    server_rpc.serve("inbox", InboxServer::from_arc(notes.clone()));
    server_rpc.serve("gate", GateServer::from_arc(Gatekeeper::new(0)));
    client_rpc.spawn_dispatch(&client);
    let arrived = dispatch_recording_kinds(&server, &server_rpc);
    let (inbox, gate) = (
        InboxClient::new(&client_rpc, "server", "inbox"),
        GateClient::new(&client_rpc, "server", "gate"),
    );
    for n in 0..100 {
        within(inbox.note(n)).await??;
        assert_eq!(within(gate.next(n)).await??, n + 1);
        // The signal (kind 4), then the call (kind 1).
        assert_eq!(last_two(&arrived), [Some(4), Some(1)], "call {n}");
    }
    until(|| notes.0.lock().map(|notes| notes.len()).unwrap_or_default() == 100).await?;
    client.shutdown().await;
    server.shutdown().await;
    Ok(())
}
