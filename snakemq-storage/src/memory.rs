//! The in-memory store: per-peer deques, nothing survives the process.

use std::collections::{BTreeSet, VecDeque};

use crate::{PeerStats, QueueStore, Record, StorageError};

/// Keeps queues in memory. The default store.
///
/// Messages with a deadline are also indexed by it, so finding the next deadline and
/// expiring messages costs O(log n) per message concerned, never a scan of every queue.
#[derive(Debug, Default)]
pub struct MemoryStore {
    queues: foldhash::HashMap<String, PeerQueue>,
    /// (deadline in ms, sequence number, peer) of every message that has a deadline.
    deadlines: BTreeSet<(u64, u64, String)>,
    next_seq: u64,
}

#[derive(Debug, Default)]
struct PeerQueue {
    records: VecDeque<Record>,
    bytes: u64,
}

impl PeerQueue {
    /// Removes the record with sequence number `seq`, if queued.
    fn take(&mut self, seq: u64) -> Option<Record> {
        // Acks arrive in order almost always: the front is the fast path.
        let index = match self.records.front() {
            Some(front) if front.seq == seq => Some(0),
            _ => self.records.binary_search_by_key(&seq, |r| r.seq).ok(),
        };
        let record = self.records.remove(index?)?;
        self.bytes -= record.data.len() as u64;
        Some(record)
    }
}

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
        self.next_seq = self.next_seq.max(seq + 1);
        if let Some(deadline) = record.expiry.deadline_ms() {
            self.deadlines.insert((deadline, seq, peer.to_owned()));
        }
        let queue = match self.queues.get_mut(peer) {
            Some(queue) => queue,
            None => self.queues.entry(peer.to_owned()).or_default(),
        };
        queue.bytes += record.data.len() as u64;
        queue.records.push_back(record);
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
        let Some(queue) = self.queues.get(peer) else {
            return Ok(());
        };
        let start = match after {
            Some(after) => queue.records.partition_point(|r| r.seq <= after),
            None => 0,
        };
        out.extend(queue.records.range(start..).take(limit).cloned());
        Ok(())
    }

    fn remove(&mut self, peer: &str, seqs: &[u64]) -> Result<usize, StorageError> {
        // An emptied queue stays allocated: the next message to the same peer reuses it.
        let Some(queue) = self.queues.get_mut(peer) else {
            return Ok(0);
        };
        let mut removed = 0;
        for &seq in seqs {
            if let Some(record) = queue.take(seq) {
                if let Some(deadline) = record.expiry.deadline_ms() {
                    self.deadlines.remove(&(deadline, seq, peer.to_owned()));
                }
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn expire(
        &mut self,
        now_ms: u64,
        protect: &dyn Fn(&str) -> Option<u64>,
        out: &mut Vec<(String, Record)>,
    ) -> Result<(), StorageError> {
        let due: Vec<(u64, u64, String)> = self
            .deadlines
            .range(..(now_ms.saturating_add(1), 0, String::new()))
            .filter(|(_, seq, peer)| protect(peer).is_none_or(|protected| *seq > protected))
            .cloned()
            .collect();
        for entry in due {
            self.deadlines.remove(&entry);
            let (_, seq, peer) = entry;
            if let Some(record) = self.queues.get_mut(&peer).and_then(|q| q.take(seq)) {
                out.push((peer, record));
            }
        }
        Ok(())
    }

    fn next_deadline(&self) -> Option<u64> {
        self.deadlines.first().map(|(deadline, _, _)| *deadline)
    }

    fn stats(&self, peer: &str) -> Result<PeerStats, StorageError> {
        Ok(self.queues.get(peer).map(stats_of).unwrap_or_default())
    }

    fn peers(&self) -> Result<Vec<(String, PeerStats)>, StorageError> {
        let mut peers: Vec<_> = self
            .queues
            .iter()
            .filter(|(_, queue)| !queue.records.is_empty())
            .map(|(peer, queue)| (peer.clone(), stats_of(queue)))
            .collect();
        peers.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(peers)
    }
}

fn stats_of(queue: &PeerQueue) -> PeerStats {
    PeerStats {
        messages: queue.records.len() as u64,
        bytes: queue.bytes,
        oldest_seq: queue.records.front().map(|r| r.seq),
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
}
