//! The link: listeners and reconnecting connectors that hand out
//! [`Connection`](crate::Connection)s.
//!
//! Every listener and connector is a task. New connections from all of them arrive, in
//! order, on one [`Incoming`] queue. A connector waits until the connection it made is
//! completely gone (reader, writers and writer task dropped) and then reconnects with
//! [`Backoff`]. The number of open connections is bounded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::event::{Incoming, LinkEvent};
use crate::memory::MemoryListener;
use crate::stream::{ByteStream, Middleware, Passthrough};

mod tasks;

use crate::{Backoff, ConnectOptions, DEFAULT_MAX_PACKET_SIZE, Endpoint, LinkError, ListenOptions};
#[cfg(feature = "quic")]
use tasks::quic_accept_loop;
#[cfg(not(feature = "quic"))]
use tasks::quic_unsupported;
use tasks::{TaskCtx, accept_loop, connector_loop};

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
        self.middleware = Some(Middleware::new(BoxCloneSyncService::new(
            layer.layer(Passthrough),
        )));
        self
    }
}

/// Identifies a listener for removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerId(u64);

/// Identifies a connector for removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectorId(u64);

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
    tx: Mutex<Option<mpsc::Sender<LinkEvent>>>,
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
        let id = self.next_task_id();
        self.register_as(id, task);
        id
    }

    fn next_task_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn register_as(&self, id: u64, task: JoinHandle<()>) {
        let mut tasks = self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|_, t| !t.is_finished());
        tasks.insert(id, task);
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
                let task = tokio::spawn(accept_loop(listener, ctx, options).instrument(span));
                (task, Endpoint::tcp(local))
            }
            Endpoint::Memory(name) => {
                let listener = MemoryListener::bind(name)?;
                let span = tracing::info_span!("listener", addr = %endpoint);
                let task = tokio::spawn(accept_loop(listener, ctx, options).instrument(span));
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
        // The id is known before the task starts, so that its failure reports name it.
        let id = ConnectorId(self.next_task_id());
        let task =
            tokio::spawn(connector_loop(id, endpoint, options, backoff, ctx).instrument(span));
        self.register_as(id.0, task);
        Ok(id)
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
