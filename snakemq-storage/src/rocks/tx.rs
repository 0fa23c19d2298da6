//! One atomic write: the operations of a call collected into one RocksDB `WriteBatch`,
//! with the in-memory peer rows changed on a copy that replaces the originals only once
//! the batch is committed (a failed write leaves memory as it was).

use std::collections::BTreeMap;
use std::sync::Arc;

use rocksdb::{ColumnFamily, ReadOptions};

use super::keys::{
    self, CF_INDEX, CF_MESSAGES, CF_META, CF_RECEIVED, Header, INDEX_DEADLINE, INDEX_TRANSIENT,
};
use super::{PeerRow, RocksStore};
use crate::batch::BatchTarget;
use crate::{Record, StorageError, Uuid};

/// Shortest run of consecutive sequence numbers removed with one range deletion; shorter
/// ones get a point deletion each (a range tombstone costs more than a point tombstone on
/// the read path, so a run of two or three is not worth one).
const MIN_RANGE: usize = 4;

/// What a committed [`Tx`] changes in memory.
pub(super) struct Applied {
    pub(super) rows: BTreeMap<u32, PeerRow>,
    pub(super) new_ids: Vec<(String, u32)>,
    pub(super) next_peer_id: u32,
    pub(super) next_seq: u64,
    /// The earliest deadline added, and the earliest removed (the cached next deadline is
    /// recomputed when that one may have gone).
    pub(super) min_added_deadline: Option<u64>,
    pub(super) min_removed_deadline: Option<u64>,
}

pub(super) struct Tx<'s> {
    store: &'s RocksStore,
    batch: rocksdb::WriteBatch,
    rows: BTreeMap<u32, PeerRow>,
    new_ids: Vec<(String, u32)>,
    next_peer_id: u32,
    next_seq: u64,
    /// Messages written (`Some`) or deleted (`None`) earlier in this batch, which RocksDB
    /// does not show to reads before the commit.
    pending: foldhash::HashMap<(u32, u64), Option<Header>>,
    min_added_deadline: Option<u64>,
    min_removed_deadline: Option<u64>,
}

impl<'s> Tx<'s> {
    pub(super) fn new(store: &'s RocksStore) -> Self {
        Tx {
            store,
            batch: rocksdb::WriteBatch::default(),
            rows: BTreeMap::new(),
            new_ids: Vec::new(),
            next_peer_id: store.peers.next_id,
            next_seq: store.next_seq,
            pending: Default::default(),
            min_added_deadline: None,
            min_removed_deadline: None,
        }
    }

