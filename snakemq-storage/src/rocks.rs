//! The RocksDB store (feature `rocksdb`): queues that survive restarts, in one directory.
//!
//! Layout (see `rocks/keys.rs`): messages keyed by `(peer id, seq)` big-endian, so one
//! peer's queue is one ordered key range; an index column family holds
//! `(deadline, seq, peer)` for expiry and the [`Expiry::WhileConnected`] messages to drop
//! at open; received ids are a bounded per-peer log; per-peer counts and the next sequence
//! number are stored rows, updated in the same batches, and mirrored in memory so that
//! neither `stats` nor `peers` reads the queues. A [`WriteBatch`] is one RocksDB write
//! batch and, with [`Durability::Full`], one fsync of the write-ahead log.
//!
//! [`Expiry::WhileConnected`]: crate::Expiry::WhileConnected

mod keys;
mod open;
#[cfg(test)]
mod tests;
mod tx;

use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamily, DB, ReadOptions, WriteOptions};

use keys::{CF_INDEX, CF_MESSAGES, CF_META, CF_RECEIVED, INDEX_DEADLINE, PEER_PREFIX};
use tx::{Applied, Tx};

use crate::{PeerStats, QueueStore, Record, StorageError, Uuid, WriteBatch};

use crate::Durability;

/// Settings of a [`RocksStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RocksOptions {
    /// How hard a commit tries to reach the disk: [`Durability::Full`] syncs the
    /// write-ahead log at every commit (`WriteOptions::set_sync(true)`),
    /// [`Durability::Normal`] leaves it in the operating system's cache.
    pub durability: Durability,
    /// How many received message ids to keep per peer for duplicate suppression; older
    /// ones are deleted as new ones arrive. Default 65536.
    pub received_limit: usize,
}

impl Default for RocksOptions {
    fn default() -> Self {
        RocksOptions {
            durability: Durability::Full,
            received_limit: 65536,
        }
    }
}

/// A queue store in a RocksDB directory (bundled RocksDB, no compression).
///
/// Only one store may have a directory open at a time: a second open, in this process or
/// another, fails with [`StorageError::Locked`]. Messages that expire only with their
/// connection ([`Expiry::WhileConnected`](crate::Expiry::WhileConnected)) are deleted
/// when the directory is opened; [`RocksStore::removed_at_open`] tells how many.
///
/// Opening a path that is a file, a directory with files but no RocksDB `CURRENT` file,
/// or a damaged database gives [`StorageError::Corrupt`]; a RocksDB database of another
/// application gives [`StorageError::Foreign`], and is not written to. A write-ahead log
/// cut short by a crash is recovered up to its last complete commit, as RocksDB does.
///
/// ```
/// use bytes::Bytes;
/// use snakemq_storage::{Expiry, NewRecord, QueueStore, RocksOptions, RocksStore};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("queue");
/// let mut store = RocksStore::open(&path, RocksOptions::default())?;
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
/// let store = RocksStore::open(&path, RocksOptions::default())?;
/// assert_eq!(store.stats("bob")?.oldest_seq, Some(seq));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RocksStore {
    db: DB,
    path: PathBuf,
    options: RocksOptions,
    write_options: WriteOptions,
    /// For commits that need not reach the disk on their own (removals only).
    unsynced_write_options: WriteOptions,
    peers: PeerCache,
    next_seq: u64,
    /// The earliest deadline in the index, kept up to date by every commit.
    next_deadline: Option<u64>,
    removed_at_open: u64,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.path)
            .field("options", &self.options)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

/// The stored peer rows, mirrored in memory (one per peer ever seen: small).
#[derive(Debug, Default)]
struct PeerCache {
    ids: foldhash::HashMap<String, u32>,
    rows: foldhash::HashMap<u32, PeerRow>,
    next_id: u32,
}

#[derive(Debug, Clone, Default)]
struct PeerRow {
    name: String,
    messages: u64,
    bytes: u64,
    received_next: u64,
    /// The oldest queued sequence number when known; `None` with messages queued means
    /// "look it up" (after the oldest was removed).
    oldest: Option<u64>,
}

impl RocksStore {
    /// Opens (or creates) the store in the directory `path`.
    pub fn open(path: impl AsRef<Path>, options: RocksOptions) -> Result<Self, StorageError> {
        let path = path.as_ref().to_owned();
        let db = open::open_db(&path)?;
        let mut write_options = WriteOptions::default();
        write_options.set_sync(options.durability == Durability::Full);
        let mut store = RocksStore {
            db,
            path,
            options,
            write_options,
            unsynced_write_options: WriteOptions::default(),
            peers: PeerCache::default(),
            next_seq: 1,
            next_deadline: None,
            removed_at_open: 0,
        };
        store.load()?;
        store.removed_at_open = store.transact(|tx| tx.remove_transient())?;
        crate::record::report_removed_at_open(&store.path, store.removed_at_open);
        Ok(store)
    }

