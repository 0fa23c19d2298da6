//! Queue stores for snakemq.
//!
//! A [`QueueStore`] keeps the outgoing messages of every peer in per-peer FIFO order,
//! keyed by a store-wide increasing sequence number. The store knows nothing of the
//! protocol or of connections: the messaging layer decides what to send, and removes a
//! message only once the peer acknowledged it.
//!
//! ```
//! use bytes::Bytes;
//! use snakemq_storage::{Expiry, MemoryStore, NewRecord, QueueStore};
//!
//! let mut store = MemoryStore::new();
//! let seq = store.push("bob", NewRecord {
//!     uuid: [7; 16],
//!     data: Bytes::from_static(b"hello"),
//!     flags: 0,
//!     expiry: Expiry::Never,
//! })?;
//! let mut page = Vec::new();
//! store.read("bob", None, 10, &mut page)?;
//! assert_eq!(page[0].seq, seq);
//! store.remove("bob", &[seq])?;
//! assert_eq!(store.stats("bob")?.messages, 0);
//! # Ok::<(), snakemq_storage::StorageError>(())
//! ```
#![forbid(unsafe_code)]

mod batch;
mod durability;
mod error;
mod memory;
#[cfg(feature = "sqlite")]
mod python_import;
mod record;
#[cfg(feature = "rocksdb")]
mod rocks;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use batch::WriteBatch;
pub use durability::Durability;
pub use error::StorageError;
pub use memory::MemoryStore;
#[cfg(feature = "sqlite")]
pub use python_import::{ImportReport, import_python_queue};
pub use record::{Expiry, NewRecord, PeerStats, Record, Uuid};
#[cfg(feature = "rocksdb")]
pub use rocks::{RocksOptions, RocksStore};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteOptions, SqliteStore};

/// Where outgoing messages wait for their peer.
///
/// Synchronous on purpose: backends do blocking I/O, and the messaging layer runs them
/// off the async threads, batching many operations into one call where it can.
pub trait QueueStore: Send + 'static {
    /// Appends one message to `peer`'s queue with the next sequence number and returns it.
    fn push(&mut self, peer: &str, record: NewRecord) -> Result<u64, StorageError> {
        let seq = self.last_seq()?.map_or(1, |last| last + 1);
        self.insert(peer, Record::from_new(seq, record))?;
        Ok(seq)
    }

    /// Appends a message whose sequence number the caller chose; it must be greater than
    /// every sequence number in the store.
    fn insert(&mut self, peer: &str, record: Record) -> Result<(), StorageError>;

    /// The highest sequence number ever used by this store (also of removed messages, where
    /// the backend can tell), so that numbering continues after a restart.
    fn last_seq(&self) -> Result<Option<u64>, StorageError>;

    /// Appends up to `limit` messages of `peer`'s queue with a sequence number greater
    /// than `after` (all when `None`) to `out`, oldest first.
    fn read(
        &self,
        peer: &str,
        after: Option<u64>,
        limit: usize,
        out: &mut Vec<Record>,
    ) -> Result<(), StorageError>;

    /// Removes messages by sequence number; unknown numbers are ignored. Returns how many
    /// were removed.
    fn remove(&mut self, peer: &str, seqs: &[u64]) -> Result<usize, StorageError>;

    /// Removes every message whose deadline is at or before `now_ms` (milliseconds since
    /// the Unix epoch) and appends them, with their peer, to `out`. Messages of a peer with
    /// a sequence number at or below `protect(peer)` are kept (they are in flight).
    fn expire(
        &mut self,
        now_ms: u64,
        protect: &dyn Fn(&str) -> Option<u64>,
        out: &mut Vec<(String, Record)>,
    ) -> Result<(), StorageError>;

    /// The earliest deadline of any stored message, if any has one.
    fn next_deadline(&self) -> Option<u64>;

    /// Count and size of one peer's queue.
    fn stats(&self, peer: &str) -> Result<PeerStats, StorageError>;

    /// Every peer with a non-empty queue, with its stats.
    fn peers(&self) -> Result<Vec<(String, PeerStats)>, StorageError>;

    /// Applies a batch atomically (one transaction and one commit for durable backends).
    ///
    /// The default applies the operations one by one (fine for memory).
    fn write(&mut self, batch: WriteBatch) -> Result<(), StorageError> {
        for (peer, record) in batch.pushes {
            self.insert(&peer, record)?;
        }
        for (peer, seq) in batch.removes {
            self.remove(&peer, &[seq])?;
        }
        for (peer, uuid) in batch.received {
            self.remember_received(&peer, uuid)?;
        }
        Ok(())
    }

    /// Makes a batch durable like [`QueueStore::write`], but may leave applying it to the
    /// store's tables for later: until [`QueueStore::settle`] returns, reads
    /// ([`QueueStore::read`], [`QueueStore::stats`], [`QueueStore::recent_received`], ...)
    /// may not see it. For a writer that owns the store and settles before it reads (the
    /// messaging layer's storage writer); the default is [`QueueStore::write`].
    fn write_deferred(&mut self, batch: WriteBatch) -> Result<(), StorageError> {
        self.write(batch)
    }

    /// Lays down what [`QueueStore::write_deferred`] needs (the SQLite store's commit log),
    /// so that the first deferred write does not pay for it. Called once by a writer that
    /// will write deferred, before its first write; the default does nothing.
    fn prepare_deferred(&mut self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Applies every batch given to [`QueueStore::write_deferred`] so that reads see it.
    fn settle(&mut self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Remembers the id of a message received from `peer` (for duplicate suppression
    /// across restarts). Stores that do not persist anything keep nothing.
    fn remember_received(&mut self, peer: &str, uuid: Uuid) -> Result<(), StorageError> {
        let _ = (peer, uuid);
        Ok(())
    }

    /// Appends the ids most recently received from `peer`, newest last, at most `limit`.
    fn recent_received(
        &self,
        peer: &str,
        limit: usize,
        out: &mut Vec<Uuid>,
    ) -> Result<(), StorageError> {
        let _ = (peer, limit, out);
        Ok(())
    }

    /// Whether the store keeps messages across restarts.
    fn is_durable(&self) -> bool {
        false
    }
}
