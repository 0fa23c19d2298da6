//! The tasks behind a link: accept loops (TCP, memory, QUIC) that establish each accepted
//! stream in a task of its own, and connectors that reconnect with backoff. Each reports
//! what it established, or failed to, on the link's [`Incoming`](crate::Incoming) queue.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use super::ConnectorId;
use crate::connection::{
    AliveToken, ClosedSignal, ConnId, ConnInfo, Connection, Direction, TransportKind, alive_pair,
};
use crate::event::{EstablishFailure, LinkEvent};
use crate::memory::{self, MemoryListener};
use crate::stream::{ByteStream, Middleware};
use crate::{Backoff, ConnectOptions, Endpoint, LinkError, ListenOptions};

/// What a listener or connector task needs; no reference back to the link, so dropping the
/// link really stops everything.
#[derive(Clone)]
pub(super) struct TaskCtx {
    pub(super) tx: mpsc::Sender<LinkEvent>,
    pub(super) slots: Arc<Semaphore>,
    pub(super) max_packet_size: u32,
    pub(super) establish_timeout: Duration,
    pub(super) middleware: Option<Middleware>,
}

impl TaskCtx {
    /// Turns an open stream into a connection: `secured` (the TLS handshake, if any), then
    /// the middleware stack, all within the establish timeout.
    async fn establish(
        &self,
        secured: impl Future<Output = Result<ByteStream, LinkError>>,
        alive: AliveToken,
    ) -> Result<Connection, LinkError> {
        let steps = async {
            let stream = secured.await?;
            match &self.middleware {
                Some(middleware) => middleware.apply(stream).await,
                None => Ok(stream),
            }
        };
        let stream = tokio::time::timeout(self.establish_timeout, steps)
            .await
            .map_err(|_| LinkError::EstablishTimeout(self.establish_timeout))??;
        Ok(Connection::spawn(
            stream.info,
            stream.read,
            stream.write,
            self.max_packet_size,
            alive,
        ))
    }

    /// Reports an accepted connection that could not be established.
    fn refused(&self, remote: String, error: LinkError) {
        crate::event::report(
            &self.tx,
            EstablishFailure {
                direction: Direction::Inbound,
                remote,
                connector: None,
                attempt: 1,
                error,
            },
        );
    }

    /// Establishes an accepted stream and queues it on [`Incoming`]; run in the accept
    /// loop's set of tasks, so that a slow handshake never holds up the next accept.
    async fn hand_over_accepted(
        self,
        stream: ByteStream,
        options: Arc<ListenOptions>,
        alive: AliveToken,
    ) {
        let id = stream.info.id;
        let remote = stream.info.remote.clone();
        match self.establish(options.secure(stream), alive).await {
            Ok(connection) => {
                tracing::debug!(conn = %id, %remote, "accepted");
                let _ = self.tx.send(LinkEvent::Connected(connection)).await;
            }
            Err(error) => self.refused(remote, error),
        }
    }
}

fn tcp_parts(stream: TcpStream) -> Result<ByteStream, LinkError> {
    // Small packets (pings, acks) must not wait for Nagle's algorithm.
    stream.set_nodelay(true)?;
    let remote_addr = stream.peer_addr()?;
    let local_addr = stream.local_addr()?;
    let (read, write) = stream.into_split();
    let info = ConnInfo {
        id: ConnId::next(),
        remote_addr: Some(remote_addr),
        local_addr: Some(local_addr),
        remote: remote_addr.to_string(),
        transport: TransportKind::Tcp,
        direction: Direction::Inbound,
        peer_certificates: Vec::new(),
        tls: None,
    };
    Ok(ByteStream::new(info, Box::new(read), Box::new(write)))
}

fn memory_parts(stream: tokio::io::DuplexStream, remote: String) -> ByteStream {
    let (read, write) = tokio::io::split(stream);
    let info = ConnInfo {
        id: ConnId::next(),
        remote_addr: None,
        local_addr: None,
        remote,
        transport: TransportKind::Memory,
        direction: Direction::Inbound,
        peer_certificates: Vec::new(),
        tls: None,
    };
    ByteStream::new(info, Box::new(read), Box::new(write))
}

