//! The in-memory store: per-peer queues of compact entries, nothing survives the process.
//!
//! # Memory layout
//!
//! A queued message costs one 48-byte [`queue::Entry`] (sequence number, uuid, flags,
//! packed expiry, and the position and length of its payload) in the peer's
//! `VecDeque`, plus its payload bytes in the peer's [`arena::Arena`]: payloads under
//! [`arena::COPY_LIMIT`] bytes are copied into shared chunks (so a message has no heap
//! allocation of its own, and no allocator header), larger ones are kept as the `Bytes`
//! they came in, uncopied. For 64-byte messages that is about 48 + 64 bytes, plus the
//! deque's spare capacity, instead of an 80-byte `Record` and a separate payload
//! allocation (about 160 bytes). See [`MemoryStore`] for the measured figures.
//!
//! Reading hands out `Bytes` slices of the chunks (a reference count, no copy). Removing
//! messages out of order (an expired message, an acknowledgement that overtakes another)
//! leaves a hole in the arena until the oldest live message moves past it; a queue whose
//! arena spans more than twice its live bytes plus one chunk is compacted, which bounds
//! that waste. An emptied queue frees its chunks beyond a few KiB and its deque beyond a
//! few entries, so idle peers cost little.
//!
//! `read` only has `&self`, but handing out a payload still in the active chunk has to
//! seal that chunk: each queue's arena sits behind a `Mutex`, locked once per `read`
//! call (uncontended, a few nanoseconds) and reached without locking (`get_mut`) by
//! every `&mut self` operation. The alternative, copying such payloads out on read,
//! would cost an allocation per message sent to a connected peer.
//!
//! Why not a plain `VecDeque<Record>`: a `Record` is 80 bytes, and every payload is its
//! own allocation (or pins whatever larger buffer it was sliced from). Why chunks of
//! growing size: a peer with a short queue should not hold 64 KiB, a long queue should
//! not pay an allocation every kilobyte.

mod arena;
mod queue;

use std::collections::BTreeMap;
use std::sync::Arc;

use queue::PeerQueue;

use crate::{PeerStats, QueueStore, Record, StorageError};

/// Keeps queues in memory. The default store.
///
/// Messages with a deadline are also indexed by it, so finding the next deadline and
/// expiring messages costs O(log n) per message concerned, never a scan of every queue.
///
/// # Memory use
///
/// Measured as the growth of the resident set size (`/proc/self/statm`, second field
/// times the page size) of a release build around pushing 1,000,000 messages with
/// distinct 64-byte payloads (each a fresh `Bytes` from a `Vec`), no deadline, to one
/// peer, divided by the message count: 112 bytes per message, payload included (48 for
/// the entry, 64 of payload, the rest chunk bookkeeping; the entry deque's spare
/// power-of-two capacity is allocated but not resident until used, so right after the
/// deque grows the address space holds up to 48 more bytes per message). The previous
/// layout, a `VecDeque<Record>` holding each payload's own allocation, measured 160
/// bytes. Payloads of 512 bytes or more, kept uncopied, cost what they did before
/// (600-byte payloads: 696 bytes per message either way). A drained queue returns its
/// memory (the old layout kept the deque's full capacity).
#[derive(Debug, Default)]
pub struct MemoryStore {
    queues: foldhash::HashMap<Arc<str>, PeerQueue>,
    /// The peer of every message that has a deadline, by (deadline in ms, sequence
    /// number). Sequence numbers are unique store-wide, so the key is too.
    deadlines: BTreeMap<(u64, u64), Arc<str>>,
    next_seq: u64,
}

// `read` seals chunks through a lock rather than a `RefCell` so that the store stays
// `Sync`, as it was with plain deques.
const _: fn() = || {
    fn check<T: Send + Sync>() {}
    check::<MemoryStore>();
};

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore {
            next_seq: 1,
            ..Default::default()
        }
    }
}

