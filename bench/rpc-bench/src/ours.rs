//! The snakemq side: a `#[snakemq::service]` echo between two `Messaging` peers.

use std::time::Duration;

use snakemq::Messaging;
use snakemq::rpc::Rpc;

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

/// Both peers, connected, with the echo served by one and called by the other.
pub(crate) struct OursEcho {
    server: Messaging,
    client: Messaging,
    /// Kept so that the served object and both dispatchers live as long as the peers.
    _rpcs: (Rpc, Rpc),
    echo: EchoClient,
    payload: Vec<u8>,
}

impl OursEcho {
    /// Starts both peers on 127.0.0.1 and registers the echo.
    pub(crate) async fn start() -> Result<Self, BoxError> {
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
        Ok(OursEcho {
            server,
            client,
            _rpcs: (server_rpc, client_rpc),
            echo,
            payload: vec![0x5a; PAYLOAD],
        })
    }

    /// One echo call, its reply checked.
    pub(crate) async fn call(&self) -> Result<(), BoxError> {
        let reply = self.echo.echo(self.payload.clone()).await?;
        crate::check_reply(reply.len())
    }

    /// Shuts both peers down.
    pub(crate) async fn stop(self) {
        self.client.shutdown().await;
        self.server.shutdown().await;
    }
}