    fn cf(&self, name: &str) -> Result<&'s ColumnFamily, StorageError> {
        self.store.cf(name)
    }

    fn peer_id(&self, peer: &str) -> Option<u32> {
        self.store.peers.ids.get(peer).copied().or_else(|| {
            self.new_ids
                .iter()
                .find(|(name, _)| name == peer)
                .map(|(_, id)| *id)
        })
    }

    fn peer_name(&self, id: u32) -> Option<&str> {
        self.rows
            .get(&id)
            .or_else(|| self.store.peers.rows.get(&id))
            .map(|row| row.name.as_str())
    }

    /// The row of `id`, copied into this batch for changing.
    fn row_mut(&mut self, id: u32) -> Option<&mut PeerRow> {
        if !self.rows.contains_key(&id) {
            let row = self.store.peers.rows.get(&id)?.clone();
            self.rows.insert(id, row);
        }
        self.rows.get_mut(&id)
    }

    fn peer_id_or_create(&mut self, peer: &str) -> Result<u32, StorageError> {
        if let Some(id) = self.peer_id(peer) {
            return Ok(id);
        }
        let id = self.next_peer_id;
        self.next_peer_id = id
            .checked_add(1)
            .ok_or_else(|| StorageError::Backend("out of peer ids".into()))?;
        self.new_ids.push((peer.to_owned(), id));
        self.rows.insert(
            id,
            PeerRow {
                name: peer.to_owned(),
                ..PeerRow::default()
            },
        );
        Ok(id)
    }

    /// The stored header of a message, seen through this batch.
    fn header(&self, id: u32, seq: u64) -> Result<Option<Header>, StorageError> {
        if let Some(pending) = self.pending.get(&(id, seq)) {
            return Ok(*pending);
        }
        let value = self
            .store
            .db
            .get_pinned_cf(self.cf(CF_MESSAGES)?, keys::message_key(id, seq))
            .map_err(|e| self.store.err(e))?;
        value
            .map(|value| keys::decode_header(&value).map_err(|reason| self.store.corrupt(reason)))
            .transpose()
    }

    pub(super) fn insert(&mut self, peer: &str, record: &Record) -> Result<(), StorageError> {
        let id = self.peer_id_or_create(peer)?;
        let seq = record.seq;
        // Only a number below the next one can already be taken; checking costs a read,
        // so the usual increasing numbers are not checked.
        if seq < self.next_seq && self.header(id, seq)?.is_some() {
            return Err(StorageError::Backend(format!(
                "{}: message {seq} to {peer} is already stored",
                self.store.path.display()
            )));
        }
        let messages = self.cf(CF_MESSAGES)?;
        self.batch.put_cf(
            messages,
            keys::message_key(id, seq),
            keys::encode_record(record),
        );
        if let Some(key) = keys::index_key(id, seq, record.expiry) {
            self.batch.put_cf(self.cf(CF_INDEX)?, key, b"");
        }
        if let Some(deadline) = record.expiry.deadline_ms() {
            self.min_added_deadline = Some(
                self.min_added_deadline
                    .map_or(deadline, |d| d.min(deadline)),
            );
        }
        let size = record.data.len() as u64;
        self.pending.insert(
            (id, seq),
            Some(Header {
                flags: record.flags,
                expiry: record.expiry,
                uuid: record.uuid,
                size,
            }),
        );
        self.next_seq = self.next_seq.max(seq.saturating_add(1));
        if let Some(row) = self.row_mut(id) {
            if row.messages == 0 || row.oldest.is_some_and(|oldest| seq < oldest) {
                row.oldest = Some(seq);
            }
            row.messages += 1;
            row.bytes += size;
        }
        Ok(())
    }

    /// Removes one message; whether it was there.
    pub(super) fn remove(&mut self, peer: &str, seq: u64) -> Result<bool, StorageError> {
        let Some(id) = self.peer_id(peer) else {
            return Ok(false);
        };
        match self.header(id, seq)? {
            Some(header) => {
                self.delete(id, seq, header)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn delete(&mut self, id: u32, seq: u64, header: Header) -> Result<(), StorageError> {
        self.batch
            .delete_cf(self.cf(CF_MESSAGES)?, keys::message_key(id, seq));
        self.forget(id, seq, header)
    }

    /// Everything of a removal but the deletion of the message's key: its index entry,
    /// the counts, the deadline bookkeeping.
    fn forget(&mut self, id: u32, seq: u64, header: Header) -> Result<(), StorageError> {
        if let Some(key) = keys::index_key(id, seq, header.expiry) {
            self.batch.delete_cf(self.cf(CF_INDEX)?, key);
        }
        if let Some(deadline) = header.expiry.deadline_ms() {
            self.min_removed_deadline = Some(
                self.min_removed_deadline
                    .map_or(deadline, |d| d.min(deadline)),
            );
        }
        self.pending.insert((id, seq), None);
        if let Some(row) = self.row_mut(id) {
            row.messages = row.messages.saturating_sub(1);
            row.bytes = row.bytes.saturating_sub(header.size);
            if row.oldest == Some(seq) || row.messages == 0 {
                // Found again by a seek when asked for (`RocksStore::stats`).
                row.oldest = None;
            }
        }
        Ok(())
    }

    /// Deletes the keys of `seqs` (messages of peer `id`), one range deletion per run of
    /// at least [`MIN_RANGE`] consecutive numbers and a point deletion for the others.
    ///
    /// Why: acknowledgements come back in order, so one group's removals of a peer are
    /// mostly one run of consecutive numbers. A point deletion is a tombstone per message
    /// in the memtable's skip list (half of RocksDB's write-path time in a steady stream);
    /// a range deletion is one entry for the whole run. A run holds every number between
    /// its ends, so the range covers no message that is not being removed.
    fn delete_runs(&mut self, id: u32, mut seqs: Vec<u64>) -> Result<(), StorageError> {
        let messages = self.cf(CF_MESSAGES)?;
        seqs.sort_unstable();
        seqs.dedup();
        let mut rest = seqs.as_slice();
        while let Some(&first) = rest.first() {
            let len = rest
                .iter()
                .zip(first..)
                .take_while(|(seq, expected)| **seq == *expected)
                .count();
            let (run, later) = rest.split_at(len);
            match run.last() {
                Some(&last) if run.len() >= MIN_RANGE => self.batch.delete_range_cf(
                    messages,
                    keys::message_key(id, first).as_slice(),
                    keys::message_key_after(id, last).as_slice(),
                ),
                _ => {
                    for seq in run {
                        self.batch.delete_cf(messages, keys::message_key(id, *seq));
                    }
                }
            }
            rest = later;
        }
        Ok(())
    }

    pub(super) fn remember(&mut self, peer: &str, uuid: &Uuid) -> Result<(), StorageError> {
        let id = self.peer_id_or_create(peer)?;
        let limit = self.store.options.received_limit as u64;
        let received = self.cf(CF_RECEIVED)?;
        let Some(row) = self.row_mut(id) else {
            return Ok(());
        };
        let n = row.received_next;
        row.received_next = n.saturating_add(1);
        self.batch.put_cf(received, keys::received_key(id, n), uuid);
        // One id in, the one `limit` places older out: the log stays bounded without a
        // range deletion per batch.
        if let Some(old) = n.checked_sub(limit) {
            self.batch.delete_cf(received, keys::received_key(id, old));
        }
        Ok(())
    }

    pub(super) fn expire(
        &mut self,
        now_ms: u64,
        protect: &dyn Fn(&str) -> Option<u64>,
        out: &mut Vec<(String, Record)>,
    ) -> Result<(), StorageError> {
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound([INDEX_DEADLINE].to_vec());
        let upper = match now_ms.checked_add(1) {
            Some(end) => keys::deadline_key(end, 0, 0).to_vec(),
            None => vec![INDEX_TRANSIENT],
        };
        options.set_iterate_upper_bound(upper);
        let mut due = Vec::new();
        {
            let mut iter = self
                .store
                .db
                .raw_iterator_cf_opt(self.cf(CF_INDEX)?, options);
            iter.seek_to_first();
            while let Some(key) = iter.key() {
                let (_, seq, id) = keys::parse_deadline_key(key)
                    .ok_or_else(|| self.store.corrupt("bad deadline index key"))?;
                let name = self.peer_name(id).unwrap_or_default();
                if protect(name).is_none_or(|protected| seq > protected) {
                    due.push((id, seq, key.to_vec()));
                }
                iter.next();
            }
            iter.status().map_err(|e| self.store.err(e))?;
        }
        for (id, seq, index_key) in due {
            let value = self
                .store
                .db
                .get_pinned_cf(self.cf(CF_MESSAGES)?, keys::message_key(id, seq))
                .map_err(|e| self.store.err(e))?;
            let Some(value) = value else {
                // An index entry without its message cannot come from this code; drop it.
                tracing::warn!(path = %self.store.path.display(), seq, "stale deadline entry");
                self.batch.delete_cf(self.cf(CF_INDEX)?, index_key);
                continue;
            };
            let record =
                keys::decode_record(seq, &value).map_err(|reason| self.store.corrupt(reason))?;
            let header =
                keys::decode_header(&value).map_err(|reason| self.store.corrupt(reason))?;
            self.delete(id, seq, header)?;
            let name = self.peer_name(id).unwrap_or_default().to_owned();
            out.push((name, record));
        }
        Ok(())
    }

    /// Deletes every [`crate::Expiry::WhileConnected`] message; returns how many.
    pub(super) fn remove_transient(&mut self) -> Result<u64, StorageError> {
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound([INDEX_TRANSIENT].to_vec());
        options.set_iterate_upper_bound([INDEX_TRANSIENT + 1].to_vec());
        let mut found = Vec::new();
        {
            let mut iter = self
                .store
                .db
                .raw_iterator_cf_opt(self.cf(CF_INDEX)?, options);
            iter.seek_to_first();
            while let Some(key) = iter.key() {
                found.push(
                    keys::parse_transient_key(key)
                        .ok_or_else(|| self.store.corrupt("bad transient index key"))?,
                );
                iter.next();
            }
            iter.status().map_err(|e| self.store.err(e))?;
        }
        let mut removed = 0;
        for (id, seq) in found {
            match self.header(id, seq)? {
                Some(header) => {
                    self.delete(id, seq, header)?;
                    removed += 1;
                }
                None => self
                    .batch
                    .delete_cf(self.cf(CF_INDEX)?, keys::transient_key(id, seq)),
            }
        }
        Ok(removed)
    }

    /// Adds the changed peer rows and the next sequence number to the batch.
    pub(super) fn finish(mut self) -> Result<(rocksdb::WriteBatch, Applied), StorageError> {
        let meta = self.cf(CF_META)?;
        for (id, row) in &self.rows {
            self.batch.put_cf(
                meta,
                keys::peer_key(*id),
                keys::encode_peer(row.messages, row.bytes, row.received_next, &row.name),
            );
        }
        if self.next_seq != self.store.next_seq {
            self.batch
                .put_cf(meta, keys::KEY_NEXT_SEQ, self.next_seq.to_be_bytes());
        }
        let applied = Applied {
            rows: self.rows,
            new_ids: self.new_ids,
            next_peer_id: self.next_peer_id,
            next_seq: self.next_seq,
            min_added_deadline: self.min_added_deadline,
            min_removed_deadline: self.min_removed_deadline,
        };
        Ok((self.batch, applied))
    }
}

impl BatchTarget for Tx<'_> {
    type Error = StorageError;

    fn insert_all(&mut self, pushes: &[(Arc<str>, Record)]) -> Result<(), StorageError> {
        for (peer, record) in pushes {
            self.insert(peer, record)?;
        }
        Ok(())
    }

    fn remove_all(&mut self, peer: &str, seqs: &[u64]) -> Result<(), StorageError> {
        let Some(id) = self.peer_id(peer) else {
            return Ok(());
        };
        // The headers (size, deadline) of the removed messages keep the counts and the
        // deadline index right. Those not touched earlier in this batch are read in one
        // batched lookup, in key order, instead of one point read each.
        let mut unknown: Vec<u64> = seqs
            .iter()
            .copied()
            .filter(|seq| !self.pending.contains_key(&(id, *seq)))
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        let keys: Vec<[u8; 12]> = unknown
            .iter()
            .map(|seq| keys::message_key(id, *seq))
            .collect();
        let values = self
            .store
            .db
            .batched_multi_get_cf(self.cf(CF_MESSAGES)?, &keys, true);
        let mut stored = std::collections::HashMap::with_capacity(unknown.len());
        for (seq, value) in unknown.iter().zip(values) {
            let value = value.map_err(|e| self.store.err(e))?;
            if let Some(value) = value {
                let header = keys::decode_header(&value).map_err(|r| self.store.corrupt(r))?;
                stored.insert(*seq, header);
            }
        }
        let mut removed = Vec::with_capacity(seqs.len());
        for seq in seqs {
            // Earlier in this batch (including an earlier copy of `seq` in this very
            // list, removed a moment ago) wins over what the database holds.
            let header = match self.pending.get(&(id, *seq)) {
                Some(pending) => *pending,
                None => stored.get(seq).copied(),
            };
            if let Some(header) = header {
                self.forget(id, *seq, header)?;
                removed.push(*seq);
            }
        }
        self.delete_runs(id, removed)
    }

    fn remember(&mut self, peer: &str, uuid: &Uuid) -> Result<(), StorageError> {
        Tx::remember(self, peer, uuid)
    }
}
