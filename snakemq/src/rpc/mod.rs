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
//! for (messaging, rpc) in [(&bob, &bob_rpc), (&alice, &alice_rpc)] {
//!     let (mut events, rpc) = (messaging.events(), rpc.clone());
//!     tokio::spawn(async move {
//!         while let Some(event) = events.next().await {
//!             rpc.dispatch(&event);
//!         }
//!     });
//! }
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

mod cache;
mod client;
mod envelope;
mod error;
#[doc(hidden)]
pub mod private;
mod server;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

pub use client::Client;
pub use envelope::{APPLICATION_ERROR, Envelope, Kind, PREFIX};
pub use error::{RemoteError, RemoteErrorKind, RpcError, WireError};
pub use server::{DispatchError, Handled, HandlerFuture, Serve};

use crate::router::PrefixRouter;
use crate::{Event, Messaging, ReceivedMessage};

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
    /// Calls and signals refused because too many ran.
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

type PendingMap = HashMap<u64, (Arc<str>, oneshot::Sender<Envelope>)>;

struct Inner {
    messaging: Messaging,
    config: RpcConfig,
    runtime: tokio::runtime::Handle,
    servers: Mutex<HashMap<Arc<str>, Arc<dyn Serve>>>,
    pending: Mutex<PendingMap>,
    cache: Mutex<cache::ReplyCache>,
    next_id: AtomicU64,
    serving: AtomicUsize,
    stats: Counters,
}

impl Inner {
    // A panic while holding one of these locks cannot leave the maps half-updated (every
    // critical section is a single map operation), so a poisoned lock is used as is.
    fn lock_servers(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<dyn Serve>>> {
        self.servers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_pending(&self) -> MutexGuard<'_, PendingMap> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
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
        Ok(Rpc {
            inner: Arc::new(Inner {
                messaging: messaging.clone(),
                cache: Mutex::new(cache::ReplyCache::new(config.reply_cache)),
                config,
                runtime,
                servers: Mutex::new(HashMap::new()),
                pending: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(first_id),
                serving: AtomicUsize::new(0),
                stats: Counters::default(),
            }),
        })
    }

    /// Registers `server` under `object`, replacing (and returning) a previous one.
    pub fn serve(&self, object: &str, server: impl Serve) -> Option<Arc<dyn Serve>> {
        self.inner
            .lock_servers()
            .insert(Arc::from(object), Arc::new(server))
    }

    /// Removes the object registered under `object`.
    pub fn unserve(&self, object: &str) -> Option<Arc<dyn Serve>> {
        self.inner.lock_servers().remove(object)
    }

    /// An untyped client of `object` on `peer` (generated clients wrap one).
    pub fn client(&self, peer: &str, object: &str) -> Client {
        Client {
            inner: self.inner.clone(),
            peer: Arc::from(peer),
            object: Arc::from(object),
            deadline: self.inner.config.deadline,
            signal_ttl: None,
        }
    }

    /// Handles an event if it is an RPC message; returns whether it was one.
    pub fn dispatch(&self, event: &Event) -> bool {
        match event {
            Event::Received { from, message } if message.data.starts_with(PREFIX) => {
                self.handle(from.clone(), message);
                true
            }
            _ => false,
        }
    }

    /// Adds the route for RPC messages to a router.
    pub fn route(&self, router: PrefixRouter) -> PrefixRouter {
        let rpc = self.clone();
        router.route(PREFIX, move |from, message| {
            rpc.handle(Arc::from(from), message);
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

    fn handle(&self, from: Arc<str>, message: &ReceivedMessage) {
        let Some(envelope) = Envelope::from_data(&message.data) else {
            self.inner.stats.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(peer = %from, "malformed rpc envelope dropped");
            return;
        };
        match envelope.kind() {
            Some(Kind::Call) => server::incoming(&self.inner, from, envelope, false),
            Some(Kind::Signal) => server::incoming(&self.inner, from, envelope, true),
            Some(Kind::ReplyOk | Kind::ReplyErr) => {
                let mut pending = self.inner.lock_pending();
                // Only the peer that was called may answer a call.
                if pending
                    .get(&envelope.id)
                    .is_some_and(|(peer, _)| *peer == from)
                {
                    if let Some((_, tx)) = pending.remove(&envelope.id) {
                        let _ = tx.send(envelope);
                    }
                }
            }
            None => {
                self.inner.stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = %from, kind = envelope.kind, "rpc envelope of unknown kind dropped");
            }
        }
    }
}
