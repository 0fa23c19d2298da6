//! The SQLite store: queues that survive restarts, in one file.
//!
//! One `messages` table keyed by the store-wide sequence number, with an index on
//! `(peer, seq)` for ordered reads and a partial index on the deadline for expiry; per-peer
//! counts live in a small `peers` table updated in the same transactions, so neither
//! `stats` nor `peers` ever counts rows. The file runs in WAL mode, locked for this store
//! alone. A [`WriteBatch`] is one transaction and one commit.

mod commit_log;
mod log_codec;
mod schema;
mod writer;

use commit_log::{Appended, CommitLog};

use writer::{Writer, record_from_row};
#[cfg(test)]
mod commit_log_tests;
mod deferred;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use crate::{Durability, NewRecord, PeerStats, QueueStore, Record, StorageError, Uuid, WriteBatch};

/// Settings of a [`SqliteStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOptions {
    /// How hard a commit tries to reach the disk.
    pub durability: Durability,
    /// How many received message ids to keep per peer for duplicate suppression; older
    /// ones are dropped in the transaction that adds new ones. Default 65536.
    pub received_limit: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            durability: Durability::Full,
            received_limit: 65536,
        }
    }
}

/// Deferred operations after which they are applied to the tables even while writes keep
/// coming (an idle writer applies them sooner, see [`QueueStore::settle`]).
const SETTLE_AT: usize = 4096;

/// `messages.kind`: how the expiry is stored (the deadline column holds `At`'s time).
const KIND_NEVER: i64 = 0;
const KIND_AT: i64 = 1;
const KIND_WHILE_CONNECTED: i64 = 2;

/// A queue store in a SQLite file (bundled SQLite, WAL mode).
///
/// Only one store may have a file open at a time: a second open, in this process or
/// another, fails with [`StorageError::Locked`]. Messages that expire only with their
/// connection ([`Expiry::WhileConnected`](crate::Expiry::WhileConnected)) cannot outlive
/// the process and are deleted when the file is opened; [`SqliteStore::removed_at_open`]
/// tells how many.
///
/// Deadlines are stored as signed 64-bit milliseconds; one beyond `i64::MAX` (some 290
/// million years) is stored as `i64::MAX`.
///
/// ```
/// use bytes::Bytes;
/// use snakemq_storage::{Expiry, NewRecord, QueueStore, SqliteOptions, SqliteStore};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("queue.db");
/// let mut store = SqliteStore::open(&path, SqliteOptions::default())?;
/// let record = NewRecord {
///     uuid: [1; 16],
///     data: Bytes::from_static(b"hi"),
///     flags: 0,
///     expiry: Expiry::Never,
/// };
/// let seq = store.push("bob", record)?;
/// drop(store);
///
/// // After a restart the message is still there.
/// let store = SqliteStore::open(&path, SqliteOptions::default())?;
/// assert_eq!(store.stats("bob")?.oldest_seq, Some(seq));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    options: SqliteOptions,
    cache: PeerCache,
    next_seq: u64,
    removed_at_open: u64,
    /// The commit log (`Full` durability, from the first deferred write on).
    log: Option<CommitLog>,
    /// Batches made durable by the commit log and not yet applied to the tables.
    pending: WriteBatch,
    /// The highest number of a push and removal that cancelled out in a settle that then
    /// failed: still to be recorded as used by the next one (see `cancel_acknowledged`).
    uncovered: Option<u64>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("options", &self.options)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

/// The `peers` table with each queue's counts, in memory (small: one row per peer ever
/// seen), and the `next_seq` value last written to `meta`.
#[derive(Debug, Default)]
struct PeerCache {
    ids: foldhash::HashMap<String, i64>,
    rows: foldhash::HashMap<i64, PeerRow>,
    stored_next_seq: u64,
}

#[derive(Debug)]
struct PeerRow {
    name: String,
    messages: u64,
    bytes: u64,
    received_next: i64,
}

