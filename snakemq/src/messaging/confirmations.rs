//! The way back from the application to a connection's driver: the ids of received
//! messages the application is done with, to be acknowledged.
//!
//! A driver looks for these in every turn of its loop, several turns per RPC call, and
//! almost always finds nothing. A `tokio::sync::mpsc` channel polled in each turn cost
//! about 900 instructions per RPC call (the empty channel's checks and a waker
//! registration per poll); here a turn with nothing confirmed costs one atomic load, and
//! a confirmation wakes the driver through its [`DriverWake`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::wake::DriverWake;
use crate::proto::Uuid;

/// Confirmed ids waiting for their driver, in the order they were confirmed.
#[derive(Debug)]
pub(crate) struct Confirmations {
    ids: Mutex<Vec<Uuid>>,
    /// Whether `ids` may be non-empty: lets a turn skip the lock.
    waiting: AtomicBool,
    wake: Arc<DriverWake>,
}

impl Confirmations {
    /// Confirmations for the driver woken by `wake`.
    pub(crate) fn new(wake: Arc<DriverWake>) -> Self {
        Confirmations {
            ids: Mutex::new(Vec::new()),
            waiting: AtomicBool::new(false),
            wake,
        }
    }

    fn ids(&self) -> MutexGuard<'_, Vec<Uuid>> {
        // (Extends and swaps only: a poisoned lock holds a valid list.)
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `ids` for acknowledgement and wakes the driver. Ids confirmed after the
    /// connection ended are dropped with it: the sender re-sends those messages and the
    /// receiver suppresses the duplicates.
    pub(crate) fn push(&self, ids: &[Uuid]) {
        if ids.is_empty() {
            return;
        }
        self.ids().extend_from_slice(ids);
        self.waiting.store(true, Ordering::Release);
        self.wake.notify();
    }

    /// Moves what is waiting into `into` (cleared first); whether there was anything.
    pub(crate) fn take(&self, into: &mut Vec<Uuid>) -> bool {
        into.clear();
        if !self.waiting.swap(false, Ordering::AcqRel) {
            return false;
        }
        std::mem::swap(&mut *self.ids(), into);
        !into.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Uuid {
        [n; 16]
    }

    #[test]
    fn ids_come_back_in_order_and_wake_the_driver() {
        let wake = Arc::new(DriverWake::default());
        let confirmations = Confirmations::new(wake.clone());
        let mut taken = vec![id(9)];
        assert!(!confirmations.take(&mut taken));
        assert!(taken.is_empty());
        assert!(!wake.take());

        confirmations.push(&[id(1), id(2)]);
        confirmations.push(&[]);
        confirmations.push(&[id(3)]);
        assert!(wake.take());
        assert!(confirmations.take(&mut taken));
        assert_eq!(taken, vec![id(1), id(2), id(3)]);
        assert!(!confirmations.take(&mut taken));
        assert!(taken.is_empty());
    }
}
