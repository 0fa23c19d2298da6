//! The SQLite store: queues that survive restarts, in one file.
//!
//! One `messages` table keyed by the store-wide sequence number, with an index on
//! `(peer, seq)` for ordered reads and a partial index on the deadline for expiry; per-peer
//! counts live in a small `peers` table updated in the same transactions, so neither
//! `stats` nor `peers` ever counts rows. The file runs in WAL mode, locked for this store
//! alone. A [`WriteBatch`] is one transaction and one commit.

mod schema;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};

use crate::{Expiry, NewRecord, PeerStats, QueueStore, Record, StorageError, Uuid, WriteBatch};

/// How hard a commit tries to reach the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// Every commit is flushed to the disk (`synchronous = FULL`) before it returns: a
    /// committed message survives a process crash and a power loss. The default.
    #[default]
    Full,
    /// Commits are written to the log but flushed only at checkpoints
    /// (`synchronous = NORMAL` in WAL mode): a committed message survives a process crash,
    /// but the last commits may be lost on a power loss or an operating system crash. The
    /// file stays consistent either way.
    Normal,
}

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

/// `messages.kind`: how the expiry is stored (the deadline column holds `At`'s time).
const KIND_NEVER: i64 = 0;
const KIND_AT: i64 = 1;
const KIND_WHILE_CONNECTED: i64 = 2;

/// A queue store in a SQLite file (bundled SQLite, WAL mode).
///
/// Only one store may have a file open at a time: a second open, in this process or
/// another, fails with [`StorageError::Locked`]. Messages that expire only with their
/// connection ([`Expiry::WhileConnected`]) cannot outlive the process and are deleted when
/// the file is opened; [`SqliteStore::removed_at_open`] tells how many.
///
/// Deadlines are stored as signed 64-bit milliseconds; one beyond `i64::MAX` (some 290
/// million years) is stored as `i64::MAX`.
///
/// ```
/// use bytes::Bytes;
/// use snakemq_storage::{Expiry, NewRecord, QueueStore, SqliteOptions, SqliteStore};
///
/// let dir = std::env::temp_dir().join(format!("snakemq-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).map_err(|e| snakemq_storage::StorageError::Backend(e.to_string()))?;
/// let path = dir.join("queue.db");
/// # let _ = std::fs::remove_file(&path);
/// let mut store = SqliteStore::open(&path, SqliteOptions::default())?;
/// let record = NewRecord { uuid: [1; 16], data: Bytes::from_static(b"hi"), flags: 0, expiry: Expiry::Never };
/// let seq = store.push("bob", record)?;
/// drop(store);
///
/// let store = SqliteStore::open(&path, SqliteOptions::default())?;
/// assert_eq!(store.stats("bob")?.oldest_seq, Some(seq));
/// # drop(store);
/// # let _ = std::fs::remove_dir_all(&dir);
/// # Ok::<(), snakemq_storage::StorageError>(())
/// ```
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    options: SqliteOptions,
    cache: PeerCache,
    next_seq: u64,
    removed_at_open: u64,
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

/// The `peers` table, mirrored in memory (it is small: one row per peer ever seen).
#[derive(Debug, Default)]
struct PeerCache {
    ids: foldhash::HashMap<String, i64>,
    rows: foldhash::HashMap<i64, PeerRow>,
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
        let mut store = SqliteStore {
            conn,
            path,
            options,
            cache: PeerCache::default(),
            next_seq: 1,
            removed_at_open: 0,
        };
        store.reload()?;
        store.removed_at_open = store.transact(|w| w.remove_while_connected())?;
        if store.removed_at_open > 0 {
            tracing::info!(
                path = %store.path.display(),
                removed = store.removed_at_open,
                "dropped messages that were only valid while their peer was connected"
            );
        }
        Ok(store)
    }

    /// The file of this store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many [`Expiry::WhileConnected`] messages were found, and deleted, when the file
    /// was opened (they were left by a process that stopped before delivering them).
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
        let result = (|| {
            let tx = self.conn.unchecked_transaction()?;
            let mut writer = Writer {
                conn: &tx,
                cache: &mut self.cache,
                start_seq,
                next_seq: start_seq,
                dirty: BTreeSet::new(),
                received_dirty: BTreeSet::new(),
                received_limit,
            };
            let out = f(&mut writer)?;
            let next_seq = writer.finish()?;
            tx.commit()?;
            Ok((out, next_seq))
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

    fn peer_id(&self, peer: &str) -> Option<i64> {
        self.cache.ids.get(peer).copied()
    }
}

fn load_cache(conn: &Connection) -> Result<(PeerCache, u64), rusqlite::Error> {
    let mut cache = PeerCache::default();
    let mut statement =
        conn.prepare("SELECT id, name, messages, bytes, received_next FROM peers")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let name: String = row.get(1)?;
        cache.ids.insert(name.clone(), id);
        cache.rows.insert(
            id,
            PeerRow {
                name,
                messages: row.get(2)?,
                bytes: row.get(3)?,
                received_next: row.get(4)?,
            },
        );
    }
    let stored: Option<u64> = conn
        .query_row("SELECT value FROM meta WHERE key = 'next_seq'", [], |row| {
            row.get(0)
        })
        .optional()?;
    let max: Option<u64> = conn.query_row("SELECT MAX(seq) FROM messages", [], |row| row.get(0))?;
    let next_seq = stored
        .unwrap_or(1)
        .max(max.map_or(1, |m| m.saturating_add(1)))
        .max(1);
    Ok((cache, next_seq))
}

