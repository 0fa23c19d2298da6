//! Typed RPC end to end over the in-memory transport.
#![cfg(feature = "rpc")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use snakemq::router::PrefixRouter;
use snakemq::rpc::{Envelope, Kind, RemoteErrorKind, Rpc, RpcConfig, RpcError};
use snakemq::{Event, Message, Messaging};
use tokio::sync::mpsc;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A user type travelling as a prost message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Point {
    /// x.
    #[prost(int64, tag = "1")]
    pub x: i64,
    /// y.
    #[prost(int64, tag = "2")]
    pub y: i64,
}

/// The service under test.
#[snakemq::service]
pub trait Calculator {
    /// Adds.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Divides; an error for zero.
    async fn div(&self, a: f64, b: f64) -> Result<f64, String>;
    /// Many argument types.
    #[allow(clippy::too_many_arguments)]
    async fn mix(
        &self,
        small: u8,
        text: String,
        raw: Vec<u8>,
        blob: Bytes,
        list: Vec<i32>,
        maybe: Option<String>,
        point: Point,
    ) -> Vec<String>;
    /// Counts calls.
    async fn count(&self) -> u64;
    /// Sleeps.
    async fn sleep(&self, ms: u64);
    /// Panics.
    async fn boom(&self) -> i32;
    /// One-way.
    #[signal]
    async fn log(&self, line: String);
}

struct Calc {
    calls: AtomicUsize,
    log: mpsc::UnboundedSender<String>,
    /// Signalled when `sleep` starts.
    sleeping: tokio::sync::Notify,
}

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
    async fn div(&self, a: f64, b: f64) -> Result<f64, String> {
        if b == 0.0 {
            Err("division by zero".to_owned())
        } else {
            Ok(a / b)
        }
    }
    #[allow(clippy::too_many_arguments)]
    async fn mix(
        &self,
        small: u8,
        text: String,
        raw: Vec<u8>,
        blob: Bytes,
        list: Vec<i32>,
        maybe: Option<String>,
        point: Point,
    ) -> Vec<String> {
        vec![
            small.to_string(),
            text,
            format!("{raw:?}"),
            format!("{:?}", &blob[..]),
            format!("{list:?}"),
            format!("{maybe:?}"),
            format!("{},{}", point.x, point.y),
        ]
    }
    async fn count(&self) -> u64 {
        self.calls.fetch_add(1, Ordering::SeqCst) as u64 + 1
    }
    async fn sleep(&self, ms: u64) {
        self.sleeping.notify_one();
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    async fn boom(&self) -> i32 {
        panic!("boom on purpose")
    }
    async fn log(&self, line: String) {
        let _ = self.log.send(line);
    }
}

struct Pair {
    server: Messaging,
    client: Messaging,
    server_rpc: Rpc,
    client_rpc: Rpc,
    calc: Arc<Calc>,
    log: mpsc::UnboundedReceiver<String>,
}

/// Runs a peer's event loop: RPC messages to the router's RPC route, the rest to `rest`.
fn pump(messaging: &Messaging, rpc: &Rpc, rest: Option<mpsc::UnboundedSender<Event>>) {
    let mut events = messaging.events();
    let router = rpc.route(PrefixRouter::new());
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if router.dispatch(&event) == 0 {
                if let Some(rest) = &rest {
                    let _ = rest.send(event);
                }
            }
        }
    });
}

async fn pair(name: &str) -> Result<Pair, Box<dyn std::error::Error>> {
    let endpoint = format!("memory:rpc-{name}");
    let server = Messaging::builder("server")
        .listen(&endpoint)
        .start()
        .await?;
    let client = Messaging::builder("client")
        .connect(&endpoint)
        .start()
        .await?;
    let server_rpc = Rpc::new(&server)?;
    let client_rpc = Rpc::new(&client)?;
    let (tx, log) = mpsc::unbounded_channel();
    let calc = Arc::new(Calc {
        calls: AtomicUsize::new(0),
        log: tx,
        sleeping: tokio::sync::Notify::new(),
    });
    server_rpc.serve("calc", CalculatorServer::from_arc(calc.clone()));
    pump(&server, &server_rpc, None);
    pump(&client, &client_rpc, None);
    Ok(Pair {
        server,
        client,
        server_rpc,
        client_rpc,
        calc,
        log,
    })
}

