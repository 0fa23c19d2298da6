//! The server's bounded reply cache: a call delivered again (a re-send after a reconnect,
//! or a duplicate on the wire) gets the first execution's reply instead of running twice.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

/// What the cache knows about a request.
#[derive(Debug, Clone)]
pub(crate) enum Entry {
    /// Running; a duplicate is dropped, the reply will follow.
    Running,
    /// Done; a duplicate gets this reply (message data) again.
    Done(Bytes),
}

/// A cached request: its peer's number in the cache and its request id. Handed out by
/// [`ReplyCache::begin`] so that the end of the call finds its entry without looking the
/// peer's name up again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    peer: u64,
    id: u64,
}

/// Request states keyed by (peer, request id), oldest evicted first.
///
/// Peers are numbered: one map from (number, id) holds every entry, and the eviction
/// order holds numbers, so a call costs one look-up of its peer's name (in `begin`)
/// where a map per peer cost one per step (`begin`, `finish`, and the eviction of an
/// older entry), and no reference count of the name is touched per entry. Numbers are
/// never reused: a [`Key`] of an evicted entry finds nothing. foldhash (randomly seeded)
/// for request ids that peers choose, as before.
#[derive(Debug)]
pub(crate) struct ReplyCache {
    capacity: usize,
    /// The numbers of the peers seen; pruned to those with entries when it grows past
    /// twice the capacity (see `number`).
    peers: foldhash::HashMap<Arc<str>, u64>,
    next_peer: u64,
    entries: foldhash::HashMap<Key, Entry>,
    order: VecDeque<Key>,
}

impl ReplyCache {
    pub(crate) fn new(capacity: usize) -> Self {
        ReplyCache {
            capacity: capacity.max(1),
            peers: Default::default(),
            next_peer: 0,
            entries: Default::default(),
            order: VecDeque::new(),
        }
    }

    /// The state of a request, if known.
    #[cfg(test)]
    pub(crate) fn get(&self, peer: &str, id: u64) -> Option<&Entry> {
        let peer = *self.peers.get(peer)?;
        self.entries.get(&Key { peer, id })
    }

    /// `peer`'s number, given on first sight.
    fn number(&mut self, peer: &Arc<str>) -> u64 {
        if let Some(number) = self.peers.get(&**peer) {
            return *number;
        }
        if self.peers.len() >= 2 * self.capacity {
            // Peers without entries are forgotten (their numbers are not given again).
            // At most `capacity` peers have entries, so this runs at most once per
            // `capacity` new peers: constant work per call on average.
            let live: foldhash::HashSet<u64> = self.order.iter().map(|key| key.peer).collect();
            self.peers.retain(|_, number| live.contains(number));
        }
        let number = self.next_peer;
        self.next_peer += 1;
        self.peers.insert(peer.clone(), number);
        number
    }

    fn evict(&mut self) {
        // A running entry may be evicted under heavy load; its duplicate would then run
        // again, which the capacity (many times the in-flight bound) makes unlikely.
        while self.order.len() > self.capacity {
            if let Some(key) = self.order.pop_front() {
                self.entries.remove(&key);
            }
        }
    }

    /// Looks a request up and, when it is new, records it as running (one lookup where
    /// `get` then `start` took two): `Ok` with its key for a new request, its state for a
    /// known one.
    pub(crate) fn begin(&mut self, peer: &Arc<str>, id: u64) -> Result<Key, Entry> {
        let key = Key {
            peer: self.number(peer),
            id,
        };
        match self.entries.entry(key) {
            std::collections::hash_map::Entry::Occupied(known) => return Err(known.get().clone()),
            std::collections::hash_map::Entry::Vacant(new) => {
                new.insert(Entry::Running);
            }
        }
        self.order.push_back(key);
        self.evict();
        Ok(key)
    }

    /// Records the reply of a request that is still cached.
    pub(crate) fn finish(&mut self, key: Key, reply: Bytes) {
        if let Some(entry) = self.entries.get_mut(&key) {
            *entry = Entry::Done(reply);
        }
    }

    /// Forgets a request that did not run (refused as busy), so that a retry can run.
    pub(crate) fn forget(&mut self, key: Key) {
        if self.entries.remove(&key).is_some() {
            self.order.retain(|k| *k != key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_and_keeps_replies() -> Result<(), Entry> {
        let peer: Arc<str> = Arc::from("p");
        let mut cache = ReplyCache::new(2);
        let one = cache.begin(&peer, 1)?;
        cache.finish(one, Bytes::from_static(b"one"));
        cache.begin(&peer, 2)?;
        assert!(matches!(cache.get(&peer, 1), Some(Entry::Done(b)) if b == "one"));
        assert!(matches!(cache.get(&peer, 2), Some(Entry::Running)));
        let three = cache.begin(&peer, 3)?;
        assert!(cache.get(&peer, 1).is_none());
        // A key of an evicted entry finds nothing.
        cache.finish(one, Bytes::from_static(b"late"));
        assert!(cache.get(&peer, 1).is_none());
        cache.forget(three);
        assert!(cache.get(&peer, 3).is_none());
        let four = cache.begin(&peer, 4)?;
        assert!(matches!(cache.begin(&peer, 4), Err(Entry::Running)));
        cache.finish(four, Bytes::from_static(b"four"));
        assert!(matches!(cache.begin(&peer, 4), Err(Entry::Done(b)) if b == "four"));
        // Capacity 2: 4 and 2 are kept, 3 was forgotten; a fifth evicts 2.
        cache.begin(&peer, 5)?;
        assert!(cache.get(&peer, 2).is_none());
        Ok(())
    }

    #[test]
    fn peers_are_told_apart_and_forgotten_when_idle() -> Result<(), Entry> {
        let mut cache = ReplyCache::new(2);
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let from_a = cache.begin(&a, 7)?;
        cache.finish(from_a, Bytes::from_static(b"a7"));
        // The same id from another peer is another request.
        cache.begin(&b, 7)?;
        assert!(matches!(cache.get(&a, 7), Some(Entry::Done(_))));
        assert!(matches!(cache.get(&b, 7), Some(Entry::Running)));
        // Many peers coming and going: the name map stays bounded.
        for n in 0..100 {
            cache.begin(&Arc::from(format!("p{n}")), 1)?;
        }
        assert!(cache.peers.len() <= 2 * cache.capacity);
        assert!(cache.get(&a, 7).is_none());
        Ok(())
    }
}