impl QueueStore for MemoryStore {
    fn insert(&mut self, peer: &str, record: Record) -> Result<(), StorageError> {
        let seq = record.seq;
        let queue = match self.queues.get_mut(peer) {
            Some(queue) => queue,
            None => {
                let name: Arc<str> = Arc::from(peer);
                self.queues
                    .entry(name.clone())
                    .or_insert_with(|| PeerQueue::new(name))
            }
        };
        // The packed (clamped) deadline, so that removal finds the same key.
        let deadline = queue::unpack_expiry(queue::pack_expiry(record.expiry)).deadline_ms();
        queue.push(record)?;
        self.next_seq = self.next_seq.max(seq + 1);
        if let Some(deadline) = deadline {
            self.deadlines.insert((deadline, seq), queue.name.clone());
        }
        Ok(())
    }

    fn last_seq(&self) -> Result<Option<u64>, StorageError> {
        Ok(self.next_seq.checked_sub(1).filter(|s| *s > 0))
    }

    fn read(
        &self,
        peer: &str,
        after: Option<u64>,
        limit: usize,
        out: &mut Vec<Record>,
    ) -> Result<(), StorageError> {
        match self.queues.get(peer) {
            Some(queue) => queue.read(after, limit, out),
            None => Ok(()),
        }
    }

    fn remove(&mut self, peer: &str, seqs: &[u64]) -> Result<usize, StorageError> {
        let Some(queue) = self.queues.get_mut(peer) else {
            return Ok(0);
        };
        let mut removed = 0;
        for &seq in seqs {
            if let Some(entry) = queue.take(seq) {
                if let Some(deadline) = entry.deadline_ms() {
                    self.deadlines.remove(&(deadline, seq));
                }
                removed += 1;
            }
        }
        if removed > 0 {
            queue.tidy();
        }
        Ok(removed)
    }

    fn expire(
        &mut self,
        now_ms: u64,
        protect: &dyn Fn(&str) -> Option<u64>,
        out: &mut Vec<(String, Record)>,
    ) -> Result<(), StorageError> {
        let due: Vec<((u64, u64), Arc<str>)> = self
            .deadlines
            .range(..(now_ms.saturating_add(1), 0))
            .filter(|((_, seq), peer)| protect(peer).is_none_or(|protected| *seq > protected))
            .map(|(key, peer)| (*key, peer.clone()))
            .collect();
        for (key, peer) in due {
            self.deadlines.remove(&key);
            let Some(queue) = self.queues.get_mut(&*peer) else {
                continue;
            };
            if let Some(entry) = queue.take(key.1) {
                let record = queue.record_of(&entry);
                // Tidying once per message is O(1) unless it compacts, and compaction is
                // paid for by the bytes removed before it.
                queue.tidy();
                out.push((peer.to_string(), record?));
            }
        }
        Ok(())
    }

    fn next_deadline(&self) -> Option<u64> {
        self.deadlines
            .first_key_value()
            .map(|((deadline, _), _)| *deadline)
    }

    fn stats(&self, peer: &str) -> Result<PeerStats, StorageError> {
        Ok(self.queues.get(peer).map(stats_of).unwrap_or_default())
    }

    fn peers(&self) -> Result<Vec<(String, PeerStats)>, StorageError> {
        let mut peers: Vec<_> = self
            .queues
            .iter()
            .filter(|(_, queue)| queue.len() > 0)
            .map(|(peer, queue)| (peer.to_string(), stats_of(queue)))
            .collect();
        peers.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(peers)
    }
}

