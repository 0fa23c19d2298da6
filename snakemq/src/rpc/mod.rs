//! Typed RPC over messaging (feature `rpc`).
//!
//! `#[snakemq::service]` on a trait generates a typed client and a server adaptor; this
//! module is the runtime they use. RPC messages are ordinary messaging messages whose data
//! starts with [`PREFIX`], so they share the peers' connections, queues and reconnects,
//! and any peer can serve and call at the same time.
//!
//! ```
//! use std::time::Duration;
//! use snakemq::Messaging;
//! use snakemq::rpc::{Rpc, RpcError};
//!
//! #[snakemq::service]
//! pub trait Calculator {
//!     async fn add(&self, a: i64, b: i64) -> i64;
//!     async fn div(&self, a: f64, b: f64) -> Result<f64, String>;
//! }
//!
//! struct Calc;
//! impl Calculator for Calc {
//!     async fn add(&self, a: i64, b: i64) -> i64 { a + b }
//!     async fn div(&self, a: f64, b: f64) -> Result<f64, String> {
//!         if b == 0.0 { Err("division by zero".into()) } else { Ok(a / b) }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bob = Messaging::builder("bob").listen("memory:rpc-doc").start().await?;
//! let alice = Messaging::builder("alice").connect("memory:rpc-doc").start().await?;
//! let (bob_rpc, alice_rpc) = (Rpc::new(&bob)?, Rpc::new(&alice)?);
//! bob_rpc.serve("calc", CalculatorServer::new(Calc));
//! // Each peer's event loop hands received messages to its Rpc.
//! bob_rpc.spawn_dispatch(&bob);
//! alice_rpc.spawn_dispatch(&alice);
//! let calc = CalculatorClient::new(&alice_rpc, "bob", "calc").with_deadline(Duration::from_secs(5));
//! assert_eq!(calc.add(2, 3).await?, 5);
//! assert_eq!(calc.div(1.0, 0.0).await?, Err("division by zero".to_owned()));
//! # alice.shutdown().await;
//! # bob.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! A method returning `Result<T, E>` gives the caller `Result<Result<T, E>, RpcError>`:
//! the outer error is about the call (deadline, busy, a remote failure), the inner one is
//! the method's own, exactly as the trait declares it, so `E` needs no conversion from
//! [`RpcError`] and a caller can retry on the first kind without looking at the second.
//!
//! # Serving
//!
//! Each served object is a [`tower::Service`] of [`RpcRequest`]s ([`ObjectService`] around
//! the generated adaptor), so tower layers apply: [`Rpc::serve_with`] takes a layer
//! (`ServiceBuilder::new().load_shed().concurrency_limit(n).timeout(d)`), and a refusal or
//! timeout of those layers reaches the caller as the typed [`RemoteErrorKind::Busy`] or
//! [`RemoteErrorKind::Deadline`]. Beside layers, [`RpcConfig`] bounds the calls running
//! overall and per calling peer. Failures carry their error chain as text
//! ([`RemoteError::detail`]; handler panics with their location after
//! [`capture_panic_locations`]) unless [`RpcConfig::send_details`] is off.
//!
//! # Failures
//!
//! A call runs to completion once across reconnects and a server restart: the caller
//! sends a call that may have been lost with a connection again with the same request id
//! (this needs its connection events, see [`Rpc::dispatch`]), and the server's reply
//! cache answers a call it already finished. A server whose event loop awaits
//! [`Rpc::serve_event`] acknowledges calls and signals only once they are answered, so
//! ones it took before stopping are delivered to it again.

mod cache;
mod client;
mod deadlines;
mod encode;
mod envelope;
mod error;
#[doc(hidden)]
pub mod private;
mod server;
mod service;
mod tap;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tower::util::BoxCloneService;
use tower::{BoxError, Layer, Service, ServiceExt};

pub use client::Client;
pub use envelope::{APPLICATION_ERROR, Envelope, Kind, PREFIX};
pub use error::{RemoteError, RemoteErrorKind, RpcError, WireError};
pub use server::{DispatchError, Handled, HandlerFuture, Serve};
pub use service::{
    HandlerPanic, ObjectService, RpcRequest, ServiceFuture, capture_panic_locations, error_chain,
};

use self::tap::RpcTap;
use crate::messaging::Unqueued;
use crate::router::PrefixRouter;
use crate::{Event, Message, Messaging, ReceivedMessage};

