//! The RPC server side: tower layers around a served object, the per-peer in-flight
//! bound, remote error chains and the option to send no details.
#![cfg(feature = "rpc")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use snakemq::Messaging;
use snakemq::rpc::{Handled, RemoteError, RemoteErrorKind, Rpc, RpcConfig, RpcError, RpcRequest};
use tokio::sync::{Notify, Semaphore};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The service under test.
#[snakemq::service]
pub trait Work {
    /// Tells the test it started, then waits until the test opens the gate.
    async fn hold(&self) -> u32;
    /// Answers at once.
    async fn quick(&self, x: u32) -> u32;
    /// Panics.
    async fn boom(&self) -> u32;
}

struct Worker {
    started: Notify,
    gate: Semaphore,
    finished: AtomicUsize,
}

impl Default for Worker {
    fn default() -> Self {
        Worker {
            started: Notify::new(),
            gate: Semaphore::new(0),
            finished: AtomicUsize::new(0),
        }
    }
}

impl Work for Worker {
    async fn hold(&self) -> u32 {
        self.started.notify_one();
        if let Ok(permit) = self.gate.acquire().await {
            permit.forget();
        }
        self.finished.fetch_add(1, Ordering::SeqCst) as u32 + 1
    }
    async fn quick(&self, x: u32) -> u32 {
        x + 1
    }
    async fn boom(&self) -> u32 {
        panic!("boom with details")
    }
}

/// A server ("server") on `endpoint` and clients with the given names.
async fn setup(
    endpoint: &str,
    config: RpcConfig,
    clients: &[&str],
) -> Result<(Messaging, Rpc, Vec<(Messaging, Rpc)>), Box<dyn std::error::Error>> {
    let server = Messaging::builder("server")
        .listen(endpoint)
        .start()
        .await?;
    let server_rpc = Rpc::with_config(&server, config)?;
    server_rpc.spawn_dispatch(&server);
    let mut out = Vec::new();
    for name in clients {
        let client = Messaging::builder(*name).connect(endpoint).start().await?;
        let rpc = Rpc::new(&client)?;
        rpc.spawn_dispatch(&client);
        out.push((client, rpc));
    }
    Ok((server, server_rpc, out))
}

fn remote(result: Result<impl std::fmt::Debug, RpcError>) -> Result<RemoteError, String> {
    match result {
        Err(RpcError::Remote(remote)) => Ok(remote),
        other => Err(format!("not a remote error: {other:?}")),
    }
}

fn client_of(rpc: &Rpc) -> WorkClient {
    WorkClient::new(rpc, "server", "work").with_deadline(Duration::from_secs(10))
}