fn stats_of(queue: &PeerQueue) -> PeerStats {
    PeerStats {
        messages: queue.len() as u64,
        bytes: queue.bytes(),
        oldest_seq: queue.oldest_seq(),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::{Expiry, NewRecord};

    fn record(n: u8, expiry: Expiry) -> NewRecord {
        NewRecord {
            uuid: [n; 16],
            data: Bytes::from(vec![n; usize::from(n)]),
            flags: 0,
            expiry,
        }
    }

    #[test]
    fn fifo_per_peer_with_stats() -> Result<(), StorageError> {
        let mut store = MemoryStore::new();
        let a1 = store.push("a", record(1, Expiry::Never))?;
        let b1 = store.push("b", record(2, Expiry::Never))?;
        let a2 = store.push("a", record(3, Expiry::Never))?;
        assert!(a1 < b1 && b1 < a2);
        let mut page = Vec::new();
        store.read("a", None, 10, &mut page)?;
        assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![a1, a2]);
        page.clear();
        store.read("a", Some(a1), 10, &mut page)?;
        assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![a2]);
        let stats = store.stats("a")?;
        assert_eq!(
            (stats.messages, stats.bytes, stats.oldest_seq),
            (2, 4, Some(a1))
        );
        assert_eq!(store.remove("a", &[a2, 999])?, 1);
        assert_eq!(store.remove("a", &[a1])?, 1);
        assert_eq!(store.peers()?.len(), 1, "only b still has messages");
        Ok(())
    }

    #[test]
    fn expiry_uses_the_deadline_index_and_respects_protection() -> Result<(), StorageError> {
        let mut store = MemoryStore::new();
        let early = store.push("a", record(1, Expiry::At(100)))?;
        let late = store.push("a", record(2, Expiry::At(500)))?;
        store.push("a", record(3, Expiry::Never))?;
        let flying = store.push("b", record(4, Expiry::At(50)))?;
        assert_eq!(store.next_deadline(), Some(50));

        let mut out = Vec::new();
        let protect_b = |peer: &str| (peer == "b").then_some(flying);
        store.expire(100, &protect_b, &mut out)?;
        assert_eq!(
            out.iter().map(|(_, r)| r.seq).collect::<Vec<_>>(),
            vec![early]
        );
        assert_eq!(
            store.next_deadline(),
            Some(50),
            "protected message stays indexed"
        );

        out.clear();
        store.expire(1000, &|_| None, &mut out)?;
        let mut seqs: Vec<u64> = out.iter().map(|(_, r)| r.seq).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, vec![late, flying]);
        assert_eq!(store.next_deadline(), None);
        assert_eq!(store.stats("a")?.messages, 1);
        Ok(())
    }

    #[test]
    fn removing_a_message_removes_its_deadline() -> Result<(), StorageError> {
        let mut store = MemoryStore::new();
        let seq = store.push("a", record(1, Expiry::At(10)))?;
        store.remove("a", &[seq])?;
        assert_eq!(store.next_deadline(), None);
        Ok(())
    }

    fn sized(n: u32, len: usize) -> NewRecord {
        let mut data = vec![0u8; len];
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = (n as usize * 7 + i) as u8;
        }
        NewRecord {
            uuid: [n as u8; 16],
            data: Bytes::from(data),
            flags: n,
            expiry: Expiry::Never,
        }
    }

    fn held(store: &mut MemoryStore, peer: &str) -> usize {
        store.queues.get_mut(peer).map_or(0, |q| q.held())
    }

    #[test]
    fn records_round_trip_with_every_field() -> Result<(), StorageError> {
        let mut store = MemoryStore::new();
        let expiries = [
            Expiry::Never,
            Expiry::WhileConnected,
            Expiry::At(0),
            Expiry::At(123_456),
        ];
        let mut sent = Vec::new();
        for (n, expiry) in (0u32..).zip(expiries) {
            let mut new = sized(n, 600 * (n as usize % 2));
            new.expiry = expiry;
            let seq = store.push("a", new.clone())?;
            sent.push(Record::from_new(seq, new));
        }
        let mut page = Vec::new();
        store.read("a", None, 10, &mut page)?;
        assert_eq!(page, sent);
        Ok(())
    }

    #[test]
    fn reads_share_the_stored_bytes() -> Result<(), StorageError> {
        let mut store = MemoryStore::new();
        let big = sized(1, 4096);
        let big_ptr = big.data.as_ptr();
        store.push("a", sized(2, 64))?;
        store.push("a", big)?;
        let (mut first, mut second) = (Vec::new(), Vec::new());
        store.read("a", None, 10, &mut first)?;
        store.read("a", None, 10, &mut second)?;
        let ptrs = |page: &[Record]| page.iter().map(|r| r.data.as_ptr()).collect::<Vec<_>>();
        assert_eq!(ptrs(&first), ptrs(&second), "no copy per read");
        assert_eq!(
            ptrs(&first).get(1),
            Some(&big_ptr),
            "large payload not copied"
        );
        Ok(())
    }

    #[test]
    fn holes_from_out_of_order_removal_are_compacted() -> Result<(), StorageError> {
        let mut store = MemoryStore::new();
        let mut seqs = Vec::new();
        for n in 0..5000 {
            seqs.push(store.push("a", sized(n, 100))?);
        }
        let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) else {
            return Err(StorageError::Backend("no messages".into()));
        };
        // The oldest message stays (in flight); everything else but the newest goes.
        let middle: Vec<u64> = seqs
            .iter()
            .copied()
            .filter(|s| *s != first && *s != last)
            .collect();
        assert_eq!(store.remove("a", &middle)?, middle.len());
        let held = held(&mut store, "a");
        assert!(
            held <= 2 * 200 + 2 * arena::MAX_CHUNK,
            "held {held} bytes for 200 live"
        );
        let mut page = Vec::new();
        store.read("a", None, 10, &mut page)?;
        let expect = [sized(0, 100), sized(4999, 100)];
        assert_eq!(
            page.iter().map(|r| &r.data).collect::<Vec<_>>(),
            [&expect[0].data, &expect[1].data]
        );
        assert_eq!(
            page.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![first, last]
        );
        Ok(())
    }

    #[test]
    fn expiring_most_of_a_queue_keeps_the_rest_intact() -> Result<(), StorageError> {
        let mut store = MemoryStore::new();
        let mut kept = Vec::new();
        for n in 0..3000 {
            let mut new = sized(n, 50 + (n as usize % 3) * 300);
            if n % 10 != 0 {
                new.expiry = Expiry::At(10);
            }
            let seq = store.push("a", new.clone())?;
            if n % 10 == 0 {
                kept.push(Record::from_new(seq, new));
            }
        }
        let mut out = Vec::new();
        store.expire(10, &|_| None, &mut out)?;
        assert_eq!(out.len(), 2700);
        assert!(
            out.iter()
                .all(|(peer, r)| peer == "a" && r.expiry == Expiry::At(10))
        );
        let live: usize = kept.iter().map(|r| r.data.len()).sum();
        assert!(held(&mut store, "a") <= 2 * live + 2 * arena::MAX_CHUNK);
        let mut page = Vec::new();
        store.read("a", None, usize::MAX, &mut page)?;
        assert_eq!(page, kept);
        Ok(())
    }

    #[test]
    fn an_emptied_queue_releases_its_memory() -> Result<(), StorageError> {
        let mut store = MemoryStore::new();
        let mut seqs = Vec::new();
        for n in 0..20_000 {
            seqs.push(store.push("a", sized(n, 64))?);
        }
        assert!(held(&mut store, "a") >= 20_000 * 64);
        // Acknowledged in order, a page at a time, as a connected peer would.
        for page in seqs.chunks(100) {
            store.remove("a", page)?;
        }
        assert_eq!(store.stats("a")?, PeerStats::default());
        assert_eq!(held(&mut store, "a"), 0);
        let capacity = store.queues.get("a").map_or(0, |q| q.entry_capacity());
        assert!(capacity <= 64, "entry deque kept {capacity} slots");
        // And the queue works again afterwards.
        let seq = store.push("a", sized(1, 64))?;
        let mut page = Vec::new();
        store.read("a", None, 10, &mut page)?;
        assert_eq!(page, vec![Record::from_new(seq, sized(1, 64))]);
        Ok(())
    }
}