/// The operations of one transaction, keeping the in-memory mirror in step.
struct Writer<'a> {
    conn: &'a Connection,
    cache: &'a mut PeerCache,
    start_seq: u64,
    next_seq: u64,
    /// Peers whose counts changed, written back to `peers` once at the end.
    dirty: BTreeSet<i64>,
    /// Peers that received ids, trimmed once at the end.
    received_dirty: BTreeSet<i64>,
    received_limit: i64,
}

impl Writer<'_> {
    fn peer_id(&mut self, peer: &str) -> Result<i64, rusqlite::Error> {
        if let Some(id) = self.cache.ids.get(peer) {
            return Ok(*id);
        }
        let id: i64 = self
            .conn
            .prepare_cached("INSERT INTO peers (name) VALUES (?1) RETURNING id")?
            .query_row([peer], |row| row.get(0))?;
        self.cache.ids.insert(peer.to_owned(), id);
        self.cache.rows.insert(
            id,
            PeerRow {
                name: peer.to_owned(),
                messages: 0,
                bytes: 0,
                received_next: 0,
            },
        );
        Ok(id)
    }

    fn insert(&mut self, peer: &str, record: &Record) -> Result<(), rusqlite::Error> {
        let id = self.peer_id(peer)?;
        let (kind, deadline) = match record.expiry {
            Expiry::Never => (KIND_NEVER, None),
            Expiry::At(ms) => (KIND_AT, Some(i64::try_from(ms).unwrap_or(i64::MAX))),
            Expiry::WhileConnected => (KIND_WHILE_CONNECTED, None),
        };
        let size = record.data.len() as u64;
        self.conn
            .prepare_cached(
                "INSERT INTO messages (seq, peer, uuid, flags, kind, deadline, size, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                record.seq,
                id,
                &record.uuid[..],
                record.flags,
                kind,
                deadline,
                size,
                &record.data[..]
            ])?;
        self.next_seq = self.next_seq.max(record.seq.saturating_add(1));
        self.counts(id, 1, size as i64);
        Ok(())
    }

    fn remove(&mut self, peer: &str, seq: u64) -> Result<bool, rusqlite::Error> {
        let Some(id) = self.cache.ids.get(peer).copied() else {
            return Ok(false);
        };
        let Ok(seq) = i64::try_from(seq) else {
            return Ok(false);
        };
        let size: Option<u64> = self
            .conn
            .prepare_cached("DELETE FROM messages WHERE seq = ?1 AND peer = ?2 RETURNING size")?
            .query_row(params![seq, id], |row| row.get(0))
            .optional()?;
        match size {
            Some(size) => {
                self.counts(id, -1, -(size as i64));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn remember(&mut self, peer: &str, uuid: &Uuid) -> Result<(), rusqlite::Error> {
        let id = self.peer_id(peer)?;
        let n = self.cache.rows.get(&id).map_or(0, |row| row.received_next);
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO received (peer, n, uuid) VALUES (?1, ?2, ?3)")?
            .execute(params![id, n, &uuid[..]])?;
        if let Some(row) = self.cache.rows.get_mut(&id) {
            row.received_next = n.saturating_add(1);
        }
        self.dirty.insert(id);
        self.received_dirty.insert(id);
        Ok(())
    }

    fn expire(
        &mut self,
        now_ms: u64,
        protect: &dyn Fn(&str) -> Option<u64>,
        out: &mut Vec<(String, Record)>,
    ) -> Result<(), rusqlite::Error> {
        let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let mut due = Vec::new();
        {
            let mut statement = self.conn.prepare_cached(
                "SELECT seq, peer, uuid, flags, kind, deadline, data FROM messages
                 WHERE deadline IS NOT NULL AND deadline <= ?1 ORDER BY deadline, seq",
            )?;
            let mut rows = statement.query([now])?;
            while let Some(row) = rows.next()? {
                let id: i64 = row.get(1)?;
                let Some(name) = self.cache.rows.get(&id).map(|r| r.name.as_str()) else {
                    continue;
                };
                let seq: u64 = row.get(0)?;
                if protect(name).is_some_and(|protected| seq <= protected) {
                    continue;
                }
                due.push((id, name.to_owned(), record_from_row(row, 0)?));
            }
        }
        for (id, name, record) in due {
            self.conn
                .prepare_cached("DELETE FROM messages WHERE seq = ?1")?
                .execute([record.seq])?;
            self.counts(id, -1, -(record.data.len() as i64));
            out.push((name, record));
        }
        Ok(())
    }

    fn remove_while_connected(&mut self) -> Result<u64, rusqlite::Error> {
        let mut removed = Vec::new();
        {
            let mut statement = self
                .conn
                .prepare("DELETE FROM messages WHERE kind = 2 RETURNING peer, size")?;
            let mut rows = statement.query([])?;
            while let Some(row) = rows.next()? {
                removed.push((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?));
            }
        }
        for (id, size) in &removed {
            self.counts(*id, -1, -size);
        }
        Ok(removed.len() as u64)
    }

    fn counts(&mut self, id: i64, messages: i64, bytes: i64) {
        if let Some(row) = self.cache.rows.get_mut(&id) {
            row.messages = row.messages.saturating_add_signed(messages);
            row.bytes = row.bytes.saturating_add_signed(bytes);
        }
        self.dirty.insert(id);
    }

    /// Writes back the changed peer rows, trims the received ids and records the next
    /// sequence number; returns that number.
    fn finish(self) -> Result<u64, rusqlite::Error> {
        for id in &self.dirty {
            if let Some(row) = self.cache.rows.get(id) {
                self.conn
                    .prepare_cached(
                        "UPDATE peers SET messages = ?1, bytes = ?2, received_next = ?3
                         WHERE id = ?4",
                    )?
                    .execute(params![row.messages, row.bytes, row.received_next, id])?;
            }
        }
        for id in &self.received_dirty {
            let next = self.cache.rows.get(id).map_or(0, |row| row.received_next);
            self.conn
                .prepare_cached("DELETE FROM received WHERE peer = ?1 AND n < ?2")?
                .execute(params![id, next.saturating_sub(self.received_limit)])?;
        }
        if self.next_seq != self.start_seq {
            self.conn
                .prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'next_seq'")?
                .execute([self.next_seq])?;
        }
        Ok(self.next_seq)
    }
}

/// Builds a record from `seq, peer, uuid, flags, kind, deadline, data` columns, starting
/// at column `first` (the peer column is skipped).
fn record_from_row(row: &rusqlite::Row<'_>, first: usize) -> Result<Record, rusqlite::Error> {
    let seq: u64 = row.get(first)?;
    let uuid_col = first + 2;
    let uuid: Uuid = row.get_ref(uuid_col)?.as_blob()?.try_into().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            uuid_col,
            rusqlite::types::Type::Blob,
            Box::new(e),
        )
    })?;
    let flags: u32 = row.get(first + 3)?;
    let kind: i64 = row.get(first + 4)?;
    let deadline: Option<u64> = row.get(first + 5)?;
    let expiry = match (kind, deadline) {
        (KIND_NEVER, _) => Expiry::Never,
        (KIND_AT, Some(ms)) => Expiry::At(ms),
        (KIND_WHILE_CONNECTED, _) => Expiry::WhileConnected,
        _ => {
            return Err(rusqlite::Error::IntegralValueOutOfRange(first + 4, kind));
        }
    };
    let data = Bytes::copy_from_slice(row.get_ref(first + 6)?.as_blob()?);
    Ok(Record {
        seq,
        uuid,
        data,
        flags,
        expiry,
    })
}

