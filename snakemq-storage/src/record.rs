//! The stored form of a message, independent of the wire format.

use bytes::Bytes;

/// A message id: 16 bytes, usually a random UUID.
pub type Uuid = [u8; 16];

/// When a stored message stops being worth delivering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Expiry {
    /// Never expires.
    Never,
    /// Expires at this wall-clock time, in milliseconds since the Unix epoch. Counted also
    /// while the process is down.
    At(u64),
    /// Only valid while the peer stays connected (`ttl = 0`): dropped when the connection
    /// it was queued for goes away, and on restart.
    WhileConnected,
}

impl Expiry {
    /// The deadline in milliseconds since the epoch, if there is a fixed one.
    pub fn deadline_ms(&self) -> Option<u64> {
        match self {
            Expiry::At(ms) => Some(*ms),
            _ => None,
        }
    }
}

/// A message to append to a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// The message id.
    pub uuid: Uuid,
    /// The payload.
    pub data: Bytes,
    /// The flags, passed through unchanged.
    pub flags: u32,
    /// When it expires.
    pub expiry: Expiry,
}

/// A queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Store-wide increasing sequence number; the queue order.
    pub seq: u64,
    /// The message id.
    pub uuid: Uuid,
    /// The payload.
    pub data: Bytes,
    /// The flags.
    pub flags: u32,
    /// When it expires.
    pub expiry: Expiry,
}

impl Record {
    /// Builds the stored record from a new one and its sequence number.
    pub fn from_new(seq: u64, new: NewRecord) -> Self {
        Record {
            seq,
            uuid: new.uuid,
            data: new.data,
            flags: new.flags,
            expiry: new.expiry,
        }
    }
}

/// Size of one peer's queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Messages queued.
    pub messages: u64,
    /// Payload bytes queued.
    pub bytes: u64,
    /// Sequence number of the oldest message.
    pub oldest_seq: Option<u64>,
}

/// Logs the [`Expiry::WhileConnected`] messages a durable store deleted when it opened
/// (left by a process that stopped before delivering them), for every backend alike.
#[cfg(any(feature = "sqlite", feature = "rocksdb"))]
pub(crate) fn report_removed_at_open(path: &std::path::Path, removed: u64) {
    if removed > 0 {
        tracing::info!(
            path = %path.display(),
            removed,
            "dropped messages that were only valid while their peer was connected"
        );
    }
}
