//! RPC across failures: a server restarting in the middle of a call, a connection
//! dropping in the middle of one, and signals waiting for their peer within their TTL.
#![cfg(feature = "rpc")]

#[path = "common/poll.rs"]
mod poll;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use poll::{until, within};
use snakemq::rpc::Rpc;
use snakemq::{DropReason, Event, FLAG_PERSISTENT, Messaging};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, mpsc, watch};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The service under test.
#[snakemq::service]
pub trait Work {
    /// Tells the test it started, then waits until the test opens the gate.
    async fn hold(&self) -> u32;
    /// One-way note.
    #[signal]
    async fn note(&self, text: String);
    /// One-way, without arguments.
    #[signal]
    async fn ping(&self);
    /// One-way; tells the test it started, waits for the gate, then notes.
    #[signal]
    async fn held_note(&self, text: String);
    /// One-way and stored durably on the caller's side until delivered.
    #[signal(ttl = "10m", persistent)]
    async fn durable_note(&self, text: String);
}

struct Worker {
    started: Notify,
    gate: Semaphore,
    finished: AtomicUsize,
    notes: mpsc::UnboundedSender<String>,
}

impl Worker {
    fn new(gate: usize) -> (Arc<Worker>, mpsc::UnboundedReceiver<String>) {
        let (notes, rx) = mpsc::unbounded_channel();
        let worker = Worker {
            started: Notify::new(),
            gate: Semaphore::new(gate),
            finished: AtomicUsize::new(0),
            notes,
        };
        (Arc::new(worker), rx)
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
    async fn note(&self, text: String) {
        let _ = self.notes.send(text);
    }
    async fn ping(&self) {
        let _ = self.notes.send("ping".to_owned());
    }
    async fn held_note(&self, text: String) {
        self.started.notify_one();
        if let Ok(permit) = self.gate.acquire().await {
            permit.forget();
        }
        self.finished.fetch_add(1, Ordering::SeqCst);
        let _ = self.notes.send(text);
    }
    async fn durable_note(&self, text: String) {
        let _ = self.notes.send(text);
    }
}

/// Hands every event of a peer to its Rpc; the others (and the flags of RPC messages)
/// go to the returned channels.
fn pump(
    messaging: &Messaging,
    rpc: &Rpc,
) -> (mpsc::UnboundedReceiver<Event>, mpsc::UnboundedReceiver<u32>) {
    let (rest_tx, rest) = mpsc::unbounded_channel();
    let (flags_tx, flags) = mpsc::unbounded_channel();
    let mut events = messaging.events();
    let rpc = rpc.clone();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let Event::Received { message, .. } = &event {
                let _ = flags_tx.send(message.flags);
            }
            if !rpc.dispatch(&event) {
                let _ = rest_tx.send(event);
            }
        }
    });
    (rest, flags)
}

async fn start_server(
    endpoint: &str,
    worker: &Arc<Worker>,
) -> Result<(Messaging, Rpc), Box<dyn std::error::Error>> {
    let server = Messaging::builder("server")
        .listen(endpoint)
        .start()
        .await?;
    let rpc = Rpc::new(&server)?;
    rpc.serve("work", WorkServer::from_arc(worker.clone()));
    drop(pump(&server, &rpc));
    Ok((server, rpc))
}

fn first_endpoint(messaging: &Messaging) -> Result<String, Box<dyn std::error::Error>> {
    Ok(messaging
        .local_endpoints()
        .first()
        .map(|e| e.to_string())
        .ok_or("no listener")?)
}

#[tokio::test]
async fn a_call_survives_the_server_restarting_and_runs_once() -> TestResult {
    // The first server takes the call and never finishes it (its gate stays shut): a
    // restart in the middle of the call.
    let (first, _first_notes) = Worker::new(0);
    let (server, _server_rpc) = start_server("127.0.0.1:0", &first).await?;
    let addr = first_endpoint(&server)?;
    let client = Messaging::builder("client").connect(&addr).start().await?;
    let client_rpc = Rpc::new(&client)?;
    let _rest = pump(&client, &client_rpc);
    let work =
        WorkClient::new(&client_rpc, "server", "work").with_deadline(Duration::from_secs(30));
    let call = tokio::spawn(async move { work.hold().await });
    first.started.notified().await;
    server.shutdown().await;

    // The second server on the same port lets it finish.
    let (second, _second_notes) = Worker::new(1);
    let (server, _server_rpc) = start_server(&addr, &second).await?;
    assert_eq!(within(call).await???, 1);
    assert_eq!(first.finished.load(Ordering::SeqCst), 0);
    assert_eq!(second.finished.load(Ordering::SeqCst), 1);
    client.shutdown().await;
    server.shutdown().await;
    Ok(())
}