impl Pair {
    fn calc(&self) -> CalculatorClient {
        CalculatorClient::new(&self.client_rpc, "server", "calc")
            .with_deadline(Duration::from_secs(10))
    }

    async fn shutdown(self) {
        self.client.shutdown().await;
        self.server.shutdown().await;
    }
}

#[tokio::test]
async fn call_returns_the_result() -> TestResult {
    let p = pair("call").await?;
    let calc = p.calc();
    assert_eq!(calc.add(2, 40).await?, 42);
    let mixed = calc
        .mix(
            200,
            "text".into(),
            vec![1, 2],
            Bytes::from_static(b"\x03"),
            vec![-1, 5],
            Some("here".into()),
            Point { x: 3, y: -4 },
        )
        .await?;
    assert_eq!(
        mixed,
        vec![
            "200",
            "text",
            "[1, 2]",
            "[3]",
            "[-1, 5]",
            "Some(\"here\")",
            "3,-4"
        ]
    );
    p.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn application_error_is_typed() -> TestResult {
    let p = pair("app-error").await?;
    let calc = p.calc();
    assert_eq!(calc.div(1.0, 4.0).await?, Ok(0.25));
    assert_eq!(
        calc.div(1.0, 0.0).await?,
        Err("division by zero".to_owned())
    );
    p.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn signal_arrives() -> TestResult {
    let mut p = pair("signal").await?;
    p.calc().log("hello".into()).await?;
    assert_eq!(p.log.recv().await.as_deref(), Some("hello"));
    p.shutdown().await;
    Ok(())
}

fn remote_kind(result: Result<impl std::fmt::Debug, RpcError>) -> Option<RemoteErrorKind> {
    match result {
        Err(RpcError::Remote(remote)) => Some(remote.kind),
        other => {
            eprintln!("not a remote error: {other:?}");
            None
        }
    }
}

#[tokio::test]
async fn unknown_object_and_method() -> TestResult {
    let p = pair("unknown").await?;
    let nobody = CalculatorClient::new(&p.client_rpc, "server", "nobody");
    assert_eq!(
        remote_kind(nobody.add(1, 2).await),
        Some(RemoteErrorKind::UnknownObject)
    );
    let raw = p.client_rpc.client("server", "calc");
    assert_eq!(
        remote_kind(raw.call("no_such_method", Bytes::new()).await),
        Some(RemoteErrorKind::UnknownMethod)
    );
    // Arguments that are not the method's message.
    assert_eq!(
        remote_kind(raw.call("add", Bytes::from_static(b"\xff\xff")).await),
        Some(RemoteErrorKind::Decode)
    );
    p.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn handler_panic_is_a_remote_error() -> TestResult {
    let p = pair("panic").await?;
    match p.calc().boom().await {
        Err(RpcError::Remote(remote)) => {
            assert_eq!(remote.kind, RemoteErrorKind::Panic);
            assert!(remote.detail.contains("boom on purpose"), "{remote}");
        }
        other => panic!("unexpected {other:?}"),
    }
    // The server still serves.
    assert_eq!(p.calc().add(1, 1).await?, 2);
    p.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn deadline_ends_a_slow_call() -> TestResult {
    let p = pair("deadline").await?;
    let slow = p.calc().with_deadline(Duration::from_millis(200));
    assert!(matches!(slow.sleep(5_000).await, Err(RpcError::Deadline)));
    assert_eq!(p.calc().add(1, 2).await?, 3);
    p.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn malformed_envelopes_are_dropped_cleanly() -> TestResult {
    let p = pair("malformed").await?;
    let mut garbage = snakemq::rpc::PREFIX.to_vec();
    garbage.extend_from_slice(b"\xff\xff\xff\xff");
    p.client
        .send("server", Message::new(Bytes::from(garbage)))
        .await?;
    let mut unknown_kind = Envelope::new(Kind::Call, 7);
    unknown_kind.kind = 99;
    p.client
        .send("server", Message::new(unknown_kind.to_data()))
        .await?;
    // Messages arrive in order: once this call is answered both were handled.
    assert_eq!(p.calc().add(5, 5).await?, 10);
    assert_eq!(p.server_rpc.stats().malformed, 2);
    p.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_call_delivered_twice_runs_once() -> TestResult {
    let p = pair("twice").await?;
    // A raw caller on the client's messaging: its events go to `rest` (no Rpc).
    let raw = Messaging::builder("raw")
        .connect("memory:rpc-twice")
        .start()
        .await?;
    let (tx, mut rest) = mpsc::unbounded_channel();
    let mut events = raw.events();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let _ = tx.send(event);
        }
    });
    let mut call = Envelope::new(Kind::Call, 12345).target("calc", "count");
    call.deadline_ms = 10_000;
    // The second copy arrives after the first ran (a re-send after a reconnect): it gets
    // the cached reply. A copy arriving while the first runs is dropped (one reply).
    let mut replies = Vec::new();
    while replies.len() < 2 {
        raw.send("server", Message::new(call.to_data())).await?;
        loop {
            match rest.recv().await {
                Some(Event::Received { message, .. }) => {
                    replies.push(Envelope::from_data(&message.data).ok_or("not an envelope")?);
                    break;
                }
                Some(_) => {}
                None => return Err("raw events ended".into()),
            }
        }
    }
    let [first, second] = replies.as_slice() else {
        return Err("two replies expected".into());
    };
    assert_eq!(first, second);
    assert_eq!(first.kind(), Some(Kind::ReplyOk));
    assert_eq!(first.id, 12345);
    assert_eq!(p.calc.calls.load(Ordering::SeqCst), 1);
    assert_eq!(p.server_rpc.stats().duplicates, 1);
    raw.shutdown().await;
    p.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn in_flight_bounds_answer_busy() -> TestResult {
    let endpoint = "memory:rpc-busy";
    let server = Messaging::builder("server")
        .listen(endpoint)
        .start()
        .await?;
    let client = Messaging::builder("client")
        .connect(endpoint)
        .start()
        .await?;
    let mut server_config = RpcConfig::default();
    server_config.max_serving = 1;
    let server_rpc = Rpc::with_config(&server, server_config)?;
    let client_rpc = Rpc::new(&client)?;
    let (tx, _log) = mpsc::unbounded_channel();
    let implementation = Arc::new(Calc {
        calls: AtomicUsize::new(0),
        log: tx,
        sleeping: tokio::sync::Notify::new(),
    });
    server_rpc.serve("calc", CalculatorServer::from_arc(implementation.clone()));
    pump(&server, &server_rpc, None);
    pump(&client, &client_rpc, None);
    let calc =
        CalculatorClient::new(&client_rpc, "server", "calc").with_deadline(Duration::from_secs(10));

    // One slow call occupies the server's only slot; the next is refused as busy.
    let slow = tokio::spawn({
        let calc = calc.clone();
        async move { calc.sleep(60_000).await }
    });
    implementation.sleeping.notified().await;
    assert_eq!(
        remote_kind(calc.add(1, 1).await),
        Some(RemoteErrorKind::Busy)
    );
    assert_eq!(server_rpc.stats().busy, 1);
    slow.abort();

    // A caller whose replies never reach it (no event loop hands them over) and that
    // allows one call waiting: with one call pending, the next fails at once, locally.
    let mut one = RpcConfig::default();
    one.max_calling = 1;
    let deaf = Rpc::with_config(&client, one)?;
    let deaf_calc = CalculatorClient::new(&deaf, "server", "calc");
    let pending = tokio::spawn({
        let calc = deaf_calc.with_deadline(Duration::from_secs(10));
        async move { calc.add(1, 2).await }
    });
    // The spawned call registers itself before its first await: one yield lets it.
    tokio::task::yield_now().await;
    let probe = deaf_calc
        .with_deadline(Duration::from_millis(50))
        .add(3, 4)
        .await;
    let local = matches!(probe, Err(RpcError::Busy));
    assert!(local, "the caller never refused a call locally");
    pending.abort();
    client.shutdown().await;
    server.shutdown().await;
    Ok(())
}