impl QueueStore for SqliteStore {
    fn push(&mut self, peer: &str, record: NewRecord) -> Result<u64, StorageError> {
        let record = Record::from_new(self.next_seq, record);
        let seq = record.seq;
        self.transact(|w| w.insert(peer, &record))?;
        Ok(seq)
    }

    fn insert(&mut self, peer: &str, record: Record) -> Result<(), StorageError> {
        self.transact(|w| w.insert(peer, &record))
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
        self.transact(|w| {
            let mut removed = 0;
            for &seq in seqs {
                removed += usize::from(w.remove(peer, seq)?);
            }
            Ok(removed)
        })
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
        let result = self.transact(|w| w.expire(now_ms, protect, out));
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
        self.transact(|w| {
            for (peer, record) in &batch.pushes {
                w.insert(peer, record)?;
            }
            for (peer, seq) in &batch.removes {
                w.remove(peer, *seq)?;
            }
            for (peer, uuid) in &batch.received {
                w.remember(peer, uuid)?;
            }
            Ok(())
        })
    }

    fn remember_received(&mut self, peer: &str, uuid: Uuid) -> Result<(), StorageError> {
        self.transact(|w| w.remember(peer, &uuid))
    }

    fn recent_received(
        &self,
        peer: &str,
        limit: usize,
        out: &mut Vec<Uuid>,
    ) -> Result<(), StorageError> {
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
