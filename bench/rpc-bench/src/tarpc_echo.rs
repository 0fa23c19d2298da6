//! The tarpc baseline: the same echo over tarpc's serde TCP transport with bincode, set up
//! as tarpc's own examples do.

use futures::StreamExt;
use tarpc::client;
use tarpc::context;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tokio::task::JoinHandle;

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

/// A tarpc server task and a client connected to it.
pub(crate) struct TarpcEcho {
    server: JoinHandle<()>,
    echo: EchoClient,
    payload: Vec<u8>,
}

impl TarpcEcho {
    /// Starts the server on 127.0.0.1 and connects the client.
    pub(crate) async fn start() -> Result<Self, BoxError> {
        let mut listener =
            tarpc::serde_transport::tcp::listen("127.0.0.1:0", Bincode::default).await?;
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
        Ok(TarpcEcho {
            server,
            echo,
            payload: vec![0x5a; PAYLOAD],
        })
    }

    /// One echo call, its reply checked.
    pub(crate) async fn call(&self) -> Result<(), BoxError> {
        let reply = self
            .echo
            .echo(context::current(), self.payload.clone())
            .await?;
        crate::check_reply(reply.len())
    }

    /// Drops the client and stops the server.
    pub(crate) async fn stop(self) {
        drop(self.echo);
        self.server.abort();
        // The abort takes effect at the task's next poll; wait for it so that nothing of
        // this stack runs while another is measured.
        let _ = self.server.await;
    }
}