/// What one accept of a listener gave.
#[expect(
    clippy::large_enum_variant,
    reason = "one value per accepted connection, moved once: boxing would only add an allocation"
)]
pub(super) enum Accepted {
    /// A stream to establish.
    Stream(ByteStream),
    /// Nothing usable this time; keep serving.
    Retry,
    /// The listener is gone.
    Closed,
}

/// A listener that [`accept_loop`] serves (TCP and memory; QUIC has its own loop, since a
/// QUIC connection is established before it yields a stream).
pub(super) trait Acceptor: Send + 'static {
    /// The next accepted stream; cancel safe (the loop drops it to reap finished tasks).
    fn next_stream(&mut self) -> impl Future<Output = Accepted> + Send;
}

impl Acceptor for TcpListener {
    async fn next_stream(&mut self) -> Accepted {
        match self.accept().await {
            Ok((stream, _)) => match tcp_parts(stream) {
                Ok(stream) => Accepted::Stream(stream),
                Err(error) => {
                    tracing::debug!(%error, "accepted socket unusable");
                    Accepted::Retry
                }
            },
            Err(error) => {
                // Usually EMFILE or a connection reset before accept: keep serving.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                Accepted::Retry
            }
        }
    }
}

impl Acceptor for MemoryListener {
    async fn next_stream(&mut self) -> Accepted {
        match self.accept().await {
            Some((stream, remote)) => Accepted::Stream(memory_parts(stream, remote)),
            None => Accepted::Closed,
        }
    }
}

/// Accepts streams while a connection slot is free, and establishes each in a task of its
/// own (so a slow handshake does not hold up the next accept).
pub(super) async fn accept_loop(
    mut listener: impl Acceptor,
    ctx: TaskCtx,
    options: Arc<ListenOptions>,
) {
    // Connections being established; dropped (so aborted) with this task.
    let mut establishing = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.next_stream() => accepted,
            Some(_) = establishing.join_next() => continue,
        };
        let stream = match accepted {
            Accepted::Stream(stream) => stream,
            Accepted::Retry => continue,
            Accepted::Closed => return,
        };
        let Ok(permit) = ctx.slots.clone().try_acquire_owned() else {
            tracing::warn!("connection limit reached, refusing a connection");
            continue;
        };
        let (alive, _closed) = alive_pair(Some(permit));
        establishing.spawn(
            ctx.clone()
                .hand_over_accepted(stream, options.clone(), alive),
        );
        if ctx.tx.is_closed() {
            return;
        }
    }
}

async fn open(endpoint: &Endpoint) -> Result<ByteStream, LinkError> {
    match endpoint {
        Endpoint::Tcp(addr) => {
            // Resolved at every attempt: a name may point somewhere new after a restart.
            let stream =
                TcpStream::connect(addr.as_str())
                    .await
                    .map_err(|source| LinkError::Connect {
                        endpoint: endpoint.to_string(),
                        source,
                    })?;
            tcp_parts(stream)
        }
        Endpoint::Memory(name) => {
            let stream = memory::connect(name, "memory:connector".to_owned()).await?;
            Ok(memory_parts(stream, endpoint.to_string()))
        }
        // QUIC connects with its TLS settings, in `connector_loop`.
        Endpoint::Quic(_) => Err(quic_unsupported(endpoint)),
    }
}

/// The error for a QUIC endpoint where it cannot work: without the `quic` feature, or on
/// the plain path (with the feature, QUIC endpoints never reach `open`).
pub(super) fn quic_unsupported(endpoint: &Endpoint) -> LinkError {
    let reason = if cfg!(feature = "quic") {
        "a QUIC endpoint needs TLS settings: ListenOptions::tls or ConnectOptions::tls"
    } else {
        "QUIC support is not compiled in (feature `quic`)"
    };
    LinkError::InvalidEndpoint {
        endpoint: endpoint.to_string(),
        reason,
    }
}

