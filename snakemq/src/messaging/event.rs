//! Events that messaging reports to the application.

use std::fmt;
use std::sync::Arc;

use snakemq_link::{ConnInfo, Direction, EstablishFailure};

use super::message::{ReceivedMessage, uuid_hex};
use crate::proto::Uuid;

/// Why a queued message was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// Its time to live ran out before it could be delivered.
    Expired,
    /// It had `ttl = 0` and the peer was not connected (or went away before it was
    /// acknowledged).
    NotConnected,
    /// The queue was full and the policy dropped it.
    QueueFull,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DropReason::Expired => "time to live expired",
            DropReason::NotConnected => "peer not connected (ttl 0)",
            DropReason::QueueFull => "queue full",
        })
    }
}

/// Something that happened.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A peer identified itself on a new connection.
    Connected {
        /// The peer's identity.
        peer: Arc<str>,
        /// The connection.
        info: ConnInfo,
        /// Whether at-least-once delivery (acks) is in use: true for Rust peers, false for
        /// Python peers.
        acks: bool,
    },
    /// An identified peer's connection ended.
    Disconnected {
        /// The peer.
        peer: Arc<str>,
        /// The connection.
        info: ConnInfo,
    },
    /// A message arrived.
    Received {
        /// The sender.
        from: Arc<str>,
        /// The message.
        message: ReceivedMessage,
    },
    /// A message was delivered: acknowledged by a Rust peer, or written to the connection
    /// of a Python peer.
    Delivered {
        /// The destination.
        to: Arc<str>,
        /// The message id.
        uuid: Uuid,
    },
    /// A queued message was given up.
    Dropped {
        /// The destination.
        to: Arc<str>,
        /// The message id.
        uuid: Uuid,
        /// Why.
        reason: DropReason,
    },
    /// A connection could not be established: a connect that failed (while a peer is away
    /// this comes at every retry of its connector, with the attempt count), a TLS handshake
    /// refused on either side ([`snakemq_link::LinkError::TlsHandshake`] names the reason), a
    /// middleware layer that refused it, or the establish timeout. Connectors keep retrying
    /// with backoff.
    ///
    /// Reported without waiting for room in the event queue: when the application is
    /// behind, such reports are dropped rather than holding up the listeners.
    ConnectionFailed {
        /// Who, which connector, how often, and why.
        failure: Arc<EstablishFailure>,
    },
    /// A connection failed or was closed for a reason worth reporting (protocol violation,
    /// keepalive timeout, duplicate identity, transport error).
    Error {
        /// The connection, if the error belongs to one.
        conn: Option<ConnInfo>,
        /// The peer, if it had identified.
        peer: Option<Arc<str>>,
        /// What happened.
        error: Arc<crate::Error>,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Connected { peer, info, acks } => {
                write!(f, "connected to {peer} via {} (acks: {acks})", info.remote)
            }
            Event::Disconnected { peer, info } => {
                write!(f, "disconnected from {peer} ({})", info.remote)
            }
            Event::Received { from, message } => write!(
                f,
                "received {} bytes from {from} ({})",
                message.data.len(),
                uuid_hex(&message.uuid)
            ),
            Event::Delivered { to, uuid } => write!(f, "delivered {} to {to}", uuid_hex(uuid)),
            Event::Dropped { to, uuid, reason } => {
                write!(f, "dropped {} for {to}: {reason}", uuid_hex(uuid))
            }
            Event::ConnectionFailed { failure } => match failure.direction {
                Direction::Outbound => write!(
                    f,
                    "could not connect to {} (attempt {}): {}",
                    failure.remote, failure.attempt, failure.error
                ),
                Direction::Inbound => write!(
                    f,
                    "refused a connection from {}: {}",
                    failure.remote, failure.error
                ),
            },
            Event::Error { conn, peer, error } => {
                write!(f, "error")?;
                if let Some(peer) = peer {
                    write!(f, " with {peer}")?;
                }
                if let Some(conn) = conn {
                    write!(f, " on {} ({})", conn.id, conn.remote)?;
                }
                write!(f, ": {error}")
            }
        }
    }
}