/// Settings of an [`Rpc`] handle.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RpcConfig {
    /// Deadline of calls for new clients (default 30 s).
    pub deadline: Duration,
    /// Calls this side may have waiting for replies (default 1024); more fail with
    /// [`RpcError::Busy`] at once.
    pub max_calling: usize,
    /// Calls and signals this side may run at once (default 256); more are answered with
    /// a remote `Busy` error.
    pub max_serving: usize,
    /// Calls and signals this side may run at once for one peer (default 64), so that one
    /// peer cannot take every place of `max_serving`; more are answered with `Busy`.
    pub max_serving_per_peer: usize,
    /// Replies remembered per (peer, request id) so a call delivered twice runs once
    /// (default 4096).
    pub reply_cache: usize,
    /// TTL of a reply to a call without a deadline (default 60 s).
    pub reply_ttl: Duration,
    /// Whether failures carry details (panic messages, names) to callers (default true).
    pub send_details: bool,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            deadline: Duration::from_secs(30),
            max_calling: 1024,
            max_serving: 256,
            max_serving_per_peer: 64,
            reply_cache: 4096,
            reply_ttl: Duration::from_secs(60),
            send_details: true,
        }
    }
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RpcStats {
    /// RPC messages that could not be decoded (dropped).
    pub malformed: u64,
    /// Calls received again and answered from the reply cache (or while running).
    pub duplicates: u64,
    /// Calls and signals refused as busy: at an in-flight bound (overall or per peer) or
    /// by a load-shed layer.
    pub busy: u64,
    /// Calls and signals run to an end (success, error, panic or deadline).
    pub served: u64,
}

#[derive(Default)]
struct Counters {
    malformed: AtomicU64,
    duplicates: AtomicU64,
    busy: AtomicU64,
    served: AtomicU64,
}

/// A call waiting for its reply.
struct PendingCall {
    peer: Arc<str>,
    /// The reply as received (its fields stay in the message data: no owned
    /// `Envelope` to build and move through the channel), or the deadline's error
    /// (`deadlines.rs`).
    reply: oneshot::Sender<Result<envelope::Received, RpcError>>,
    /// The call's message data, sent again after a reconnect.
    data: Bytes,
    /// When the caller stops waiting.
    expires: tokio::time::Instant,
    /// Whether it went out while the peer was connected: then the connection may have
    /// dropped after the server took it, and it is sent again when the peer is back.
    on_link: bool,
}

/// Calls waiting for replies and the peers connected now (one lock: a call and a
/// reconnect must see each other in one order).
#[derive(Default)]
struct Calls {
    // foldhash: looked up on every call and reply; SipHash showed in profiles.
    pending: foldhash::HashMap<u64, PendingCall>,
    connected: foldhash::HashSet<Arc<str>>,
    /// The deadline the deadline task sleeps until (`deadlines.rs`); no later than the
    /// earliest deadline of `pending`.
    armed: Option<tokio::time::Instant>,
}

/// Places taken by running calls, overall and per peer.
#[derive(Default)]
struct Serving {
    total: usize,
    per_peer: foldhash::HashMap<Arc<str>, usize>,
}

/// A served object.
#[derive(Clone)]
enum ObjectHandle {
    /// Served without layers ([`Rpc::serve`]): called directly. The type-erased tower
    /// path costs three allocations per call (the boxed clone of the service, tower's
    /// boxed future and the service's own) that a bare [`ObjectService`], always ready,
    /// does not need.
    Plain(ObjectService),
    /// Any tower service ([`Rpc::serve_with`], [`Rpc::serve_service`]), type-erased.
    Layered(BoxCloneService<RpcRequest, Handled, BoxError>),
}

struct Inner {
    messaging: Messaging,
    config: RpcConfig,
    runtime: tokio::runtime::Handle,
    servers: Mutex<foldhash::HashMap<Arc<str>, ObjectHandle>>,
    calls: Mutex<Calls>,
    cache: Mutex<cache::ReplyCache>,
    next_id: AtomicU64,
    serving: Mutex<Serving>,
    stats: Counters,
    /// Wakes the deadline task (`deadlines.rs`).
    deadline_wake: Arc<tokio::sync::Notify>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The deadline task ends when it finds the handle gone.
        self.deadline_wake.notify_one();
    }
}

