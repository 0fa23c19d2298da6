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

#[tokio::test]
async fn a_call_survives_the_server_restarting_and_runs_once() -> TestResult {
    // Both sides dispatch through messaging's tap: the client learns of the reconnect
    // from it and sends the call again; the first server never finishes the call.
    let first = Gatekeeper::new(0);
    let (server, _server_rpc) = start_server("127.0.0.1:0", &first).await?;
    let addr = server
        .local_endpoints()
        .first()
        .map(ToString::to_string)
        .ok_or("no listener")?;
    let client = Messaging::builder("client").connect(&addr).start().await?;
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