    /// The directory of this store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many [`Expiry::WhileConnected`](crate::Expiry::WhileConnected) messages were
    /// found, and deleted, when the directory was opened.
    pub fn removed_at_open(&self) -> u64 {
        self.removed_at_open
    }

    fn err(&self, error: rocksdb::Error) -> StorageError {
        open::map_err(&self.path, error)
    }

    fn corrupt(&self, reason: impl Into<String>) -> StorageError {
        StorageError::Corrupt {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    fn cf(&self, name: &str) -> Result<&ColumnFamily, StorageError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| self.corrupt(format!("column family {name} missing")))
    }

    /// Reads the peer rows and the next sequence number.
    fn load(&mut self) -> Result<(), StorageError> {
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound([PEER_PREFIX].to_vec());
        options.set_iterate_upper_bound([PEER_PREFIX + 1].to_vec());
        let mut iter = self.db.raw_iterator_cf_opt(self.cf(CF_META)?, options);
        iter.seek_to_first();
        let mut peers = PeerCache::default();
        while let Some((key, value)) = iter.item() {
            let id: [u8; 4] = key
                .get(1..)
                .and_then(|id| id.try_into().ok())
                .ok_or_else(|| self.corrupt("bad peer key"))?;
            let id = u32::from_be_bytes(id);
            let (messages, bytes, received_next, name) =
                keys::decode_peer(value).map_err(|reason| self.corrupt(reason))?;
            peers.ids.insert(name.clone(), id);
            peers.rows.insert(
                id,
                PeerRow {
                    name,
                    messages,
                    bytes,
                    received_next,
                    oldest: None,
                },
            );
            peers.next_id = peers.next_id.max(id.saturating_add(1));
            iter.next();
        }
        iter.status().map_err(|e| self.err(e))?;
        drop(iter);
        let next_seq = match self.db.get(keys::KEY_NEXT_SEQ).map_err(|e| self.err(e))? {
            Some(value) => keys::decode_u64(&value).ok_or_else(|| self.corrupt("bad next_seq"))?,
            None => 1,
        };
        self.peers = peers;
        self.next_seq = next_seq.max(1);
        self.next_deadline = self.first_deadline()?;
        Ok(())
    }

    /// Runs `f` on one batch and commits it (nothing is written when `f` fails).
    fn transact<T>(
        &mut self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        self.transact_with(true, f)
    }

    /// [`transact`](Self::transact), flushing the log only when `sync` is set and the
    /// durability asks for it (see [`WriteBatch::needs_sync`]).
    fn transact_with<T>(
        &mut self,
        sync: bool,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let mut tx = Tx::new(self);
        let out = f(&mut tx)?;
        let (batch, applied) = tx.finish()?;
        if !batch.is_empty() {
            let options = if sync {
                &self.write_options
            } else {
                &self.unsynced_write_options
            };
            self.db.write_opt(batch, options).map_err(|e| self.err(e))?;
        }
        self.apply(applied);
        Ok(out)
    }

    fn apply(&mut self, applied: Applied) {
        for (name, id) in applied.new_ids {
            self.peers.ids.insert(name, id);
        }
        self.peers.rows.extend(applied.rows);
        self.peers.next_id = applied.next_peer_id;
        self.next_seq = applied.next_seq;
        // Additions first: a message added and removed in the same batch must not leave
        // its deadline behind as the next one.
        let mut next = match applied.min_added_deadline {
            Some(added) => Some(self.next_deadline.map_or(added, |d| d.min(added))),
            None => self.next_deadline,
        };
        if let Some(removed) = applied.min_removed_deadline {
            if next.is_some_and(|next| removed <= next) {
                next = match self.first_deadline() {
                    Ok(next) => next,
                    Err(error) => {
                        // Too early is harmless: the next expiry finds nothing due.
                        tracing::warn!(%error, "reading the next deadline");
                        Some(removed)
                    }
                };
            }
        }
        self.next_deadline = next;
    }

    fn first_deadline(&self) -> Result<Option<u64>, StorageError> {
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound([INDEX_DEADLINE].to_vec());
        options.set_iterate_upper_bound([INDEX_DEADLINE + 1].to_vec());
        let mut iter = self.db.raw_iterator_cf_opt(self.cf(CF_INDEX)?, options);
        iter.seek_to_first();
        let first = iter.key().and_then(keys::parse_deadline_key);
        iter.status().map_err(|e| self.err(e))?;
        Ok(first.map(|(deadline, _, _)| deadline))
    }