impl Inner {
    // A panic while holding one of these locks cannot leave the maps half-updated (every
    // critical section is a single map operation), so a poisoned lock is used as is.
    fn lock_servers(&self) -> MutexGuard<'_, foldhash::HashMap<Arc<str>, ObjectHandle>> {
        self.servers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_calls(&self) -> MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_serving(&self) -> MutexGuard<'_, Serving> {
        self.serving.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_cache(&self) -> MutexGuard<'_, cache::ReplyCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Typed RPC on one [`Messaging`] instance: serves registered objects and makes clients.
/// Cheap to clone.
///
/// It does not read events itself (the application owns the event stream): hand it each
/// event with [`Rpc::dispatch`], or add its route to a [`PrefixRouter`] with
/// [`Rpc::route`].
#[derive(Clone)]
pub struct Rpc {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rpc")
            .field("identity", &self.inner.messaging.identity())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Rpc {
    /// RPC with the default settings.
    ///
    /// # Errors
    /// [`RpcError::NoRuntime`] outside a tokio runtime.
    pub fn new(messaging: &Messaging) -> Result<Rpc, RpcError> {
        Rpc::with_config(messaging, RpcConfig::default())
    }

    /// RPC with the given settings.
    ///
    /// # Errors
    /// [`RpcError::NoRuntime`] outside a tokio runtime.
    pub fn with_config(messaging: &Messaging, config: RpcConfig) -> Result<Rpc, RpcError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| RpcError::NoRuntime)?;
        // Request ids start at a random point so that a restarted caller does not reuse
        // the ids of its previous run, which a server may still have cached.
        let first_id = rand::random::<u64>() >> 1;
        // Peers connected before this handle saw their `Connected` event: calls to them
        // go out on a link too.
        let calls = Calls {
            pending: Default::default(),
            connected: messaging
                .connected_peers()
                .into_iter()
                .map(Arc::from)
                .collect(),
            armed: None,
        };
        let rpc = Rpc {
            inner: Arc::new(Inner {
                messaging: messaging.clone(),
                cache: Mutex::new(cache::ReplyCache::new(config.reply_cache)),
                config,
                runtime,
                servers: Mutex::new(Default::default()),
                calls: Mutex::new(calls),
                next_id: AtomicU64::new(first_id),
                serving: Mutex::new(Serving::default()),
                stats: Counters::default(),
                deadline_wake: Default::default(),
            }),
        };
        deadlines::spawn(&rpc.inner);
        Ok(rpc)
    }

    /// Registers `server` (a generated `<Trait>Server`) under `object`, replacing a
    /// previous one; returns whether one was replaced.
    pub fn serve(&self, object: &str, server: impl Serve) -> bool {
        let handle = ObjectHandle::Plain(ObjectService::new(server));
        self.inner
            .lock_servers()
            .insert(Arc::from(object), handle)
            .is_some()
    }

    /// Registers `server` under `object` wrapped in a tower layer: every call to the
    /// object goes through it. Errors of tower's own layers come back to callers typed:
    /// a load-shed refusal as [`RemoteErrorKind::Busy`], a timeout as
    /// [`RemoteErrorKind::Deadline`]; any other layer error as [`RemoteErrorKind::Failed`]
    /// with its error chain.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # #[snakemq::service]
    /// # pub trait Echo { async fn echo(&self, s: String) -> String; }
    /// # struct E;
    /// # impl Echo for E { async fn echo(&self, s: String) -> String { s } }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let m = snakemq::Messaging::builder("s").start().await?;
    /// # let rpc = snakemq::rpc::Rpc::new(&m)?;
    /// let layers = tower::ServiceBuilder::new()
    ///     .load_shed()
    ///     .concurrency_limit(8)
    ///     .timeout(Duration::from_secs(2));
    /// rpc.serve_with("echo", EchoServer::new(E), layers);
    /// # m.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn serve_with<L>(&self, object: &str, server: impl Serve, layer: L) -> bool
    where
        L: Layer<ObjectService>,
        L::Service: Service<RpcRequest, Response = Handled> + Clone + Send + 'static,
        <L::Service as Service<RpcRequest>>::Error: Into<BoxError>,
        <L::Service as Service<RpcRequest>>::Future: Send + 'static,
    {
        self.serve_service(object, layer.layer(ObjectService::new(server)))
    }