impl SqliteStore {
    /// Opens (or creates) the store at `path`.
    ///
    /// A file that is not a SQLite database, or is damaged, gives
    /// [`StorageError::Corrupt`]; a SQLite database of another application (a Python
    /// snakeMQ queue, say) gives [`StorageError::Foreign`] and is left untouched; a file
    /// open in another store gives [`StorageError::Locked`].
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StorageError> {
        let path = path.as_ref().to_owned();
        let conn = schema::open_connection(&path)?;
        let synchronous = match options.durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", synchronous)
            .map_err(|e| schema::map_err(&path, e))?;
        // A large batch (8 MiB payloads, say) grows the log; after the next checkpoint it is
        // cut back to this size instead of staying as large as its peak.
        // Room for every statement shape the writer uses (the multi-row ones included), so
        // none is compiled again per batch.
        conn.set_prepared_statement_cache_capacity(64);
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
            .map_err(|e| schema::map_err(&path, e))?;
        let mut store = SqliteStore {
            conn,
            path,
            options,
            cache: PeerCache::default(),
            next_seq: 1,
            removed_at_open: 0,
            log: None,
            pending: WriteBatch::new(),
            uncovered: None,
        };
        store.reload()?;
        store.replay_commit_log()?;
        store.removed_at_open = store.transact(|w| w.remove_while_connected())?;
        crate::record::report_removed_at_open(&store.path, store.removed_at_open);
        Ok(store)
    }

    /// The file of this store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many [`Expiry::WhileConnected`](crate::Expiry::WhileConnected) messages were
    /// found, and deleted, when the file was opened (they were left by a process that
    /// stopped before delivering them).
    pub fn removed_at_open(&self) -> u64 {
        self.removed_at_open
    }

    fn err(&self, error: rusqlite::Error) -> StorageError {
        schema::map_err(&self.path, error)
    }

    /// Reads the peer counts and the next sequence number from the file, replacing what
    /// is in memory (at open, and after a failed transaction rolled back).
    fn reload(&mut self) -> Result<(), StorageError> {
        let loaded = load_cache(&self.conn);
        let (cache, next_seq) = loaded.map_err(|e| self.err(e))?;
        self.cache = cache;
        self.next_seq = next_seq;
        Ok(())
    }

    /// Runs `f` in one transaction and commits it. On failure everything is rolled back,
    /// the in-memory mirror is reloaded from the file, and the error returned.
    fn transact<T>(
        &mut self,
        f: impl FnOnce(&mut Writer<'_>) -> Result<T, rusqlite::Error>,
    ) -> Result<T, StorageError> {
        let start_seq = self.next_seq;
        let received_limit = i64::try_from(self.options.received_limit).unwrap_or(i64::MAX);
        let conn = &self.conn;
        let cache = &mut self.cache;
        // BEGIN and COMMIT as cached statements: `Connection::transaction` parses both from
        // text every time, which a commit of one small message notices (SQLite's parser
        // was about a tenth of the CPU time of a synced single push).
        let result = (|| {
            conn.prepare_cached("BEGIN")?.execute([])?;
            let body = (|| {
                let mut writer = Writer::new(conn, cache, start_seq, received_limit);
                let out = f(&mut writer)?;
                let next_seq = writer.finish()?;
                conn.prepare_cached("COMMIT")?.execute([])?;
                Ok((out, next_seq))
            })();
            if body.is_err() && !conn.is_autocommit() {
                // Still open (the error came before or from the COMMIT): undo it all.
                if let Err(error) = conn.execute_batch("ROLLBACK") {
                    tracing::warn!(%error, "rolling back a failed write");
                }
            }
            body
        })();
        match result {
            Ok((out, next_seq)) => {
                self.next_seq = next_seq;
                Ok(out)
            }
            Err(error) => {
                let error = self.err(error);
                if let Err(reload) = self.reload() {
                    tracing::warn!(%reload, "reloading the store state after a failed write");
                }
                Err(error)
            }
        }
    }

    /// Runs `f` with commits left unflushed (`synchronous = NORMAL`), then restores the
    /// configured durability. In WAL mode the next flushed commit syncs the log up to
    /// itself, so what `f` committed reaches the disk with it.
    fn without_sync<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        if self.options.durability == Durability::Normal {
            return f(self);
        }
        self.set_synchronous("NORMAL")?;
        let out = f(self);
        let restored = self.set_synchronous("FULL");
        let out = out?;
        restored?;
        Ok(out)
    }

    fn set_synchronous(&self, level: &str) -> Result<(), StorageError> {
        self.conn
            .pragma_update(None, "synchronous", level)
            .map_err(|e| self.err(e))
    }

    fn peer_id(&self, peer: &str) -> Option<i64> {
        self.cache.ids.get(peer).copied()
    }
}

