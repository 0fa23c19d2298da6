//! One transaction's operations, keeping the in-memory mirror of the `peers` table in
//! step with the rows written.

use std::collections::BTreeSet;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};

use super::{KIND_AT, KIND_NEVER, KIND_WHILE_CONNECTED, PeerCache, PeerRow};
use crate::batch::BatchTarget;
use crate::{Expiry, Record, Uuid};

/// The operations of one transaction, keeping the in-memory mirror in step.
pub(super) struct Writer<'a> {
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
            start_seq,
            next_seq: start_seq,
            dirty: BTreeSet::new(),
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

    pub(super) fn remove(&mut self, peer: &str, seq: u64) -> Result<bool, rusqlite::Error> {
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

    pub(super) fn remember(&mut self, peer: &str, uuid: &Uuid) -> Result<(), rusqlite::Error> {
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
                .prepare_cached("DELETE FROM messages WHERE seq = ?1")?
                .execute([record.seq])?;
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
    pub(super) fn finish(self) -> Result<u64, rusqlite::Error> {
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

    fn insert(&mut self, peer: &str, record: &Record) -> Result<(), rusqlite::Error> {
        Writer::insert(self, peer, record)
    }

    fn remove(&mut self, peer: &str, seq: u64) -> Result<(), rusqlite::Error> {
        Writer::remove(self, peer, seq).map(drop)
    }

    fn remember(&mut self, peer: &str, uuid: &Uuid) -> Result<(), rusqlite::Error> {
        Writer::remember(self, peer, uuid)
    }
}