/// A TCP forwarder whose connections the test can cut; connections made while it is
/// closed wait until it opens again.
struct Proxy {
    addr: String,
    open: watch::Sender<bool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Result<Proxy, Box<dyn std::error::Error>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let (open, open_rx) = watch::channel(true);
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let list = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut open = open_rx.clone();
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if open.wait_for(|open| *open).await.is_err() {
                        return;
                    }
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                list.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(task.abort_handle());
            }
        });
        Ok(Proxy { addr, open, conns })
    }

    fn cut(&self) {
        self.open.send_replace(false);
        for conn in self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            conn.abort();
        }
    }

    fn resume(&self) {
        self.open.send_replace(true);
    }
}

#[tokio::test]
async fn a_call_sent_again_after_a_reconnect_is_answered_from_the_cache() -> TestResult {
    let (worker, _notes) = Worker::new(0);
    let (server, server_rpc) = start_server("127.0.0.1:0", &worker).await?;
    let proxy = Proxy::start(first_endpoint(&server)?).await?;
    let client = Messaging::builder("client")
        .connect(&proxy.addr)
        .start()
        .await?;
    let client_rpc = Rpc::new(&client)?;
    let _rest = pump(&client, &client_rpc);
    let work =
        WorkClient::new(&client_rpc, "server", "work").with_deadline(Duration::from_secs(30));
    let call = tokio::spawn(async move { work.hold().await });
    worker.started.notified().await;

    // The connection drops while the call runs; the call finishes meanwhile.
    proxy.cut();
    worker.gate.add_permits(1);
    until(|| server_rpc.stats().served == 1).await?;
    // Back online: the client sends the call again with its id, the server answers from
    // its reply cache instead of running it again.
    proxy.resume();
    assert_eq!(within(call).await???, 1);
    until(|| server_rpc.stats().duplicates == 1).await?;
    assert_eq!(worker.finished.load(Ordering::SeqCst), 1);
    client.shutdown().await;
    server.shutdown().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_signal_waits_for_its_peer_within_its_ttl() -> TestResult {
    let endpoint = "memory:rpc-signal-within";
    let client = Messaging::builder("client")
        .connect(endpoint)
        .start()
        .await?;
    let client_rpc = Rpc::new(&client)?;
    let _rest = pump(&client, &client_rpc);
    let work = WorkClient::new(&client_rpc, "server", "work")
        .with_signal_ttl(Some(Duration::from_secs(30)));
    work.note("while away".into()).await?;
    // A persistent signal, through the untyped client (`ping` has no arguments).
    client_rpc
        .client("server", "work")
        .with_persistent_signals(true)
        .signal("ping", Bytes::new(), Some(Duration::from_secs(30)), false)
        .await?;
    tokio::time::sleep(Duration::from_secs(10)).await;

    let (worker, mut notes) = Worker::new(0);
    let server = Messaging::builder("server")
        .listen(endpoint)
        .start()
        .await?;
    let server_rpc = Rpc::new(&server)?;
    server_rpc.serve("work", WorkServer::from_arc(worker.clone()));
    let (_server_rest, mut flags) = pump(&server, &server_rpc);
    assert_eq!(notes.recv().await.as_deref(), Some("while away"));
    assert_eq!(notes.recv().await.as_deref(), Some("ping"));
    assert_eq!(flags.recv().await.map(|f| f & FLAG_PERSISTENT), Some(0));
    assert_eq!(
        flags.recv().await.map(|f| f & FLAG_PERSISTENT),
        Some(FLAG_PERSISTENT)
    );
    client.shutdown().await;
    server.shutdown().await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_signal_past_its_ttl_is_dropped_and_reported() -> TestResult {
    let endpoint = "memory:rpc-signal-late";
    let client = Messaging::builder("client")
        .connect(endpoint)
        .start()
        .await?;
    let client_rpc = Rpc::new(&client)?;
    let (mut rest, _) = pump(&client, &client_rpc);
    let work = WorkClient::new(&client_rpc, "server", "work")
        .with_signal_ttl(Some(Duration::from_secs(5)));
    work.note("too late".into()).await?;
    // Nobody there for 5 s: messaging gives the signal up and says so.
    loop {
        match rest.recv().await.ok_or("client events ended")? {
            Event::Dropped { to, reason, .. } => {
                assert_eq!(&*to, "server");
                assert_eq!(reason, DropReason::Expired);
                break;
            }
            Event::Received { .. } => return Err("a message from nobody".into()),
            _ => {}
        }
    }

    let (worker, mut notes) = Worker::new(0);
    let server = Messaging::builder("server")
        .listen(endpoint)
        .start()
        .await?;
    let server_rpc = Rpc::new(&server)?;
    server_rpc.serve("work", WorkServer::from_arc(worker.clone()));
    let _server_rest = pump(&server, &server_rpc);
    // Per-peer FIFO: had the expired signal been delivered, it would come first.
    work.note("in time".into()).await?;
    assert_eq!(notes.recv().await.as_deref(), Some("in time"));
    client.shutdown().await;
    server.shutdown().await;
    Ok(())
}

/// A server whose event loop acknowledges RPC messages only once they are answered.
async fn start_strict_server(
    endpoint: &str,
    worker: &Arc<Worker>,
) -> Result<Messaging, Box<dyn std::error::Error>> {
    let server = Messaging::builder("server")
        .listen(endpoint)
        .start()
        .await?;
    let rpc = Rpc::new(&server)?;
    rpc.serve("work", WorkServer::from_arc(worker.clone()));
    let mut events = server.events();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            rpc.serve_event(&event).await;
        }
    });
    Ok(server)
}