fn load_cache(conn: &Connection) -> Result<(PeerCache, u64), rusqlite::Error> {
    let mut cache = PeerCache::default();
    let mut statement = conn.prepare("SELECT id, name FROM peers")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let name: String = row.get(1)?;
        cache.ids.insert(name.clone(), id);
        cache.rows.insert(
            id,
            PeerRow {
                name,
                messages: 0,
                bytes: 0,
                received_next: 0,
            },
        );
    }
    // One ordered pass over the messages (their key starts with the peer, so the grouping
    // needs no sort) gives every count and the highest sequence number; `size` comes
    // before the payload, so overflow pages are not read.
    let mut max: Option<u64> = None;
    let mut statement = conn.prepare(
        "SELECT peer, COUNT(*), COALESCE(SUM(size), 0), MAX(seq) FROM messages GROUP BY peer",
    )?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let peer_max: u64 = row.get(3)?;
        max = max.max(Some(peer_max));
        if let Some(peer) = cache.rows.get_mut(&id) {
            peer.messages = row.get(1)?;
            peer.bytes = row.get(2)?;
        }
    }
    let mut statement = conn.prepare("SELECT peer, MAX(n) FROM received GROUP BY peer")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let last: i64 = row.get(1)?;
        if let Some(peer) = cache.rows.get_mut(&id) {
            peer.received_next = last.saturating_add(1);
        }
    }
    let stored: Option<u64> = conn
        .query_row("SELECT value FROM meta WHERE key = 'next_seq'", [], |row| {
            row.get(0)
        })
        .optional()?;
    cache.stored_next_seq = stored.unwrap_or(1);
    let next_seq = cache
        .stored_next_seq
        .max(max.map_or(1, |m| m.saturating_add(1)))
        .max(1);
    Ok((cache, next_seq))
}

impl QueueStore for SqliteStore {
    fn push(&mut self, peer: &str, record: NewRecord) -> Result<u64, StorageError> {
        let record = Record::from_new(self.next_seq, record);
        let seq = record.seq;
        self.synced(|w| w.insert(peer, &record))?;
        Ok(seq)
    }

    fn insert(&mut self, peer: &str, record: Record) -> Result<(), StorageError> {
        self.synced(|w| w.insert(peer, &record))
    }

    fn last_seq(&self) -> Result<Option<u64>, StorageError> {
        Ok(self.next_seq.checked_sub(1).filter(|seq| *seq > 0))
    }

