//! The one error type of the facade crate.

use crate::proto::ProtoError;

/// What can go wrong in messaging.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A transport error.
    #[error(transparent)]
    Link(#[from] snakemq_link::LinkError),
    /// A store error.
    #[error(transparent)]
    Storage(#[from] snakemq_storage::StorageError),
    /// A protocol violation by a peer.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtoError),
    /// Our own identity or a destination identity is not acceptable.
    #[error("invalid identity {identity:?}: {reason}")]
    InvalidIdentity {
        /// The identity given.
        identity: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The destination's queue is full and the policy is to refuse.
    #[error("queue for {peer} is full ({messages} messages, {bytes} bytes)")]
    QueueFull {
        /// The destination.
        peer: String,
        /// Messages queued.
        messages: u64,
        /// Bytes queued.
        bytes: u64,
    },
    /// A message larger than the largest packet a peer accepts.
    #[error("message of {size} bytes exceeds the maximum packet size of {max} bytes")]
    MessageTooLarge {
        /// Data size.
        size: usize,
        /// The limit.
        max: u32,
    },
    /// A peer with this identity is already connected; the new connection was refused.
    #[error("peer {0:?} is already connected")]
    DuplicateIdentity(String),
    /// A peer whose certificate this side verified identified itself with a name its
    /// certificate does not carry (identity binding, see
    /// [`MessagingBuilder::bind_identities_to_certificates`](crate::MessagingBuilder::bind_identities_to_certificates)).
    /// The connection was closed before anything was sent to that identity.
    #[error("peer identified as {identity:?} but its certificate names {names:?}")]
    IdentityMismatch {
        /// The identity the peer claimed.
        identity: String,
        /// The names its certificate carries (DNS names, else common names).
        names: Vec<String>,
    },
    /// A group commit of the durable store failed; the message is not persisted.
    #[error("store commit failed: {0}")]
    Commit(std::sync::Arc<snakemq_storage::StorageError>),
    /// Messaging has been shut down.
    #[error("messaging is shut down")]
    Shutdown,
}
