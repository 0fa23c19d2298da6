//! The link: listeners and reconnecting connectors that hand out [`Connection`]s.
//!
//! Every listener and connector is a task. New connections from all of them arrive, in
//! order, on one [`Incoming`] queue. A connector waits until the connection it made is
//! completely gone (reader, writers and writer task dropped) and then reconnects with
//! [`Backoff`]. The number of open connections is bounded.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::connection::{
    AliveToken, ClosedSignal, ConnId, ConnInfo, Connection, Direction, TransportKind, alive_pair,
};
use crate::memory::{self, MemoryListener};
use crate::stream::{ByteStream, Middleware, Passthrough};
use crate::{Backoff, ConnectOptions, DEFAULT_MAX_PACKET_SIZE, Endpoint, LinkError, ListenOptions};

/// Settings of a [`Link`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LinkConfig {
    /// Largest packet body accepted from a peer; a larger announced size closes the
    /// connection.
    pub max_packet_size: u32,
    /// Reconnect delays of connectors.
    pub backoff: Backoff,
    /// Most connections open at once (listeners refuse, connectors wait beyond it).
    pub max_connections: usize,
    /// New connections waiting to be taken from [`Incoming`] before listeners pause.
    pub incoming_capacity: usize,
    /// Longest time from an open socket to a ready connection (TLS handshake and
    /// middleware); a peer that stalls there is dropped.
    pub establish_timeout: Duration,
    middleware: Option<Middleware>,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            backoff: Backoff::default(),
            max_connections: 1024,
            incoming_capacity: 64,
            establish_timeout: Duration::from_secs(10),
            middleware: None,
        }
    }
}

impl LinkConfig {
    /// Sets the maximum packet body size.
    pub fn max_packet_size(mut self, bytes: u32) -> Self {
        self.max_packet_size = bytes;
        self
    }

    /// Sets the reconnect backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the connection limit.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Sets the time allowed from an open socket to a ready connection.
    pub fn establish_timeout(mut self, timeout: Duration) -> Self {
        self.establish_timeout = timeout;
        self
    }

    /// Wraps every connection's byte stream in a tower middleware stack (see
    /// [`ByteStream`]); `layer` is usually a `tower::ServiceBuilder`. Replaces an earlier
    /// stack.
    pub fn middleware<L>(mut self, layer: L) -> Self
    where
        L: Layer<Passthrough>,
        L::Service: Service<ByteStream, Response = ByteStream, Error = LinkError>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<ByteStream>>::Future: Send + 'static,
    {
        self.middleware = Some(Middleware::new(layer));
        self
    }
}

/// Identifies a listener for removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerId(u64);

/// Identifies a connector for removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectorId(u64);

/// New connections from every listener and connector of a link.
#[derive(Debug)]
pub struct Incoming {
    rx: mpsc::Receiver<Connection>,
}

impl Incoming {
    /// The next new connection; `None` once the link is shut down.
    pub async fn next(&mut self) -> Option<Connection> {
        self.rx.recv().await
    }
}

/// Owns listeners and connectors. Cheap to clone; the tasks stop when the last clone is
/// dropped or [`Link::shutdown`] is called. Connections already handed out stay open until
/// their owner drops them.
#[derive(Debug, Clone)]
pub struct Link {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: LinkConfig,
    /// Taken by `shutdown`, so that `Incoming` ends once the tasks' clones are gone.
    tx: Mutex<Option<mpsc::Sender<Connection>>>,
    slots: Arc<Semaphore>,
    tasks: Mutex<HashMap<u64, JoinHandle<()>>>,
    next_id: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut().unwrap_or_else(|e| e.into_inner());
        for (_, task) in tasks.drain() {
            task.abort();
        }
    }
}

/// What a listener or connector task needs; no reference back to the link, so dropping the
/// link really stops everything.
#[derive(Clone)]
struct TaskCtx {
    tx: mpsc::Sender<Connection>,
    slots: Arc<Semaphore>,
    max_packet_size: u32,
    establish_timeout: Duration,
    middleware: Option<Middleware>,
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

    /// Establishes an accepted stream and queues it on [`Incoming`]; run in the accept
    /// loop's set of tasks, so that a slow handshake never holds up the next accept.
    async fn hand_over_accepted(
        self,
        stream: ByteStream,
        options: Arc<ListenOptions>,
        alive: AliveToken,
    ) {
        let id = stream.info.id;
        match self.establish(options.secure(stream), alive).await {
            Ok(connection) => {
                tracing::debug!(conn = %id, remote = %connection.info().remote, "accepted");
                let _ = self.tx.send(connection).await;
            }
            Err(error) => tracing::info!(conn = %id, %error, "refused an incoming connection"),
        }
    }
}

