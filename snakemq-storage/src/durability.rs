//! How hard a commit tries to reach the disk; shared by every durable backend.

/// How hard a commit tries to reach the disk.
///
/// Either way a commit is atomic and the store stays consistent; the modes differ in what a
/// power loss (or an operating-system crash) can take away. A process crash (SIGKILL,
/// panic, OOM kill) loses nothing that was committed in either mode.
///
/// A commit that only removes acknowledged messages is never flushed on its own (see
/// [`WriteBatch::needs_sync`](crate::WriteBatch::needs_sync)): losing it re-sends
/// messages the receiver already has, it never loses one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Durability {
    /// Every commit that adds messages or received ids is flushed to the disk before it
    /// returns: a committed message survives a power loss. The default. (SQLite:
    /// `synchronous = FULL`; RocksDB: `WriteOptions::set_sync(true)`.)
    #[default]
    Full,
    /// Commits are written to the log but flushed only at checkpoints: a committed message
    /// survives a process crash, but the last commits may be lost on a power loss.
    /// (SQLite: `synchronous = NORMAL` in WAL mode; RocksDB: unsynced writes.)
    Normal,
}
