//! Typed RPC: a calculator served by one peer and called by another over TCP on loopback.
//! Shows a call, a method's own error coming back typed, a remote failure (unknown object)
//! and a one-way signal.
//!
//! Run: `cargo run -p examples --example rpc_calculator`

use std::time::Duration;

use snakemq::Messaging;
use snakemq::rpc::{Rpc, RpcError};
use tokio::sync::mpsc;

/// What the server offers. `#[snakemq::service]` generates `CalculatorClient` and
/// `CalculatorServer` from it.
#[snakemq::service]
pub trait Calculator {
    /// Adds two numbers.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Divides; dividing by zero is the method's own error, which the caller gets typed.
    async fn div(&self, a: f64, b: f64) -> Result<f64, String>;
    /// One-way: returns to the caller once queued, the server never replies.
    #[signal(ttl = "30s")]
    async fn log(&self, line: String);
}

/// The implementation; `log` hands lines to the main task so the example can wait for it.
struct Calc {
    lines: mpsc::UnboundedSender<String>,
}

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }

    async fn div(&self, a: f64, b: f64) -> Result<f64, String> {
        if b == 0.0 {
            Err(format!("cannot divide {a} by zero"))
        } else {
            Ok(a / b)
        }
    }

    async fn log(&self, line: String) {
        // The receiver lives until main returns; a closed channel just drops the line.
        let _ = self.lines.send(line);
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Messaging::builder("calc-server")
        .listen("127.0.0.1:0")
        .start()
        .await?;
    let addr = server
        .local_endpoints()
        .first()
        .map(ToString::to_string)
        .ok_or("the server has no endpoint")?;
    println!("server listens on {addr}");
    let client = Messaging::builder("calc-client")
        .connect(&addr)
        .start()
        .await?;

    let (server_rpc, client_rpc) = (Rpc::new(&server)?, Rpc::new(&client)?);
    let (lines_tx, mut lines) = mpsc::unbounded_channel();
    server_rpc.serve("calc", CalculatorServer::new(Calc { lines: lines_tx }));
    server_rpc.spawn_dispatch(&server);
    client_rpc.spawn_dispatch(&client);

    let calc = CalculatorClient::new(&client_rpc, "calc-server", "calc")
        .with_deadline(Duration::from_secs(10));

    let sum = calc.add(40, 2).await?;
    println!("add(40, 2) = {sum}");

    // Two layers: the outer `?` is about the call itself, the inner Result is the method's.
    match calc.div(1.0, 4.0).await? {
        Ok(q) => println!("div(1, 4) = {q}"),
        Err(e) => println!("div(1, 4) failed: {e}"),
    }
    match calc.div(1.0, 0.0).await? {
        Ok(q) => println!("div(1, 0) = {q}"),
        Err(e) => println!("div(1, 0) failed as the method says: {e}"),
    }

    // A failure of the call rather than of the method: nothing is served as "abacus".
    let nobody = CalculatorClient::new(&client_rpc, "calc-server", "abacus")
        .with_deadline(Duration::from_secs(10));
    match nobody.add(1, 1).await {
        Err(RpcError::Remote(remote)) => println!("abacus: {remote}"),
        other => println!("abacus: unexpected {other:?}"),
    }

    calc.log("hello from the client".into()).await?;
    let line = tokio::time::timeout(Duration::from_secs(10), lines.recv())
        .await?
        .ok_or("the server stopped")?;
    println!("server logged {line:?}");

    client.shutdown().await;
    server.shutdown().await;
    Ok(())
}
