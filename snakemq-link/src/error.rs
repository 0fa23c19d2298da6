//! The one error type of the link crate.

use std::io;

/// Everything that can go wrong below the protocol: sockets, addresses, framing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// An I/O error from the operating system.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// A length prefix announced a packet larger than the configured maximum.
    /// The connection is closed before anything of that size is allocated.
    #[error("packet of {size} bytes exceeds the maximum of {max} bytes")]
    PacketTooLarge {
        /// The size the peer announced.
        size: u64,
        /// The configured maximum.
        max: u32,
    },
    /// The stream ended in the middle of a packet.
    #[error("connection closed in the middle of a packet ({buffered} bytes buffered)")]
    TruncatedPacket {
        /// Bytes of the unfinished packet that were received.
        buffered: usize,
    },
    /// An endpoint string could not be understood.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The text that was given.
        endpoint: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Binding a listener failed (for example, the address is in use).
    #[error("cannot listen on {endpoint}: {source}")]
    Bind {
        /// The endpoint that was asked for.
        endpoint: String,
        /// The operating system's reason.
        source: io::Error,
    },
    /// A memory endpoint name is already taken by another listener.
    #[error("memory endpoint {0:?} is already in use")]
    MemoryAddrInUse(String),
    /// Connecting failed.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The endpoint that was tried.
        endpoint: String,
        /// The reason.
        source: io::Error,
    },
    /// The connection (or the link) is closed.
    #[error("connection closed")]
    Closed,
    /// A connection did not become ready (TLS handshake, middleware) in time.
    #[error("connection not established within {0:?}")]
    EstablishTimeout(std::time::Duration),
    /// A middleware layer refused the connection.
    #[error("connection refused: {0}")]
    Refused(String),
}
