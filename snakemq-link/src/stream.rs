//! The byte stream under a connection, and the middleware that may wrap it.
//!
//! Between "a socket is open" and "a [`Connection`](crate::Connection) carries packets",
//! the link passes a [`ByteStream`] through a tower [`Service`]: the middleware stack a
//! user configured with [`LinkConfig::middleware`](crate::LinkConfig::middleware). Each
//! layer may wrap the read and write halves (throttling, counting, compressing), look at
//! the [`ConnInfo`] (peer certificates, addresses) or refuse the connection with an error.
//! The stack runs after the TLS handshake, so layers see the plaintext the packets travel
//! in, and once per connection, so the per-packet path is only the wrapped halves.
//! Ready-made layers ([`ThrottleLayer`](crate::middleware::ThrottleLayer),
//! [`TraceLayer`](crate::middleware::TraceLayer)), the order a `ServiceBuilder` stacks
//! them in, and how to write a layer are in [`middleware`](crate::middleware).
//!
//! ```
//! use snakemq_link::{ByteStream, LinkConfig, LinkError};
//! use tower::ServiceBuilder;
//!
//! // A layer written as a closure: refuse connections from outside loopback.
//! let config = LinkConfig::default().middleware(
//!     ServiceBuilder::new().map_request(|stream: ByteStream| stream).map_result(
//!         |result: Result<ByteStream, LinkError>| {
//!             let stream = result?;
//!             match stream.info.remote_addr {
//!                 Some(addr) if !addr.ip().is_loopback() => Err(LinkError::Refused(
//!                     format!("{addr} is not on loopback"),
//!                 )),
//!                 _ => Ok(stream),
//!             }
//!         },
//!     ),
//! );
//! # let _ = config;
//! ```

use std::fmt;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use crate::LinkError;
use crate::connection::{BoxRead, BoxWrite, ConnInfo};

/// An open byte stream and what is known about it, before it becomes a
/// [`Connection`](crate::Connection).
#[non_exhaustive]
pub struct ByteStream {
    /// Facts about the connection; a layer may add to them.
    pub info: ConnInfo,
    /// The read half.
    pub read: BoxRead,
    /// The write half.
    pub write: BoxWrite,
}

impl ByteStream {
    /// A stream from its parts.
    pub fn new(info: ConnInfo, read: BoxRead, write: BoxWrite) -> Self {
        ByteStream { info, read, write }
    }
}

impl fmt::Debug for ByteStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteStream")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// The innermost service of every middleware stack: hands the stream on unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct Passthrough;

impl Service<ByteStream> for Passthrough {
    type Response = ByteStream;
    type Error = LinkError;
    type Future = Ready<Result<ByteStream, LinkError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), LinkError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, stream: ByteStream) -> Self::Future {
        ready(Ok(stream))
    }
}

/// A configured middleware stack, type-erased so that [`LinkConfig`](crate::LinkConfig)
/// stays one type.
#[derive(Clone)]
pub(crate) struct Middleware {
    service: BoxCloneSyncService<ByteStream, ByteStream, LinkError>,
}

impl Middleware {
    /// A stack built by [`LinkConfig::middleware`](crate::LinkConfig::middleware), which
    /// states what a stack must be (its bounds live there only).
    pub(crate) fn new(service: BoxCloneSyncService<ByteStream, ByteStream, LinkError>) -> Self {
        Middleware { service }
    }

    /// Runs the stack on one stream.
    pub(crate) async fn apply(&self, stream: ByteStream) -> Result<ByteStream, LinkError> {
        self.service.clone().oneshot(stream).await
    }
}

impl fmt::Debug for Middleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Middleware")
    }
}
