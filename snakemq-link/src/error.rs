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
    /// The TLS handshake failed: the peer's certificate was refused, ours was, or the peer
    /// does not speak TLS. Nothing was exchanged over the connection.
    #[error("TLS handshake with {remote} failed: {failure}")]
    TlsHandshake {
        /// The remote end (`"127.0.0.1:4000"`).
        remote: String,
        /// Why.
        failure: TlsFailure,
    },
    /// TLS settings could not be built (a PEM input without a certificate, an unusable
    /// key, a version list without a version).
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
}

/// Why a TLS handshake failed (see [`LinkError::TlsHandshake`]).
///
/// The first variants are the certificate checks *this* side made; [`TlsFailure::PeerAlert`]
/// is the other side refusing (usually our certificate, or its absence).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The peer's certificate does not chain to a root we trust.
    UnknownIssuer,
    /// The peer's certificate has expired.
    Expired,
    /// The peer's certificate is not valid yet.
    NotYetValid,
    /// The server's certificate is not valid for the name we connected to.
    WrongName(String),
    /// The peer presented no certificate although this side requires one.
    NoCertificate,
    /// The peer's certificate was refused for another reason (bad signature, usage, encoding).
    BadCertificate(String),
    /// The peer aborted the handshake with this TLS alert: it refused our certificate (or
    /// its absence), our name, or our protocol versions.
    PeerAlert(String),
    /// What arrived is not TLS: a plain peer on a TLS port, or a TLS peer on a plain one.
    NotTls(String),
    /// The connection closed during the handshake.
    Closed,
    /// Any other failure (no common protocol version or cipher suite, an I/O error).
    Other(String),
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsFailure::UnknownIssuer => {
                f.write_str("the peer's certificate is not signed by a trusted root")
            }
            TlsFailure::Expired => f.write_str("the peer's certificate has expired"),
            TlsFailure::NotYetValid => f.write_str("the peer's certificate is not valid yet"),
            TlsFailure::WrongName(detail) => write!(
                f,
                "the server's certificate is not valid for the name we connected to ({detail})"
            ),
            TlsFailure::NoCertificate => {
                f.write_str("the peer presented no certificate but one is required")
            }
            TlsFailure::BadCertificate(detail) => {
                write!(f, "the peer's certificate was refused: {detail}")
            }
            TlsFailure::PeerAlert(alert) => write!(f, "the peer refused the handshake: {alert}"),
            TlsFailure::NotTls(detail) => write!(f, "the peer does not speak TLS ({detail})"),
            TlsFailure::Closed => f.write_str("the connection closed during the handshake"),
            TlsFailure::Other(detail) => f.write_str(detail),
        }
    }
}
