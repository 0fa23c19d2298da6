//! One transaction's operations, keeping the in-memory mirror of the `peers` table in
//! step with the rows written.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, OptionalExtension, params};

use super::{KIND_AT, KIND_NEVER, KIND_WHILE_CONNECTED, PeerCache, PeerRow};
use crate::batch::BatchTarget;
use crate::{Expiry, Record, Uuid, WriteBatch};

/// Rows per multi-row `INSERT`, largest first; a batch uses the largest that fits, so a
/// handful of statement shapes (all in the statement cache) cover every batch size.
const INSERT_SHAPES: [usize; 4] = [64, 16, 4, 1];
/// Sequence numbers per removal statement.
const SEQS_PER_STATEMENT: usize = 64;

/// `INSERT` of `rows` messages.
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO messages (peer, seq, uuid, flags, kind, deadline, size, data) VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?,?)");
    }
    sql
}

/// `{head} FROM messages WHERE peer = ? AND seq IN (?, .. SEQS_PER_STATEMENT times)`.
fn remove_sql(head: &str) -> String {
    let mut sql = format!("{head} FROM messages WHERE peer = ? AND seq IN (?");
    sql.push_str(&",?".repeat(SEQS_PER_STATEMENT - 1));
    sql.push(')');
    sql
}

/// The operations of one transaction, keeping the in-memory mirror in step.
pub(super) struct Writer<'a> {
    conn: &'a Connection,
    cache: &'a mut PeerCache,
    next_seq: u64,
    /// Whether the highest sequence number this store ever used may have been removed (then
    /// `meta` must remember the next one; otherwise the open finds it in `messages`).
    removed_highest: bool,
    /// Peers that received ids, trimmed once at the end.
    received_dirty: BTreeSet<i64>,
    received_limit: i64,
}

impl<'a> Writer<'a> {
    pub(super) fn new(
        conn: &'a Connection,
        cache: &'a mut PeerCache,
        start_seq: u64,
        received_limit: i64,
    ) -> Self {
        Writer {
            conn,
            cache,
            next_seq: start_seq,
            removed_highest: false,
            received_dirty: BTreeSet::new(),
            received_limit,
        }
    }

