//! One peer's queue: compact entries in sequence order, payloads in an [`Arena`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use super::arena::{Arena, MAX_CHUNK};
use crate::{Expiry, Record, StorageError, Uuid};

/// `Expiry::Never`, packed.
const NEVER: u64 = u64::MAX;
/// `Expiry::WhileConnected`, packed.
const WHILE_CONNECTED: u64 = u64::MAX - 1;
/// Deadlines are clamped below the two markers (a deadline 584 million years away).
const LATEST_DEADLINE: u64 = u64::MAX - 2;
/// Entry deques above this capacity shrink once mostly empty, and are freed when empty.
const SHRINK_ABOVE: usize = 64;

/// Packs an expiry into one word.
pub(super) fn pack_expiry(expiry: Expiry) -> u64 {
    match expiry {
        Expiry::Never => NEVER,
        Expiry::WhileConnected => WHILE_CONNECTED,
        Expiry::At(ms) => ms.min(LATEST_DEADLINE),
    }
}

/// The expiry packed by [`pack_expiry`].
pub(super) fn unpack_expiry(packed: u64) -> Expiry {
    match packed {
        NEVER => Expiry::Never,
        WHILE_CONNECTED => Expiry::WhileConnected,
        ms => Expiry::At(ms),
    }
}

/// A queued message without its payload bytes, which are at `pos` in the arena.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    pub(super) seq: u64,
    /// Logical position of the payload in the queue's arena.
    pos: u64,
    /// The expiry, packed by [`pack_expiry`].
    pub(super) expiry: u64,
    uuid: Uuid,
    flags: u32,
    len: u32,
}

// The entry is most of the per-message cost: keep it at 48 bytes.
const _: () = assert!(size_of::<Entry>() <= 48);

impl Entry {
    /// The fixed deadline, if any.
    pub(super) fn deadline_ms(&self) -> Option<u64> {
        unpack_expiry(self.expiry).deadline_ms()
    }
}

/// One peer's queue.
#[derive(Debug)]
pub(super) struct PeerQueue {
    /// The peer, shared with the deadline index.
    pub(super) name: Arc<str>,
    entries: VecDeque<Entry>,
    /// Payload bytes queued.
    bytes: u64,
    /// Behind a lock because handing out a payload from the active chunk seals it, and
    /// `read` only has `&self`. Every `&mut self` path uses `get_mut` (no locking); `read`
    /// locks once per call.
    arena: Mutex<Arena>,
}

impl PeerQueue {
    /// An empty queue for `name`.
    pub(super) fn new(name: Arc<str>) -> Self {
        PeerQueue {
            name,
            entries: VecDeque::new(),
            bytes: 0,
            arena: Mutex::new(Arena::default()),
        }
    }

