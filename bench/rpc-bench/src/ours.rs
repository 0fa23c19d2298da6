//! The snakemq side: a `#[snakemq::service]` echo between two `Messaging` peers.

use std::time::Duration;

use snakemq::Messaging;
use snakemq::rpc::Rpc;

use crate::args::Args;
use crate::stats::Summary;
use crate::{BoxError, PAYLOAD};

/// The benchmarked service. `#[snakemq::service]` generates `EchoClient` and `EchoServer`.
#[snakemq::service]
pub(crate) trait Echo {
    /// Returns `data` unchanged.
    async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
}

/// The server's implementation.
struct Echoer;

impl Echo for Echoer {
    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

/// Starts both peers, measures, shuts them down.
pub(crate) async fn run(args: &Args) -> Result<Summary, BoxError> {
    let server = Messaging::builder("rpc-bench-server")
        .listen("127.0.0.1:0")
        .start()
        .await?;
    let addr = server
        .local_endpoints()
        .first()
        .map(ToString::to_string)
        .ok_or("the server has no endpoint")?;
    let client = Messaging::builder("rpc-bench-client")
        .connect(&addr)
        .start()
        .await?;
    let (server_rpc, client_rpc) = (Rpc::new(&server)?, Rpc::new(&client)?);
    server_rpc.serve("echo", EchoServer::new(Echoer));
    server_rpc.spawn_dispatch(&server);
    client_rpc.spawn_dispatch(&client);
    let echo = EchoClient::new(&client_rpc, "rpc-bench-server", "echo")
        .with_deadline(Duration::from_secs(30));

    let payload = vec![0x5a; PAYLOAD];
    let summary = crate::measure(args, || {
        let (echo, payload) = (&echo, payload.clone());
        async move {
            let reply = echo.echo(payload).await?;
            if reply.len() == PAYLOAD {
                Ok(())
            } else {
                Err(format!("echo returned {} bytes", reply.len()).into())
            }
        }
    })
    .await;
    client.shutdown().await;
    server.shutdown().await;
    summary
}
