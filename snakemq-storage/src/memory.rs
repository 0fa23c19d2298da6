//! The in-memory store: per-peer deques, nothing survives the process.

use std::collections::{HashMap, VecDeque};

use crate::{NewRecord, PeerStats, QueueStore, Record, StorageError};

/// Keeps queues in memory. The default store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    queues: HashMap<String, PeerQueue>,
    next_seq: u64,
}

#[derive(Debug, Default)]
struct PeerQueue {
    records: VecDeque<Record>,
    bytes: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore {
            queues: HashMap::new(),
            next_seq: 1,
        }
    }
}

impl QueueStore for MemoryStore {
    fn push(&mut self, peer: &str, record: NewRecord) -> Result<u64, StorageError> {
        let seq = self.next_seq.max(1);
        self.next_seq = seq + 1;
        let queue = match self.queues.get_mut(peer) {
            Some(queue) => queue,
            None => self.queues.entry(peer.to_owned()).or_default(),
        };
        queue.bytes += record.data.len() as u64;
        queue.records.push_back(Record::from_new(seq, record));
        Ok(seq)
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
        let Some(queue) = self.queues.get_mut(peer) else {
            return Ok(0);
        };
        let mut removed = 0;
        for &seq in seqs {
            // Acks arrive in order almost always: the front is the fast path.
            let index = match queue.records.front() {
                Some(front) if front.seq == seq => Some(0),
                _ => queue.records.binary_search_by_key(&seq, |r| r.seq).ok(),
            };
            if let Some(record) = index.and_then(|i| queue.records.remove(i)) {
                queue.bytes -= record.data.len() as u64;
                removed += 1;
            }
        }
        if queue.records.is_empty() {
            self.queues.remove(peer);
        }
        Ok(removed)
    }

    fn expire(
        &mut self,
        now_ms: u64,
        protect: &dyn Fn(&str) -> Option<u64>,
        out: &mut Vec<(String, Record)>,
    ) -> Result<(), StorageError> {
        for (peer, queue) in &mut self.queues {
            let protected = protect(peer).unwrap_or(0);
            let mut kept = VecDeque::with_capacity(queue.records.len());
            for record in queue.records.drain(..) {
                let expired = record.seq > protected
                    && record.expiry.deadline_ms().is_some_and(|d| d <= now_ms);
                if expired {
                    queue.bytes -= record.data.len() as u64;
                    out.push((peer.clone(), record));
                } else {
                    kept.push_back(record);
                }
            }
            queue.records = kept;
        }
        self.queues.retain(|_, q| !q.records.is_empty());
        Ok(())
    }

    fn next_deadline(&self) -> Option<u64> {
        self.queues
            .values()
            .flat_map(|q| q.records.iter())
            .filter_map(|r| r.expiry.deadline_ms())
            .min()
    }

    fn stats(&self, peer: &str) -> Result<PeerStats, StorageError> {
        Ok(self.queues.get(peer).map(stats_of).unwrap_or_default())
    }

    fn peers(&self) -> Result<Vec<(String, PeerStats)>, StorageError> {
        let mut peers: Vec<_> = self
            .queues
            .iter()
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