    fn arena_mut(&mut self) -> &mut Arena {
        // Nothing panics while the lock is held; a poisoned lock still holds a usable arena.
        self.arena.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends a record (its sequence number greater than every queued one).
    pub(super) fn push(&mut self, record: Record) -> Result<(), StorageError> {
        let len = u32::try_from(record.data.len()).map_err(|_| {
            StorageError::Backend(format!(
                "a message of {} bytes is too large for the memory store",
                record.data.len()
            ))
        })?;
        let live = self.bytes;
        let pos = self.arena_mut().append(record.data, live);
        self.entries.push_back(Entry {
            seq: record.seq,
            pos,
            expiry: pack_expiry(record.expiry),
            uuid: record.uuid,
            flags: record.flags,
            len,
        });
        self.bytes += u64::from(len);
        Ok(())
    }

    /// Appends up to `limit` records with a sequence number above `after` to `out`.
    pub(super) fn read(
        &self,
        after: Option<u64>,
        limit: usize,
        out: &mut Vec<Record>,
    ) -> Result<(), StorageError> {
        let start = match after {
            Some(after) => self.entries.partition_point(|e| e.seq <= after),
            None => 0,
        };
        let count = limit.min(self.entries.len().saturating_sub(start));
        if count == 0 {
            return Ok(());
        }
        out.reserve(count);
        let mut arena = self.arena.lock().unwrap_or_else(PoisonError::into_inner);
        for entry in self.entries.range(start..).take(count) {
            out.push(record_of(&mut arena, entry)?);
        }
        Ok(())
    }

    /// Removes the entry with sequence number `seq`, if queued. Call [`Self::tidy`] after
    /// a group of removals (and after reading their payloads, if wanted).
    pub(super) fn take(&mut self, seq: u64) -> Option<Entry> {
        // Acks arrive in order almost always: the front is the fast path.
        let index = match self.entries.front() {
            Some(front) if front.seq == seq => 0,
            _ => self.entries.binary_search_by_key(&seq, |e| e.seq).ok()?,
        };
        let entry = self.entries.remove(index)?;
        self.bytes -= u64::from(entry.len);
        Some(entry)
    }

    /// The whole record of an entry just taken (before [`Self::tidy`]).
    pub(super) fn record_of(&mut self, entry: &Entry) -> Result<Record, StorageError> {
        record_of(self.arena_mut(), entry)
    }

    /// Frees what removals left behind: payload segments before the first live entry,
    /// spare deque capacity, and, when holes left by out-of-order removals make the arena
    /// span more than twice the live bytes plus one chunk, the holes themselves (by
    /// copying the live payloads into fresh chunks; O(live bytes), paid for by at least
    /// as many removed bytes since the previous compaction).
    pub(super) fn tidy(&mut self) {
        let Some(front) = self.entries.front().copied() else {
            if self.entries.capacity() > SHRINK_ABOVE {
                self.entries = VecDeque::new();
            }
            self.arena_mut().clear();
            return;
        };
        if self.entries.capacity() > SHRINK_ABOVE
            && self.entries.len() * 4 < self.entries.capacity()
        {
            self.entries.shrink_to(self.entries.len() * 2);
        }
        let arena = self.arena_mut();
        arena.release_before(front.pos);
        let span = arena.end() - front.pos;
        if span > 2 * self.bytes + MAX_CHUNK as u64 {
            self.compact();
        }
    }

    /// Copies the live payloads into a fresh arena, dropping the holes.
    fn compact(&mut self) {
        let old = std::mem::take(self.arena_mut());
        let mut fresh = Arena::default();
        let mut positions = Vec::with_capacity(self.entries.len());
        let mut live = 0;
        for entry in &self.entries {
            let Some(pos) = fresh.append_from(&old, entry.pos, entry.len as usize, live) else {
                // A broken invariant: keep the old arena rather than lose payloads.
                tracing::error!("memory store compaction found a payload missing; skipped");
                *self.arena_mut() = old;
                return;
            };
            positions.push(pos);
            live += u64::from(entry.len);
        }
        for (entry, pos) in self.entries.iter_mut().zip(positions) {
            entry.pos = pos;
        }
        *self.arena_mut() = fresh;
    }

    /// Messages queued.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Payload bytes queued.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Sequence number of the oldest message.
    pub(super) fn oldest_seq(&self) -> Option<u64> {
        self.entries.front().map(|e| e.seq)
    }

    /// Payload bytes the arena keeps alive.
    #[cfg(test)]
    pub(super) fn held(&mut self) -> usize {
        self.arena_mut().held()
    }

    /// Capacity of the entry deque.
    #[cfg(test)]
    pub(super) fn entry_capacity(&self) -> usize {
        self.entries.capacity()
    }
}

fn record_of(arena: &mut Arena, entry: &Entry) -> Result<Record, StorageError> {
    let data: Bytes = arena.get(entry.pos, entry.len as usize).ok_or_else(|| {
        StorageError::Backend(format!(
            "memory store lost the payload of message {}",
            entry.seq
        ))
    })?;
    Ok(Record {
        seq: entry.seq,
        uuid: entry.uuid,
        data,
        flags: entry.flags,
        expiry: unpack_expiry(entry.expiry),
    })
}