#[tokio::test]
async fn load_shed_over_a_concurrency_limit_answers_busy() -> TestResult {
    let (server, server_rpc, clients) =
        setup("memory:rpc-shed", RpcConfig::default(), &["client"]).await?;
    let worker = Arc::new(Worker::default());
    let layers = tower::ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(1);
    server_rpc.serve_with("work", WorkServer::from_arc(worker.clone()), layers);
    let (client, client_rpc) = clients.first().ok_or("no client")?;
    let work = client_of(client_rpc);

    let held = tokio::spawn({
        let work = work.clone();
        async move { work.hold().await }
    });
    worker.started.notified().await;
    // The limit's only permit is taken: the shed layer refuses at once.
    let shed = remote(work.quick(1).await)?;
    assert_eq!(shed.kind, RemoteErrorKind::Busy, "{shed}");
    assert_eq!(server_rpc.stats().busy, 1);
    assert_eq!(server_rpc.stats().served, 0);
    worker.gate.add_permits(1);
    assert_eq!(held.await??, 1);
    // The permit is back.
    assert_eq!(work.quick(1).await?, 2);
    client.shutdown().await;
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn timeout_layer_answers_deadline_and_stops_the_handler() -> TestResult {
    let (server, server_rpc, clients) =
        setup("memory:rpc-timeout", RpcConfig::default(), &["client"]).await?;
    let worker = Arc::new(Worker::default());
    server_rpc.serve_with(
        "work",
        WorkServer::from_arc(worker.clone()),
        tower::timeout::TimeoutLayer::new(Duration::from_millis(100)),
    );
    let (client, client_rpc) = clients.first().ok_or("no client")?;
    let work = client_of(client_rpc);
    // The caller would wait 10 s; the layer gives up after 100 ms.
    let late = remote(work.hold().await)?;
    assert_eq!(late.kind, RemoteErrorKind::Deadline, "{late}");
    assert!(late.detail.contains("work.hold"), "{late}");
    // The handler was aborted, not left running: opening the gate finishes nothing.
    worker.gate.add_permits(1);
    assert_eq!(work.quick(4).await?, 5);
    assert_eq!(worker.finished.load(Ordering::SeqCst), 0);
    client.shutdown().await;
    server.shutdown().await;
    Ok(())
}

/// An error with a cause, as a service's failure.
#[derive(Debug, thiserror::Error)]
#[error("storage unavailable")]
struct Unavailable(#[source] std::io::Error);

#[tokio::test]
async fn a_service_error_carries_its_chain_and_details_can_be_off() -> TestResult {
    // Handler panics say where they happened.
    snakemq::rpc::capture_panic_locations();
    let (server, server_rpc, clients) =
        setup("memory:rpc-chain", RpcConfig::default(), &["client"]).await?;
    let failing = tower::service_fn(|request: RpcRequest| async move {
        if request.method == "quick" {
            return Ok(Handled::Ok(bytes::Bytes::new()));
        }
        Err(Unavailable(std::io::Error::other("disk gone")))
    });
    server_rpc.serve_service("work", failing);
    server_rpc.serve("panics", WorkServer::new(Worker::default()));
    let (client, client_rpc) = clients.first().ok_or("no client")?;
    let failed = remote(client_of(client_rpc).hold().await)?;
    assert_eq!(failed.kind, RemoteErrorKind::Failed);
    assert_eq!(
        failed.detail,
        "work.hold: storage unavailable\ncaused by: disk gone"
    );
    let panicked = remote(WorkClient::new(client_rpc, "server", "panics").boom().await)?;
    assert_eq!(panicked.kind, RemoteErrorKind::Panic);
    assert!(panicked.detail.contains("boom with details"), "{panicked}");
    assert!(panicked.detail.contains("rpc_server.rs:"), "{panicked}");
    client.shutdown().await;
    server.shutdown().await;

    // The same failures from a server that sends no details: kinds only.
    let mut quiet = RpcConfig::default();
    quiet.send_details = false;
    let (server, server_rpc, clients) = setup("memory:rpc-quiet", quiet, &["client"]).await?;
    server_rpc.serve("panics", WorkServer::new(Worker::default()));
    let (client, client_rpc) = clients.first().ok_or("no client")?;
    let panicked = remote(WorkClient::new(client_rpc, "server", "panics").boom().await)?;
    assert_eq!(panicked.kind, RemoteErrorKind::Panic);
    assert_eq!(panicked.detail, "");
    let unknown = remote(
        WorkClient::new(client_rpc, "server", "nobody")
            .quick(1)
            .await,
    )?;
    assert_eq!(unknown.kind, RemoteErrorKind::UnknownObject);
    assert_eq!(unknown.detail, "");
    client.shutdown().await;
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn one_peer_cannot_take_every_place() -> TestResult {
    let mut config = RpcConfig::default();
    config.max_serving = 8;
    config.max_serving_per_peer = 1;
    let (server, server_rpc, clients) =
        setup("memory:rpc-per-peer", config, &["greedy", "other"]).await?;
    let worker = Arc::new(Worker::default());
    server_rpc.serve("work", WorkServer::from_arc(worker.clone()));
    let [(greedy, greedy_rpc), (other, other_rpc)] = clients.as_slice() else {
        return Err("two clients expected".into());
    };
    let held = tokio::spawn({
        let work = client_of(greedy_rpc);
        async move { work.hold().await }
    });
    worker.started.notified().await;
    // The greedy peer is at its bound; the other peer is not.
    let refused = remote(client_of(greedy_rpc).quick(1).await)?;
    assert_eq!(refused.kind, RemoteErrorKind::Busy);
    assert_eq!(client_of(other_rpc).quick(1).await?, 2);
    worker.gate.add_permits(1);
    assert_eq!(held.await??, 1);
    // Its place is given back when the call ends.
    assert_eq!(client_of(greedy_rpc).quick(2).await?, 3);
    assert_eq!(server_rpc.stats().busy, 1);
    greedy.shutdown().await;
    other.shutdown().await;
    server.shutdown().await;
    Ok(())
}