    fn read(
        &self,
        peer: &str,
        after: Option<u64>,
        limit: usize,
        out: &mut Vec<Record>,
    ) -> Result<(), StorageError> {
        debug_assert!(self.pending.is_empty(), "read before settle");
        let Some(id) = self.peer_id(peer) else {
            return Ok(());
        };
        let after = after.map_or(0, |a| i64::try_from(a).unwrap_or(i64::MAX));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let result = (|| {
            let mut statement = self.conn.prepare_cached(
                "SELECT seq, peer, uuid, flags, kind, deadline, data FROM messages
                 WHERE peer = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let mut rows = statement.query(params![id, after, limit])?;
            while let Some(row) = rows.next()? {
                out.push(record_from_row(row, 0)?);
            }
            Ok(())
        })();
        result.map_err(|e| self.err(e))
    }

    fn remove(&mut self, peer: &str, seqs: &[u64]) -> Result<usize, StorageError> {
        if self.peer_id(peer).is_none() || seqs.is_empty() {
            return Ok(0);
        }
        self.synced(|w| w.remove_seqs(peer, seqs))
    }

    fn expire(
        &mut self,
        now_ms: u64,
        protect: &dyn Fn(&str) -> Option<u64>,
        out: &mut Vec<(String, Record)>,
    ) -> Result<(), StorageError> {
        // Cheap early exit: most sweeps find nothing due.
        if self.next_deadline().is_none_or(|d| d > now_ms) {
            return Ok(());
        }
        let start = out.len();
        let result = self.synced(|w| w.expire(now_ms, protect, out));
        if result.is_err() {
            // Rolled back: nothing was removed, so nothing is reported.
            out.truncate(start);
        }
        result
    }

    fn next_deadline(&self) -> Option<u64> {
        let result = self
            .conn
            .prepare_cached(
                "SELECT deadline FROM messages WHERE deadline IS NOT NULL
                 ORDER BY deadline LIMIT 1",
            )
            .and_then(|mut s| s.query_row([], |row| row.get::<_, u64>(0)).optional());
        match result {
            Ok(deadline) => deadline,
            Err(error) => {
                // The trait has no error here; the next write or read reports the problem.
                tracing::warn!(path = %self.path.display(), %error, "reading the next deadline");
                None
            }
        }
    }

    fn stats(&self, peer: &str) -> Result<PeerStats, StorageError> {
        let Some(id) = self.peer_id(peer) else {
            return Ok(PeerStats::default());
        };
        self.stats_of(id)
    }

    fn peers(&self) -> Result<Vec<(String, PeerStats)>, StorageError> {
        let mut peers = Vec::new();
        for (id, row) in &self.cache.rows {
            if row.messages > 0 {
                peers.push((row.name.clone(), self.stats_of(*id)?));
            }
        }
        peers.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(peers)
    }

    fn write(&mut self, batch: WriteBatch) -> Result<(), StorageError> {
        if batch.is_empty() {
            return Ok(());
        }
        if batch.needs_sync() {
            self.synced(|w| batch.apply(w))
        } else {
            self.settle_pending()?;
            self.without_sync(|store| store.transact(|w| batch.apply(w)))
        }
    }

    /// In `Full` durability: one write of the batch to the commit log (see
    /// `sqlite/commit_log.rs`); the tables get it at the next [`QueueStore::settle`] or
    /// after 4096 deferred operations, in one transaction without a sync.
    fn write_deferred(&mut self, batch: WriteBatch) -> Result<(), StorageError> {
        if batch.is_empty() {
            return Ok(());
        }
        if self.options.durability != Durability::Full {
            return self.write(batch);
        }
        self.prepare_deferred()?;
        let mut appended = self.append_to_log(&batch)?;
        if appended == Appended::Full {
            self.checkpoint()?;
            appended = self.append_to_log(&batch)?;
        }
        if appended != Appended::Durable {
            return self.write(batch);
        }
        for (_, record) in &batch.pushes {
            self.next_seq = self.next_seq.max(record.seq.saturating_add(1));
        }
        self.pending.append(batch);
        if self.pending.len() >= SETTLE_AT {
            // The batch is durable whatever happens here: a failure is not its failure. The
            // groups stay pending (bounded by the log: a full log needs a synced commit,
            // whose failure is reported), and the next settle tries again.
            if let Err(error) = self.settle_pending() {
                tracing::error!(%error, "applying committed batches to the tables failed");
            }
        }
        Ok(())
    }

    /// Creates the commit log (8 MiB of zeros and a sync: tens of milliseconds).
    fn prepare_deferred(&mut self) -> Result<(), StorageError> {
        if self.log.is_none() && self.options.durability == Durability::Full {
            self.log = Some(CommitLog::create(&self.path, None)?);
        }
        Ok(())
    }

    fn settle(&mut self) -> Result<(), StorageError> {
        self.settle_pending()
    }

    fn remember_received(&mut self, peer: &str, uuid: Uuid) -> Result<(), StorageError> {
        self.synced(|w| w.remember(peer, &uuid))
    }

    fn recent_received(
        &self,
        peer: &str,
        limit: usize,
        out: &mut Vec<Uuid>,
    ) -> Result<(), StorageError> {
        debug_assert!(self.pending.is_empty(), "read before settle");
        let Some(id) = self.peer_id(peer) else {
            return Ok(());
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let start = out.len();
        let result = (|| {
            let mut statement = self.conn.prepare_cached(
                "SELECT uuid FROM received WHERE peer = ?1 ORDER BY n DESC LIMIT ?2",
            )?;
            let mut rows = statement.query(params![id, limit])?;
            while let Some(row) = rows.next()? {
                let uuid: Uuid = row.get_ref(0)?.as_blob()?.try_into().map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        0,
                        rusqlite::types::Type::Blob,
                        Box::new(e),
                    )
                })?;
                out.push(uuid);
            }
            Ok(())
        })();
        result.map_err(|e| self.err(e))?;
        // Read newest first (so LIMIT keeps the newest); the contract is newest last.
        if let Some(added) = out.get_mut(start..) {
            added.reverse();
        }
        Ok(())
    }

    fn is_durable(&self) -> bool {
        true
    }
}

impl SqliteStore {
    fn stats_of(&self, id: i64) -> Result<PeerStats, StorageError> {
        let Some(row) = self.cache.rows.get(&id) else {
            return Ok(PeerStats::default());
        };
        let oldest_seq = if row.messages == 0 {
            None
        } else {
            self.conn
                .prepare_cached("SELECT seq FROM messages WHERE peer = ?1 ORDER BY seq LIMIT 1")
                .and_then(|mut s| s.query_row([id], |r| r.get::<_, u64>(0)).optional())
                .map_err(|e| self.err(e))?
        };
        Ok(PeerStats {
            messages: row.messages,
            bytes: row.bytes,
            oldest_seq,
        })
    }
}