    /// An iterator over the keys from `from` (included) to `to` (excluded) of a column
    /// family, positioned on the first.
    fn peer_iter(
        &self,
        cf: &str,
        from: Vec<u8>,
        to: Vec<u8>,
    ) -> Result<rocksdb::DBRawIterator<'_>, StorageError> {
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound(from);
        options.set_iterate_upper_bound(to);
        let mut iter = self.db.raw_iterator_cf_opt(self.cf(cf)?, options);
        iter.seek_to_first();
        Ok(iter)
    }

    fn stats_of(&self, id: u32, row: &PeerRow) -> Result<PeerStats, StorageError> {
        let oldest_seq = match (row.messages, row.oldest) {
            (0, _) => None,
            (_, Some(oldest)) => Some(oldest),
            (_, None) => {
                let iter = self.peer_iter(
                    CF_MESSAGES,
                    keys::message_key(id, 0).to_vec(),
                    keys::peer_end(id),
                )?;
                let first = iter.key().and_then(|key| keys::message_seq(id, key));
                iter.status().map_err(|e| self.err(e))?;
                first
            }
        };
        Ok(PeerStats {
            messages: row.messages,
            bytes: row.bytes,
            oldest_seq,
        })
    }
}

impl QueueStore for RocksStore {
    fn insert(&mut self, peer: &str, record: Record) -> Result<(), StorageError> {
        self.transact(|tx| tx.insert(peer, &record))
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
        let Some((&id, row)) = self
            .peers
            .ids
            .get(peer)
            .and_then(|id| Some((id, self.peers.rows.get(id)?)))
        else {
            return Ok(());
        };
        let first = match after {
            Some(after) => match after.checked_add(1) {
                Some(first) => first,
                None => return Ok(()),
            },
            None => 0,
        };
        if limit == 0 || row.messages == 0 {
            return Ok(());
        }
        // Starting at the known oldest message skips the deleted ones before it, which
        // RocksDB would otherwise step over until they are compacted away.
        let first = row.oldest.map_or(first, |oldest| first.max(oldest));
        let mut iter = self.peer_iter(
            CF_MESSAGES,
            keys::message_key(id, first).to_vec(),
            keys::peer_end(id),
        )?;
        let mut taken = 0;
        while let Some((key, value)) = iter.item() {
            let seq = keys::message_seq(id, key).ok_or_else(|| self.corrupt("bad message key"))?;
            out.push(keys::decode_record(seq, value).map_err(|reason| self.corrupt(reason))?);
            taken += 1;
            if taken == limit {
                break;
            }
            iter.next();
        }
        iter.status().map_err(|e| self.err(e))
    }

    fn remove(&mut self, peer: &str, seqs: &[u64]) -> Result<usize, StorageError> {
        if seqs.is_empty() || !self.peers.ids.contains_key(peer) {
            return Ok(0);
        }
        self.transact(|tx| {
            let mut removed = 0;
            for &seq in seqs {
                removed += usize::from(tx.remove(peer, seq)?);
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
        // Most sweeps find nothing due.
        if self.next_deadline.is_none_or(|next| next > now_ms) {
            return Ok(());
        }
        let start = out.len();
        let result = self.transact(|tx| tx.expire(now_ms, protect, out));
        if result.is_err() {
            // Nothing was written, so nothing is reported.
            out.truncate(start);
        }
        result
    }

    fn next_deadline(&self) -> Option<u64> {
        self.next_deadline
    }

    fn stats(&self, peer: &str) -> Result<PeerStats, StorageError> {
        let Some(id) = self.peers.ids.get(peer) else {
            return Ok(PeerStats::default());
        };
        match self.peers.rows.get(id) {
            Some(row) => self.stats_of(*id, row),
            None => Ok(PeerStats::default()),
        }
    }

    fn peers(&self) -> Result<Vec<(String, PeerStats)>, StorageError> {
        let mut peers = Vec::new();
        for (id, row) in &self.peers.rows {
            if row.messages > 0 {
                peers.push((row.name.clone(), self.stats_of(*id, row)?));
            }
        }
        peers.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(peers)
    }

    fn write(&mut self, batch: WriteBatch) -> Result<(), StorageError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.transact_with(batch.needs_sync(), |tx| batch.apply(tx))
    }

    fn remember_received(&mut self, peer: &str, uuid: Uuid) -> Result<(), StorageError> {
        self.transact(|tx| tx.remember(peer, &uuid))
    }

    fn recent_received(
        &self,
        peer: &str,
        limit: usize,
        out: &mut Vec<Uuid>,
    ) -> Result<(), StorageError> {
        let Some(row) = self
            .peers
            .ids
            .get(peer)
            .and_then(|id| Some((*id, self.peers.rows.get(id)?)))
        else {
            return Ok(());
        };
        let (id, row) = row;
        let kept = limit.min(self.options.received_limit) as u64;
        let first = row.received_next.saturating_sub(kept);
        let mut iter = self.peer_iter(
            CF_RECEIVED,
            keys::received_key(id, first).to_vec(),
            keys::received_key(id, row.received_next).to_vec(),
        )?;
        while let Some(value) = iter.value() {
            let uuid: Uuid = value
                .try_into()
                .map_err(|_| self.corrupt("received id of the wrong length"))?;
            out.push(uuid);
            iter.next();
        }
        iter.status().map_err(|e| self.err(e))
    }

    fn is_durable(&self) -> bool {
        true
    }
}