    /// Registers any tower service under `object` (build one around an
    /// [`ObjectService`], or answer [`RpcRequest`]s directly); returns whether one was
    /// replaced. The service is cloned for each call, so a layer's shared state (a
    /// concurrency limit's permits) is shared by all calls.
    pub fn serve_service<S>(&self, object: &str, service: S) -> bool
    where
        S: Service<RpcRequest, Response = Handled> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        let handle = ObjectHandle::Layered(BoxCloneService::new(service.map_err(Into::into)));
        self.inner
            .lock_servers()
            .insert(Arc::from(object), handle)
            .is_some()
    }

    /// Removes the object registered under `object`; returns whether there was one.
    pub fn unserve(&self, object: &str) -> bool {
        self.inner.lock_servers().remove(object).is_some()
    }

    /// An untyped client of `object` on `peer` (generated clients wrap one).
    pub fn client(&self, peer: &str, object: &str) -> Client {
        Client {
            inner: self.inner.clone(),
            peer: Arc::from(peer),
            object: Arc::from(object),
            deadline: self.inner.config.deadline,
            signal_ttl: None,
            persistent_signals: false,
        }
    }

    /// Makes this handle the whole event loop of a peer that uses `messaging` for RPC
    /// only: every received message goes to [`Rpc::dispatch`] (messages that are not RPC
    /// are dropped), and connection events reach it too. A peer with messages of its own
    /// reads its events itself and dispatches them (or routes them with [`Rpc::route`]).
    ///
    /// The messages are handed over inside messaging's connection tasks, not through the
    /// event stream: a call is handled in the task that read it, and its reply usually
    /// leaves in the same write as the call's acknowledgement (if the call was queued: a
    /// call to a connected peer whose queue had nothing unsent, and a reply written this
    /// way, go out unacknowledged to a peer that understands it; see `docs/PROTOCOL.md`,
    /// UNACKED_MESSAGE). Events other than received
    /// messages stay in the event stream for whoever reads [`Messaging::events`]. Only
    /// the first handle to do this on an instance gets that path; a second one reads the
    /// event stream.
    ///
    /// The returned task keeps this handle (and the objects it serves) alive until
    /// messaging stops; it dispatches the messages that reached the event stream before
    /// this call.
    pub fn spawn_dispatch(&self, messaging: &Messaging) -> tokio::task::JoinHandle<()> {
        let tap = Arc::new(RpcTap(Arc::downgrade(&self.inner)));
        let tapped = messaging.set_tap(tap);
        let (mut events, rpc) = if tapped {
            (messaging.received_events(), self.clone())
        } else {
            (messaging.events(), self.clone())
        };
        self.inner.runtime.spawn(async move {
            while let Some(event) = events.next().await {
                // With the tap, connection events reach this handle from the tap: seeing
                // them here too would send pending calls twice.
                if !tapped || matches!(event, Event::Received { .. }) {
                    rpc.dispatch(&event);
                }
            }
        })
    }

    /// Handles an event if it is an RPC message; returns whether it was one.
    ///
    /// It also follows [`Event::Connected`] and [`Event::Disconnected`] (returning false
    /// for them): a call that went out while its peer was connected is sent again, with
    /// the same request id, when the peer connects again, because the server may have
    /// taken it and then lost it (a restart in the middle of the call). The server runs
    /// it if it never finished it and answers from its reply cache if it did.
    pub fn dispatch(&self, event: &Event) -> bool {
        match event {
            Event::Received { from, message } if message.data.starts_with(PREFIX) => {
                self.handle(from.clone(), message, None, None);
                true
            }
            Event::Connected { peer, .. } => {
                self.peer_connected(peer);
                false
            }
            Event::Disconnected { peer, .. } => {
                self.peer_disconnected(peer);
                false
            }
            _ => false,
        }
    }

    /// What [`Rpc::dispatch`] does for [`Event::Disconnected`]: calls to `peer` from now
    /// on wait in messaging's queue until it is back.
    pub fn peer_disconnected(&self, peer: &str) {
        self.inner.lock_calls().connected.remove(peer);
    }

    /// What [`Rpc::dispatch`] does for [`Event::Connected`]: sends calls to `peer` that
    /// may have been lost with the previous connection again. Call it when routing with
    /// [`Rpc::route`] (the router sees received messages only).
    pub fn peer_connected(&self, peer: &Arc<str>) {
        let now = tokio::time::Instant::now();
        let again: Vec<(Bytes, Duration)> = {
            let mut calls = self.inner.lock_calls();
            calls.connected.insert(peer.clone());
            calls
                .pending
                .values_mut()
                .filter(|call| call.peer == *peer)
                .filter_map(|call| {
                    // Calls queued while the peer was away go out on this connection by
                    // messaging's queue; from now on they are on the link too.
                    let resend = std::mem::replace(&mut call.on_link, true);
                    let left = call.expires.saturating_duration_since(now);
                    (resend && !left.is_zero()).then(|| (call.data.clone(), left))
                })
                .collect()
        };
        for (data, left) in again {
            tracing::debug!(%peer, "rpc call sent again after a reconnect");
            let messaging = self.inner.messaging.clone();
            let peer = peer.clone();
            let ttl = left.max(Duration::from_secs(1));
            self.inner.runtime.spawn(async move {
                if let Err(error) = messaging.send(&peer, Message::new(data).ttl(ttl)).await {
                    tracing::warn!(%peer, %error, "rpc call not sent again");
                }
            });
        }
    }

    /// Adds the route for RPC messages to a router. A router sees received messages
    /// only: hand connection events to [`Rpc::dispatch`] as well (or call
    /// [`Rpc::peer_connected`] and [`Rpc::peer_disconnected`]) so that calls lost with a
    /// connection are sent again.
    pub fn route(&self, router: PrefixRouter) -> PrefixRouter {
        let rpc = self.clone();
        router.route(PREFIX, move |from, message| {
            rpc.handle(Arc::from(from), message, None, None);
        })
    }

    /// Counters since start.
    pub fn stats(&self) -> RpcStats {
        let c = &self.inner.stats;
        RpcStats {
            malformed: c.malformed.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            busy: c.busy.load(Ordering::Relaxed),
            served: c.served.load(Ordering::Relaxed),
        }
    }

    /// Like [`Rpc::dispatch`], but for a call it returns only once the call's reply is
    /// queued, and for a signal once it has run.
    ///
    /// Messaging acknowledges a received message when the application asks for the next
    /// event, so an event loop that awaits this before asking acknowledges a call only
    /// once it is answered: a call or signal taken by a server that stops (crashes)
    /// before answering is delivered to it again after its restart, without relying on
    /// the caller to send it again (a signal has no caller waiting). The price is that
    /// one loop runs one call at a time; several loops over clones of the event stream
    /// ([`crate::Events`] is `Clone`; each clone acknowledges its own batches) work on
    /// several batches at once.
    pub async fn serve_event(&self, event: &Event) -> bool {
        match event {
            Event::Received { from, message } if message.data.starts_with(PREFIX) => {
                let (hold, done) = oneshot::channel();
                self.handle(from.clone(), message, Some(hold), None);
                // The sender is dropped once the reply is queued (or never sent).
                let _ = done.await;
                true
            }
            other => self.dispatch(other),
        }
    }

    /// Handles an RPC message from `from`. `replies`: where a call's reply goes when it
    /// is ready at once, for the connection's driver to write (see
    /// `crate::messaging::Tap::received`); without it, replies are queued.
    fn handle(
        &self,
        from: Arc<str>,
        message: &ReceivedMessage,
        hold: server::Hold,
        replies: Option<&mut Vec<Unqueued>>,
    ) {
        // (Decoded without an allocation per text field: a call's object and method are
        // looked at, not kept.)
        let Some(envelope) = envelope::Received::from_data(&message.data) else {
            self.inner.stats.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(peer = %from, "malformed rpc envelope dropped");
            return;
        };
        match envelope.kind() {
            Some(kind @ (Kind::Call | Kind::Signal)) => {
                let signal = kind == Kind::Signal;
                let to = server::Origin {
                    peer: from,
                    hold,
                    replies,
                };
                server::incoming(&self.inner, to, envelope, &message.data, signal);
            }
            Some(Kind::ReplyOk | Kind::ReplyErr) => {
                let mut calls = self.inner.lock_calls();
                // Only the peer that was called may answer a call (one look-up).
                if let std::collections::hash_map::Entry::Occupied(call) =
                    calls.pending.entry(envelope.id())
                {
                    if call.get().peer == from {
                        let _ = call.remove().reply.send(Ok(envelope));
                    }
                }
            }
            None => {
                self.inner.stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = %from, kind = envelope.kind_code(), "rpc envelope of unknown kind dropped");
            }
        }
    }
}
