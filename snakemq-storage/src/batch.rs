//! A group of changes applied together: one transaction, one commit, one fsync for the
//! durable backends. The messaging layer's storage writer collects everything pending
//! (new persistent messages, acknowledgements, ids of received messages) into one batch.

use crate::{Record, Uuid};

/// Changes to apply atomically, in order: pushes, then removals, then received ids.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteBatch {
    /// Messages to append, with their peer. Sequence numbers are assigned by the caller
    /// (increasing; see [`QueueStore::last_seq`](crate::QueueStore::last_seq)) so that a
    /// memory tier and a durable store can share one order.
    pub pushes: Vec<(String, Record)>,
    /// Messages to remove (acknowledged, expired, dropped): peer and sequence number.
    pub removes: Vec<(String, u64)>,
    /// Ids of messages received from a peer and handed to the application, kept so that a
    /// restarted receiver still recognises duplicates.
    pub received: Vec<(String, Uuid)>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.pushes.is_empty() && self.removes.is_empty() && self.received.is_empty()
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.pushes.len() + self.removes.len() + self.received.len()
    }
}