#[tokio::test]
async fn a_signal_taken_by_a_server_that_stops_runs_after_its_restart() -> TestResult {
    let (first, _first_notes) = Worker::new(0);
    let server = start_strict_server("127.0.0.1:0", &first).await?;
    let addr = first_endpoint(&server)?;
    let client = Messaging::builder("client").connect(&addr).start().await?;
    let client_rpc = Rpc::new(&client)?;
    let _rest = pump(&client, &client_rpc);
    let work = WorkClient::new(&client_rpc, "server", "work");
    work.held_note("survives".into()).await?;
    // The first server runs the signal and stops before it is done.
    first.started.notified().await;
    server.shutdown().await;

    // Nobody sends it again but the client's messaging: it was never acknowledged.
    let (second, mut notes) = Worker::new(1);
    let server = start_strict_server(&addr, &second).await?;
    assert_eq!(within(notes.recv()).await?.as_deref(), Some("survives"));
    assert_eq!(first.finished.load(Ordering::SeqCst), 0);
    assert_eq!(second.finished.load(Ordering::SeqCst), 1);
    client.shutdown().await;
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_call_is_acknowledged_only_once_answered() -> TestResult {
    let (first, _first_notes) = Worker::new(0);
    let server = start_strict_server("127.0.0.1:0", &first).await?;
    let addr = first_endpoint(&server)?;
    // A caller without Rpc (no re-send of its own): only messaging delivers again.
    let raw = Messaging::builder("client").connect(&addr).start().await?;
    let mut raw_events = raw.events();
    let mut call = snakemq::rpc::Envelope::new(snakemq::rpc::Kind::Call, 77).target("work", "hold");
    call.deadline_ms = 30_000;
    raw.send("server", snakemq::Message::new(call.to_data()))
        .await?;
    first.started.notified().await;
    server.shutdown().await;

    let (second, _second_notes) = Worker::new(1);
    let server = start_strict_server(&addr, &second).await?;
    let reply = loop {
        let event = within(raw_events.next()).await?.ok_or("raw events ended")?;
        if let Event::Received { message, .. } = event {
            break snakemq::rpc::Envelope::from_data(&message.data).ok_or("not an envelope")?;
        }
    };
    assert_eq!(reply.kind(), Some(snakemq::rpc::Kind::ReplyOk));
    assert_eq!(reply.id, 77);
    assert_eq!(second.finished.load(Ordering::SeqCst), 1);
    assert_eq!(first.finished.load(Ordering::SeqCst), 0);
    raw.shutdown().await;
    server.shutdown().await;
    Ok(())
}

/// A database file removed when the test ends.
struct TempDb(std::path::PathBuf);

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

#[tokio::test]
async fn a_persistent_signal_survives_the_caller_restarting() -> TestResult {
    use snakemq::storage::{SqliteOptions, SqliteStore};
    let db = TempDb(
        std::env::temp_dir().join(format!("snakemq-rpc-persistent-{}.db", std::process::id())),
    );
    let endpoint = "memory:rpc-persistent-signal";
    let client = Messaging::builder("client")
        .connect(endpoint)
        .store(SqliteStore::open(&db.0, SqliteOptions::default())?)
        .start()
        .await?;
    let client_rpc = Rpc::new(&client)?;
    // Queued while the server is away: one plain signal, two persistent (one by its
    // `#[signal(persistent)]` attribute, one through a client option).
    WorkClient::new(&client_rpc, "server", "work")
        .note("plain".into())
        .await?;
    WorkClient::new(&client_rpc, "server", "work")
        .durable_note("durable".into())
        .await?;
    client_rpc
        .client("server", "work")
        .with_persistent_signals(true)
        .signal("ping", Bytes::new(), Some(Duration::from_secs(600)), false)
        .await?;
    client.shutdown().await;
    // Every handle of the first run goes, and with them the store.
    drop((client, client_rpc));

    // The caller comes back on the same store; the server appears.
    let client = Messaging::builder("client")
        .connect(endpoint)
        .store(SqliteStore::open(&db.0, SqliteOptions::default())?)
        .start()
        .await?;
    let client_rpc = Rpc::new(&client)?;
    let _rest = pump(&client, &client_rpc);
    let (worker, mut notes) = Worker::new(0);
    let (server, _server_rpc) = start_server(endpoint, &worker).await?;
    WorkClient::new(&client_rpc, "server", "work")
        .note("after".into())
        .await?;
    // Per-peer FIFO: the persistent signals first, the plain one is gone with the process.
    assert_eq!(within(notes.recv()).await?.as_deref(), Some("durable"));
    assert_eq!(within(notes.recv()).await?.as_deref(), Some("ping"));
    assert_eq!(within(notes.recv()).await?.as_deref(), Some("after"));
    client.shutdown().await;
    server.shutdown().await;
    Ok(())
}