impl Link {
    /// A link with the given settings and the queue its connections arrive on.
    pub fn new(config: LinkConfig) -> (Link, Incoming) {
        let (tx, rx) = mpsc::channel(config.incoming_capacity.max(1));
        let inner = Inner {
            slots: Arc::new(Semaphore::new(config.max_connections.max(1))),
            config,
            tx: Mutex::new(Some(tx)),
            tasks: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        };
        (
            Link {
                inner: Arc::new(inner),
            },
            Incoming { rx },
        )
    }

    /// The settings.
    pub fn config(&self) -> &LinkConfig {
        &self.inner.config
    }

    fn ctx(&self) -> Result<TaskCtx, LinkError> {
        let tx = self.inner.tx.lock().unwrap_or_else(|e| e.into_inner());
        Ok(TaskCtx {
            tx: tx.clone().ok_or(LinkError::Closed)?,
            slots: self.inner.slots.clone(),
            max_packet_size: self.inner.config.max_packet_size,
            establish_timeout: self.inner.config.establish_timeout,
            middleware: self.inner.config.middleware.clone(),
        })
    }

    fn register(&self, task: JoinHandle<()>) -> u64 {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut tasks = self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|_, t| !t.is_finished());
        tasks.insert(id, task);
        id
    }

    /// Stops a task and waits until it is gone, so whatever it owned (a listening socket, a
    /// memory endpoint name) is released when this returns.
    async fn unregister(&self, id: u64) -> bool {
        let task = {
            let mut tasks = self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner());
            tasks.remove(&id)
        };
        match task {
            Some(task) => {
                task.abort();
                let _ = task.await;
                true
            }
            None => false,
        }
    }

    /// Starts listening with plain connections. Returns the id and the bound endpoint (port
    /// 0 is replaced by the port the system chose).
    pub async fn listen(&self, endpoint: &Endpoint) -> Result<(ListenerId, Endpoint), LinkError> {
        self.listen_with(endpoint, ListenOptions::default()).await
    }

    /// Starts listening with the given options (TLS). Returns the id and the bound endpoint
    /// (port 0 is replaced by the port the system chose).
    pub async fn listen_with(
        &self,
        endpoint: &Endpoint,
        options: ListenOptions,
    ) -> Result<(ListenerId, Endpoint), LinkError> {
        let ctx = self.ctx()?;
        let options = Arc::new(options);
        let (task, bound) = match endpoint {
            Endpoint::Tcp(addr) => {
                let listener =
                    TcpListener::bind(addr.as_str())
                        .await
                        .map_err(|source| LinkError::Bind {
                            endpoint: endpoint.to_string(),
                            source,
                        })?;
                let local = listener.local_addr()?;
                let span = tracing::info_span!("listener", addr = %local);
                let task = tokio::spawn(tcp_accept_loop(listener, ctx, options).instrument(span));
                (task, Endpoint::tcp(local))
            }
            Endpoint::Memory(name) => {
                let listener = MemoryListener::bind(name)?;
                let span = tracing::info_span!("listener", addr = %endpoint);
                let task =
                    tokio::spawn(memory_accept_loop(listener, ctx, options).instrument(span));
                (task, endpoint.clone())
            }
            #[cfg(feature = "quic")]
            Endpoint::Quic(addr) => {
                let tls = options.tls_server();
                let listener = crate::quic::QuicListener::bind(endpoint, addr, tls).await?;
                let local = listener.local_addr();
                let span = tracing::info_span!("listener", addr = %local, transport = "quic");
                let task = tokio::spawn(quic_accept_loop(listener, ctx).instrument(span));
                (task, Endpoint::quic(local))
            }
            #[cfg(not(feature = "quic"))]
            Endpoint::Quic(_) => return Err(quic_unsupported(endpoint)),
        };
        tracing::debug!(%bound, "listening");
        Ok((ListenerId(self.register(task)), bound))
    }

    /// Starts a connector that keeps one plain connection to `endpoint` open, reconnecting
    /// with backoff whenever it fails or closes.
    ///
    /// # Errors
    /// [`LinkError::Closed`] after [`Link::shutdown`].
    pub fn connect(&self, endpoint: Endpoint) -> Result<ConnectorId, LinkError> {
        self.connect_with(endpoint, ConnectOptions::default())
    }

    /// [`connect`](Self::connect) with the given options (TLS). A failed handshake counts
    /// as a failed attempt: the connector retries with backoff.
    ///
    /// # Errors
    /// [`LinkError::Closed`] after [`Link::shutdown`].
    pub fn connect_with(
        &self,
        endpoint: Endpoint,
        options: ConnectOptions,
    ) -> Result<ConnectorId, LinkError> {
        if matches!(endpoint, Endpoint::Quic(_)) {
            // Refused now rather than retried forever.
            #[cfg(feature = "quic")]
            crate::quic::check_connect(&endpoint, options.tls_client())?;
            #[cfg(not(feature = "quic"))]
            return Err(quic_unsupported(&endpoint));
        }
        let ctx = self.ctx()?;
        let backoff = self.inner.config.backoff;
        let span = tracing::info_span!("connector", to = %endpoint);
        let task = tokio::spawn(connector_loop(endpoint, options, backoff, ctx).instrument(span));
        Ok(ConnectorId(self.register(task)))
    }

    /// Stops a listener; its address is free again when this returns. Returns whether it
    /// existed.
    pub async fn remove_listener(&self, id: ListenerId) -> bool {
        self.unregister(id.0).await
    }

    /// Stops a connector (its current connection, if any, stays with its owner). Returns
    /// whether it existed.
    pub async fn remove_connector(&self, id: ConnectorId) -> bool {
        self.unregister(id.0).await
    }

    /// Stops every listener and connector and closes [`Incoming`]: once the stopped tasks
    /// are gone, [`Incoming::next`] returns `None`. Listening or connecting afterwards
    /// fails with [`LinkError::Closed`].
    pub fn shutdown(&self) {
        drop(self.stop_all());
    }

    /// [`shutdown`](Self::shutdown), then waits until every stopped task is gone, so that
    /// the listening sockets and memory endpoint names are free when this returns (a new
    /// listener on the same address does not race the old one's socket).
    pub async fn close(&self) {
        for task in self.stop_all() {
            // An aborted task ends with a cancellation error: that is the point.
            let _ = task.await;
        }
    }

    /// Aborts every task, closes [`Incoming`] and returns the tasks to wait for.
    fn stop_all(&self) -> Vec<JoinHandle<()>> {
        let stopped: Vec<JoinHandle<()>> = {
            let mut tasks = self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner());
            tasks.drain().map(|(_, task)| task).collect()
        };
        for task in &stopped {
            task.abort();
        }
        let mut tx = self.inner.tx.lock().unwrap_or_else(|e| e.into_inner());
        tx.take();
        stopped
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

