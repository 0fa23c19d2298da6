//! Wake-ups of a connection driver: new messages for its peer, an eviction, shutdown.
//!
//! A driver waits for these in every turn of its loop, several turns per RPC call. With a
//! `tokio::sync::Notify` and a `CancellationToken` future polled each turn, that wait took
//! the notifier's lock twice per turn (once per future, to look at its waiter entry) and
//! was about 2,000 instructions per RPC call; a flag and one stored waker cost a few
//! atomic operations.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

/// Wakes one driver. A notification given while the driver is not waiting is kept (one
/// at most) for its next wait, as a `Notify` permit would be.
#[derive(Debug, Default)]
pub(crate) struct DriverWake {
    notified: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl DriverWake {
    fn waker(&self) -> MutexGuard<'_, Option<Waker>> {
        // (A single assignment under the lock: a poisoned one holds a valid value.)
        self.waker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the driver (or tells its next wait).
    pub(crate) fn notify(&self) {
        self.notified.store(true, Ordering::Release);
        let waker = self.waker().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Ready once notified since the last wait or [`DriverWake::take`], which it consumes.
    pub(crate) fn poll_notified(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.take() {
            return Poll::Ready(());
        }
        {
            let mut slot = self.waker();
            if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *slot = Some(cx.waker().clone());
            }
        }
        // A notification between the first look and the registration took no waker.
        if self.take() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Consumes a pending notification; whether there was one.
    pub(crate) fn take(&self) -> bool {
        self.notified.swap(false, Ordering::AcqRel)
    }
}

/// The drivers to wake when messaging shuts down.
#[derive(Debug, Default)]
pub(crate) struct DriverWakes(Mutex<Vec<Weak<DriverWake>>>);

impl DriverWakes {
    fn lock(&self) -> MutexGuard<'_, Vec<Weak<DriverWake>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new driver's wake, registered for shutdown. The caller checks for a shutdown
    /// that came before this (`Shared::is_stopping`) at its first wait.
    pub(crate) fn register(&self) -> Arc<DriverWake> {
        let wake = Arc::new(DriverWake::default());
        let mut wakes = self.lock();
        // Those of ended connections go when the list doubles: bounded by twice the
        // connections alive.
        if wakes.len() == wakes.capacity() {
            wakes.retain(|w| w.strong_count() > 0);
        }
        wakes.push(Arc::downgrade(&wake));
        wake
    }

    /// Wakes every driver (after the shutdown token was cancelled).
    pub(crate) fn wake_all(&self) {
        let wakes = std::mem::take(&mut *self.lock());
        for wake in wakes.iter().filter_map(Weak::upgrade) {
            wake.notify();
        }
    }
}
