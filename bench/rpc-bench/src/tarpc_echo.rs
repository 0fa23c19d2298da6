//! The tarpc baseline: the same echo over tarpc's serde TCP transport with bincode, set up
//! as tarpc's own examples do.

use futures::StreamExt;
use tarpc::client;
use tarpc::context;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;

use crate::args::Args;
use crate::stats::Summary;
use crate::{BoxError, PAYLOAD};

/// The benchmarked service. `#[tarpc::service]` generates `EchoClient` and `serve()`.
#[tarpc::service]
pub(crate) trait Echo {
    /// Returns `data` unchanged.
    async fn echo(data: Vec<u8>) -> Vec<u8>;
}

/// The server's implementation.
#[derive(Clone)]
struct Echoer;

impl Echo for Echoer {
    async fn echo(self, _: context::Context, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

/// Starts the server, connects the client, measures.
pub(crate) async fn run(args: &Args) -> Result<Summary, BoxError> {
    let mut listener = tarpc::serde_transport::tcp::listen("127.0.0.1:0", Bincode::default).await?;
    let addr = listener.local_addr();
    // One connection is expected; each request runs in a task of its own, as in tarpc's
    // examples.
    let server = tokio::spawn(async move {
        if let Some(Ok(transport)) = listener.next().await {
            BaseChannel::with_defaults(transport)
                .execute(Echoer.serve())
                .for_each(|response| async move {
                    tokio::spawn(response);
                })
                .await;
        }
    });
    let transport = tarpc::serde_transport::tcp::connect(addr, Bincode::default).await?;
    let echo = EchoClient::new(client::Config::default(), transport).spawn();

    let payload = vec![0x5a; PAYLOAD];
    let summary = crate::measure(args, || {
        let (echo, payload) = (&echo, payload.clone());
        async move {
            let reply = echo.echo(context::current(), payload).await?;
            if reply.len() == PAYLOAD {
                Ok(())
            } else {
                Err(format!("echo returned {} bytes", reply.len()).into())
            }
        }
    })
    .await;
    drop(echo);
    server.abort();
    summary
}