async fn tcp_accept_loop(listener: TcpListener, ctx: TaskCtx, options: Arc<ListenOptions>) {
    // Connections being established; dropped (so aborted) with this task.
    let mut establishing = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = establishing.join_next() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Usually EMFILE or a connection reset before accept: keep serving.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = ctx.slots.clone().try_acquire_owned() else {
            tracing::warn!("connection limit reached, refusing a connection");
            continue;
        };
        match tcp_parts(stream) {
            Ok(stream) => {
                let (alive, _closed) = alive_pair(Some(permit));
                establishing.spawn(
                    ctx.clone()
                        .hand_over_accepted(stream, options.clone(), alive),
                );
            }
            Err(error) => tracing::debug!(%error, "accepted socket unusable"),
        }
        if ctx.tx.is_closed() {
            return;
        }
    }
}

async fn memory_accept_loop(
    mut listener: MemoryListener,
    ctx: TaskCtx,
    options: Arc<ListenOptions>,
) {
    let mut establishing = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = establishing.join_next() => continue,
        };
        let Some((stream, remote)) = accepted else {
            return;
        };
        let Ok(permit) = ctx.slots.clone().try_acquire_owned() else {
            tracing::warn!("connection limit reached, refusing a connection");
            continue;
        };
        let (alive, _closed) = alive_pair(Some(permit));
        let stream = memory_parts(stream, remote);
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
fn quic_unsupported(endpoint: &Endpoint) -> LinkError {
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
async fn quic_accept_loop(listener: crate::quic::QuicListener, ctx: TaskCtx) {
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
        let accepted = crate::quic::accept(incoming, listener.local_addr());
        establishing.spawn(async move {
            let ctx = task_ctx;
            match ctx.establish(accepted, alive).await {
                Ok(connection) => {
                    let info = connection.info();
                    tracing::debug!(conn = %info.id, remote = %info.remote, "accepted");
                    let _ = ctx.tx.send(connection).await;
                }
                Err(error) => tracing::info!(%error, "refused an incoming connection"),
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

async fn connector_loop(
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
                if ctx.tx.send(connection).await.is_err() {
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
                tracing::debug!(%error, failures, "connect failed");
                failures = failures.saturating_add(1);
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
