//! Ready-made middleware for a link's byte streams, and how to write a layer of your own.
//!
//! A middleware is a tower [`Layer`] whose service takes a [`ByteStream`] (an open
//! connection: its [`ConnInfo`](crate::ConnInfo) and its read and write halves) and returns
//! one, usually with the halves wrapped. [`LinkConfig::middleware`](crate::LinkConfig::middleware)
//! runs the stack once per connection, after the TLS handshake, so the per-packet cost is
//! only that of the wrapped halves.
//!
//! - [`ThrottleLayer`]: bytes per second per connection, or one [`SharedBudget`] for many.
//! - [`TraceLayer`]: a tracing span per connection, packet events, [`TraceStats`] counters.
//!
//! # Stacking, and which layer is nearer the socket
//!
//! Stack layers with [`ServiceBuilder`] (re-exported from tower). Every layer in this
//! module wraps the halves *on the way in* and then calls the next service, so **a layer
//! listed earlier sits nearer the socket**: it sees incoming bytes first and outgoing
//! bytes last, just as the outer layers of an HTTP service see requests first and
//! responses last. Read a `ServiceBuilder` from top to bottom as "socket ... link":
//!
//! ```
//! use snakemq_link::LinkConfig;
//! use snakemq_link::middleware::{ServiceBuilder, ThrottleLayer, TraceLayer};
//!
//! let trace = TraceLayer::new();
//! let stats = trace.stats();
//! let config = LinkConfig::default().middleware(
//!     ServiceBuilder::new()
//!         .layer(ThrottleLayer::per_connection(256 * 1024)) // nearest the socket
//!         // a compressing layer of your own would go here: throttle limits its output
//!         .layer(trace), // nearest the link: sees the packets as they are
//! );
//! # let _ = (config, stats);
//! ```
//!
//! A layer that changes the bytes (compression, obfuscation) needs its counterpart on the
//! peer, and [`TraceLayer`] must sit on the link's side of it, since it follows the
//! packets' length prefixes.
//!
//! # Writing a layer
//!
//! The quickest way is a closure with `ServiceBuilder::map_request`: take the stream,
//! wrap a half, return it. A wrapper is an ordinary [`AsyncRead`](tokio::io::AsyncRead) or
//! [`AsyncWrite`](tokio::io::AsyncWrite) around the boxed half; it must pass bytes on in
//! order and should not allocate per poll (it sits on every read and write). This one
//! counts the bytes a connection writes:
//!
//! ```
//! use std::io;
//! use std::pin::Pin;
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::task::{Context, Poll, ready};
//!
//! use snakemq_link::middleware::{ServiceBuilder, TraceLayer};
//! use snakemq_link::{BoxWrite, ByteStream, LinkConfig};
//! use tokio::io::AsyncWrite;
//!
//! /// Counts what passes into `inner`.
//! struct CountingWrite {
//!     inner: BoxWrite,
//!     total: Arc<AtomicU64>,
//! }
//!
//! impl AsyncWrite for CountingWrite {
//!     fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
//!         let this = self.get_mut();
//!         let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
//!         this.total.fetch_add(n as u64, Ordering::Relaxed);
//!         Poll::Ready(Ok(n))
//!     }
//!     fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
//!         Pin::new(&mut self.get_mut().inner).poll_flush(cx)
//!     }
//!     fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
//!         Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
//!     }
//! }
//!
//! let written = Arc::new(AtomicU64::new(0));
//! let counter = written.clone();
//! let config = LinkConfig::default().middleware(
//!     ServiceBuilder::new()
//!         .map_request(move |mut stream: ByteStream| {
//!             stream.write = Box::new(CountingWrite { inner: stream.write, total: counter.clone() });
//!             stream
//!         })
//!         .layer(TraceLayer::new()),
//! );
//! # let _ = config;
//! ```
//!
//! For a reusable layer with settings, write a `Layer` type whose `Service` wraps the
//! halves in `call` and then calls the inner service, as [`ThrottleLayer`] and
//! [`TraceLayer`] do; a service may also refuse a connection by returning an error
//! ([`LinkError::Refused`](crate::LinkError::Refused)) instead of calling on. The services
//! must be `Clone + Send + Sync`: the link clones the stack for each connection. The
//! repository's `docs/MIDDLEWARE.md` walks through a complete example.

pub mod throttle;
pub mod trace;

pub use throttle::{Rate, SharedBudget, Throttle, ThrottleDirection, ThrottleLayer};
pub use tower::{Layer, Service, ServiceBuilder};
pub use trace::{Trace, TraceLayer, TraceStats};

pub use crate::stream::{ByteStream, Passthrough};
