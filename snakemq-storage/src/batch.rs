//! A group of changes applied together: one transaction, one commit, one fsync for the
//! durable backends. The messaging layer's storage writer collects everything pending
//! (new persistent messages, acknowledgements, ids of received messages) into one batch.

use std::sync::Arc;

use crate::{Record, Uuid};

/// Changes to apply atomically, in order: pushes, then removals, then received ids.
///
/// Peers are `Arc<str>` so that a batch of thousands of operations for a few peers
/// shares their names instead of allocating one string per operation.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteBatch {
    /// Messages to append, with their peer. Sequence numbers are assigned by the caller
    /// (increasing; see [`QueueStore::last_seq`](crate::QueueStore::last_seq)) so that a
    /// memory tier and a durable store can share one order.
    pub pushes: Vec<(Arc<str>, Record)>,
    /// Messages to remove (acknowledged, expired, dropped): peer and sequence number.
    pub removes: Vec<(Arc<str>, u64)>,
    /// Ids of messages received from a peer and handed to the application, kept so that a
    /// restarted receiver still recognises duplicates.
    pub received: Vec<(Arc<str>, Uuid)>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves every operation of `later` to the end of this batch.
    pub fn append(&mut self, later: WriteBatch) {
        self.pushes.extend(later.pushes);
        self.removes.extend(later.removes);
        self.received.extend(later.received);
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.pushes.is_empty() && self.removes.is_empty() && self.received.is_empty()
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.pushes.len() + self.removes.len() + self.received.len()
    }

    /// Whether the commit of this batch must reach the disk before it returns (in
    /// [`Durability::Full`](crate::Durability::Full)).
    ///
    /// A batch of removals only does not: if a power loss takes it away, the removed
    /// messages are still queued after the restart and are sent again, which the
    /// receiver's duplicate window absorbs. Nothing is lost, and an acknowledgement never
    /// costs an fsync of its own. The next synced commit makes the removals durable too,
    /// because both backends write one sequential log.
    pub fn needs_sync(&self) -> bool {
        !self.pushes.is_empty() || !self.received.is_empty()
    }

    /// Replays the batch, in its order, into one backend transaction: all pushes at once,
    /// removals by runs of one peer (acknowledgements arrive that way), received ids one
    /// by one.
    #[cfg(any(feature = "sqlite", feature = "rocksdb"))]
    pub(crate) fn apply<T: BatchTarget>(&self, target: &mut T) -> Result<(), T::Error> {
        target.insert_all(&self.pushes)?;
        let mut run: Vec<u64> = Vec::new();
        let mut removes = self.removes.iter().peekable();
        while let Some((peer, seq)) = removes.next() {
            run.push(*seq);
            if removes.peek().is_none_or(|(next, _)| next != peer) {
                target.remove_all(peer, &run)?;
                run.clear();
            }
        }
        for (peer, uuid) in &self.received {
            target.remember(peer, uuid)?;
        }
        Ok(())
    }
}

/// One open transaction of a durable backend: what a [`WriteBatch`] is made of.
#[cfg(any(feature = "sqlite", feature = "rocksdb"))]
pub(crate) trait BatchTarget {
    /// The backend's own error (mapped to [`StorageError`](crate::StorageError) by the
    /// store, which knows the file).
    type Error;
    /// Appends messages, in order.
    fn insert_all(&mut self, pushes: &[(Arc<str>, Record)]) -> Result<(), Self::Error>;
    /// Removes those of `seqs` that are queued for `peer`.
    fn remove_all(&mut self, peer: &str, seqs: &[u64]) -> Result<(), Self::Error>;
    /// Remembers a received id.
    fn remember(&mut self, peer: &str, uuid: &Uuid) -> Result<(), Self::Error>;
}