/// Accepts QUIC connections: each one is established (handshake, the connector's stream,
/// middleware) in a task of its own, like TCP's.
#[cfg(feature = "quic")]
pub(super) async fn quic_accept_loop(listener: crate::quic::QuicListener, ctx: TaskCtx) {
    // Declared after `listener`, so dropped (aborted) before it closes the socket.
    let mut establishing = JoinSet::new();
    loop {
        let incoming = tokio::select! {
            incoming = listener.accept() => incoming,
            Some(_) = establishing.join_next() => continue,
        };
        let Some(incoming) = incoming else {
            return;
        };
        let Ok(permit) = ctx.slots.clone().try_acquire_owned() else {
            tracing::warn!("connection limit reached, refusing a connection");
            incoming.refuse();
            continue;
        };
        let (alive, _closed) = alive_pair(Some(permit));
        let task_ctx = ctx.clone();
        let remote = incoming.remote_address().to_string();
        let accepted = crate::quic::accept(incoming, listener.local_addr());
        establishing.spawn(async move {
            let ctx = task_ctx;
            match ctx.establish(accepted, alive).await {
                Ok(connection) => {
                    let info = connection.info();
                    tracing::debug!(conn = %info.id, remote = %info.remote, "accepted");
                    let _ = ctx.tx.send(LinkEvent::Connected(connection)).await;
                }
                Err(error) => ctx.refused(remote, error),
            }
        });
        if ctx.tx.is_closed() {
            return;
        }
    }
}

/// A connection that ends sooner than this after it was handed out counts as a failed
/// attempt for the connector's backoff.
const STABLE_CONNECTION: Duration = Duration::from_secs(1);

pub(super) async fn connector_loop(
    id: ConnectorId,
    endpoint: Endpoint,
    options: ConnectOptions,
    backoff: Backoff,
    ctx: TaskCtx,
) {
    let mut failures: u32 = 0;
    loop {
        let Ok(permit) = ctx.slots.clone().acquire_owned().await else {
            return;
        };
        let (alive, closed): (AliveToken, ClosedSignal) = alive_pair(Some(permit));
        let established = async {
            // QUIC's handshake is its TLS: the whole of it runs within the establish timeout.
            #[cfg(feature = "quic")]
            if let (Endpoint::Quic(addr), Some(tls)) = (&endpoint, options.tls_client()) {
                let opened = crate::quic::connect(&endpoint, addr, tls);
                return ctx.establish(opened, alive).await;
            }
            let mut stream = open(&endpoint).await?;
            stream.info.direction = Direction::Outbound;
            ctx.establish(options.secure(&endpoint, stream), alive)
                .await
        };
        match established.await {
            Ok(connection) => {
                tracing::debug!(conn = %connection.info().id, "connected");
                if ctx.tx.send(LinkEvent::Connected(connection)).await.is_err() {
                    return;
                }
                let opened = tokio::time::Instant::now();
                // Err means every holder of the token is gone: the connection is over.
                let _ = closed.await;
                if opened.elapsed() >= STABLE_CONNECTION {
                    failures = 0;
                    tracing::debug!("connection gone, reconnecting");
                } else {
                    // Refused right after it opened (a TLS 1.3 client certificate refused
                    // after our side finished, an identity the peer rejects, a full
                    // server): a failed attempt, so the backoff grows instead of
                    // reconnecting every few milliseconds forever.
                    failures = failures.saturating_add(1);
                    tracing::debug!(failures, "connection ended at once, backing off");
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                crate::event::report(
                    &ctx.tx,
                    EstablishFailure {
                        direction: Direction::Outbound,
                        remote: endpoint.to_string(),
                        connector: Some(id),
                        attempt: failures,
                        error,
                    },
                );
            }
        }
        let delay = if failures == 0 {
            backoff.delay(0)
        } else {
            backoff.delay(failures - 1)
        };
        tokio::time::sleep(delay).await;
    }
}