    pub(super) fn peer_id(&mut self, peer: &str) -> Result<i64, rusqlite::Error> {
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

    pub(super) fn insert(&mut self, peer: &str, record: &Record) -> Result<(), rusqlite::Error> {
        self.insert_rows(std::slice::from_ref(&(peer, record)))
    }

    /// Appends messages with as few statements as possible: SQLite's per-statement cost
    /// (bind, step, reset) is larger than a row's b-tree work, so rows go in by multi-row
    /// `INSERT`s of the sizes in [`INSERT_SHAPES`].
    pub(super) fn insert_rows<P: AsRef<str>>(
        &mut self,
        rows: &[(P, &Record)],
    ) -> Result<(), rusqlite::Error> {
        let mut rest = rows;
        while !rest.is_empty() {
            let chunk = INSERT_SHAPES
                .into_iter()
                .find(|rows| *rows <= rest.len())
                .unwrap_or(1);
            let (now, later) = rest.split_at(chunk.min(rest.len()));
            // Borrowed where the row has the bytes (id, payload), owned for the numbers.
            let mut values: Vec<ToSqlOutput<'_>> = Vec::with_capacity(now.len() * 8);
            for (peer, record) in now {
                let id = self.peer_id(peer.as_ref())?;
                let (kind, deadline) = match record.expiry {
                    Expiry::Never => (KIND_NEVER, Value::Null),
                    Expiry::At(ms) => (
                        KIND_AT,
                        Value::Integer(i64::try_from(ms).unwrap_or(i64::MAX)),
                    ),
                    Expiry::WhileConnected => (KIND_WHILE_CONNECTED, Value::Null),
                };
                let size = record.data.len() as i64;
                let number = |n: i64| ToSqlOutput::Owned(Value::Integer(n));
                values.extend([
                    number(id),
                    number(i64::try_from(record.seq).unwrap_or(i64::MAX)),
                    ToSqlOutput::Borrowed(ValueRef::Blob(&record.uuid)),
                    number(i64::from(record.flags)),
                    number(kind),
                    ToSqlOutput::Owned(deadline),
                    number(size),
                    ToSqlOutput::Borrowed(ValueRef::Blob(&record.data)),
                ]);
                self.next_seq = self.next_seq.max(record.seq.saturating_add(1));
                self.counts(id, 1, size);
            }
            self.conn
                .prepare_cached(&insert_sql(now.len()))?
                .execute(rusqlite::params_from_iter(values.iter()))?;
            rest = later;
        }
        Ok(())
    }

    /// Removes messages of one peer, [`SEQS_PER_STATEMENT`] at a time: one statement
    /// counts what is there (for the peer's counts), one deletes it. Returns how many
    /// were removed; numbers not queued are ignored.
    pub(super) fn remove_seqs(
        &mut self,
        peer: &str,
        seqs: &[u64],
    ) -> Result<usize, rusqlite::Error> {
        let Some(id) = self.cache.ids.get(peer).copied() else {
            return Ok(0);
        };
        let mut removed = 0usize;
        for chunk in seqs.chunks(SEQS_PER_STATEMENT) {
            // A short chunk repeats its last number: `IN` ignores repeats, and every
            // call uses the same two statements.
            let Some(last) = chunk.last() else {
                continue;
            };
            let highest = self.next_seq.saturating_sub(1);
            self.removed_highest |= chunk.contains(&highest);
            if let [seq] = chunk {
                removed += usize::from(self.remove_one(id, *seq)?);
                continue;
            }
            let mut values = Vec::with_capacity(SEQS_PER_STATEMENT + 1);
            values.push(id);
            values.extend(
                chunk
                    .iter()
                    .chain(std::iter::repeat(last))
                    .take(SEQS_PER_STATEMENT)
                    .map(|seq| i64::try_from(*seq).unwrap_or(-1)),
            );
            let (count, bytes): (i64, i64) = self
                .conn
                .prepare_cached(&remove_sql("SELECT COUNT(*), COALESCE(SUM(size), 0)"))?
                .query_row(rusqlite::params_from_iter(values.iter()), |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?;
            if count == 0 {
                continue;
            }
            self.conn
                .prepare_cached(&remove_sql("DELETE"))?
                .execute(rusqlite::params_from_iter(values.iter()))?;
            self.counts(id, -count, -bytes);
            removed += usize::try_from(count).unwrap_or(0);
        }
        Ok(removed)
    }

    /// Removes one message of peer `id`; whether it was there.
    ///
    /// Why not the `IN` statements of [`Writer::remove_seqs`] with the number repeated: SQLite
    /// fills a temporary b-tree with their 64 bound values at every run, and a producer that
    /// awaits each send pays that twice per message (each of its commits holds one send and
    /// one acknowledgement). Store alone, one synced push and one removal per message: 0.71-1.02×
    /// the write+fsync loop against 0.70-0.95× (same rounds).
    fn remove_one(&mut self, id: i64, seq: u64) -> Result<bool, rusqlite::Error> {
        let seq = i64::try_from(seq).unwrap_or(-1);
        let size: Option<i64> = self
            .conn
            .prepare_cached("SELECT size FROM messages WHERE peer = ?1 AND seq = ?2")?
            .query_row(params![id, seq], |row| row.get(0))
            .optional()?;
        let Some(size) = size else {
            return Ok(false);
        };
        self.conn
            .prepare_cached("DELETE FROM messages WHERE peer = ?1 AND seq = ?2")?
            .execute(params![id, seq])?;
        self.counts(id, -1, -size);
        Ok(true)
    }

    /// Applies a batch found in the commit log, which the tables may hold already (all,
    /// part or none of it): pushes that are there are skipped, removals of messages that
    /// are not are no-ops. A received id may be remembered twice, which only takes a slot
    /// of the duplicate window.
    pub(super) fn replay(&mut self, batch: &WriteBatch) -> Result<(), rusqlite::Error> {
        for (peer, record) in &batch.pushes {
            let id = self.peer_id(peer)?;
            let seq = i64::try_from(record.seq).unwrap_or(i64::MAX);
            let there = self
                .conn
                .prepare_cached("SELECT 1 FROM messages WHERE peer = ?1 AND seq = ?2")?
                .query_row(params![id, seq], |_| Ok(()))
                .optional()?
                .is_some();
            if there {
                self.next_seq = self.next_seq.max(record.seq.saturating_add(1));
            } else {
                self.insert(peer, record)?;
            }
        }
        for (peer, seq) in &batch.removes {
            self.remove_seqs(peer, std::slice::from_ref(seq))?;
        }
        for (peer, uuid) in &batch.received {
            self.remember(peer, uuid)?;
        }
        Ok(())
    }

    /// Makes the next sequence number cover `seq`, a number used by a message that never
    /// reached the tables (pushed and acknowledged before they were written).
    pub(super) fn cover_removed(&mut self, seq: u64) {
        self.next_seq = self.next_seq.max(seq.saturating_add(1));
        self.removed_highest = true;
    }

    /// Writes a counter in `meta`, so that the commit has a page to write (and, in `Full`
    /// durability, a log to sync: the sync that makes the unsynced commits before it
    /// durable too).
    pub(super) fn touch_meta(&mut self) -> Result<(), rusqlite::Error> {
        self.conn
            .prepare_cached(
                "INSERT INTO meta (key, value) VALUES ('checkpoints', 1)
                 ON CONFLICT (key) DO UPDATE SET value = value + 1",
            )?
            .execute([])?;
        Ok(())
    }

    pub(super) fn remember(&mut self, peer: &str, uuid: &Uuid) -> Result<(), rusqlite::Error> {
        let id = self.peer_id(peer)?;
        let n = self.cache.rows.get(&id).map_or(0, |row| row.received_next);
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO received (peer, n, uuid) VALUES (?1, ?2, ?3)")?
            .execute(params![id, n, &uuid[..]])?;
        if let Some(row) = self.cache.rows.get_mut(&id) {
            row.received_next = n.saturating_add(1);
        }
        self.received_dirty.insert(id);
        Ok(())
    }

    pub(super) fn expire(
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
                .prepare_cached("DELETE FROM messages WHERE peer = ?1 AND seq = ?2")?
                .execute(params![id, record.seq])?;
            self.removed_highest |= record.seq.saturating_add(1) >= self.next_seq;
            self.counts(id, -1, -(record.data.len() as i64));
            out.push((name, record));
        }
        Ok(())
    }

    pub(super) fn remove_while_connected(&mut self) -> Result<u64, rusqlite::Error> {
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
        // Which numbers went is not read back; rare (once per open), so assume the highest.
        self.removed_highest |= !removed.is_empty();
        Ok(removed.len() as u64)
    }

    fn counts(&mut self, id: i64, messages: i64, bytes: i64) {
        if let Some(row) = self.cache.rows.get_mut(&id) {
            row.messages = row.messages.saturating_add_signed(messages);
            row.bytes = row.bytes.saturating_add_signed(bytes);
        }
    }

    /// Trims the received ids and, after removals, records the next sequence number;
    /// returns that number.
    pub(super) fn finish(self) -> Result<u64, rusqlite::Error> {
        for id in &self.received_dirty {
            let next = self.cache.rows.get(id).map_or(0, |row| row.received_next);
            self.conn
                .prepare_cached("DELETE FROM received WHERE peer = ?1 AND n < ?2")?
                .execute(params![id, next.saturating_sub(self.received_limit)])?;
        }
        // Only removing the highest number takes it out of `messages`; until then the open
        // finds it there, and the commit need not write this page. (In a steady stream the
        // removal of message n shares a commit with the push of n + 1, so it is not the
        // highest any more.)
        if self.removed_highest && self.next_seq != self.cache.stored_next_seq {
            self.conn
                .prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'next_seq'")?
                .execute([self.next_seq])?;
            self.cache.stored_next_seq = self.next_seq;
        }
        Ok(self.next_seq)
    }
}

/// Builds a record from `seq, peer, uuid, flags, kind, deadline, data` columns, starting
/// at column `first` (the peer column is skipped).
pub(super) fn record_from_row(
    row: &rusqlite::Row<'_>,
    first: usize,
) -> Result<Record, rusqlite::Error> {
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

impl BatchTarget for Writer<'_> {
    type Error = rusqlite::Error;

    fn insert_all(&mut self, pushes: &[(Arc<str>, Record)]) -> Result<(), rusqlite::Error> {
        let rows: Vec<(&str, &Record)> = pushes.iter().map(|(p, r)| (&**p, r)).collect();
        self.insert_rows(&rows)
    }

    fn remove_all(&mut self, peer: &str, seqs: &[u64]) -> Result<(), rusqlite::Error> {
        self.remove_seqs(peer, seqs).map(drop)
    }

    fn remember(&mut self, peer: &str, uuid: &Uuid) -> Result<(), rusqlite::Error> {
        Writer::remember(self, peer, uuid)
    }
}
