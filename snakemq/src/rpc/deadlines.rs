//! The deadlines of calls waiting for replies: one timer for all of them.
//!
//! A `tokio::time::timeout` per call put a timer entry into the runtime's timer wheel and
//! took it out again, each under the time driver's lock: about 1,000 instructions of an RPC
//! call with one call outstanding. Deadlines are long (30 s by default) and most calls
//! short, so one task per [`Rpc`](super::Rpc) handle sleeps until the earliest deadline it
//! was told of, and a call wakes it only when its own deadline comes earlier than that (the
//! first call after an idle spell, or a shorter deadline). When it wakes, it fails the
//! calls whose deadline passed and sleeps until the earliest one left.

use std::sync::{Arc, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Calls, Inner, RpcError};

/// Records a new call's deadline; true when the task must be woken to sleep less.
/// Called under the calls lock, after the call was inserted.
pub(super) fn arm(calls: &mut Calls, expires: Instant) -> bool {
    if calls.armed.is_some_and(|armed| armed <= expires) {
        return false;
    }
    calls.armed = Some(expires);
    true
}

/// Starts the deadline task of `inner`. It holds the handle weakly and ends once the
/// handle is gone (`Inner`'s drop notifies `wake`).
pub(super) fn spawn(inner: &Arc<Inner>) {
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let wake: Arc<Notify> = inner.deadline_wake.clone();
    inner.runtime.spawn(async move {
        loop {
            // (The handle is not held across a wait: it would never be dropped.)
            let armed = match weak.upgrade() {
                Some(inner) => inner.lock_calls().armed,
                None => return,
            };
            // A call that moved `armed` earlier after the look above notified `wake`: the
            // permit it left ends the wait at once, and the loop looks again.
            match armed {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = wake.notified() => continue,
                    }
                }
                None => {
                    wake.notified().await;
                    continue;
                }
            }
            match weak.upgrade() {
                Some(inner) => expire(&inner),
                None => return,
            }
        }
    });
}

/// Fails the calls whose deadline passed and arms the earliest deadline left.
fn expire(inner: &Inner) {
    let now = Instant::now();
    let mut calls = inner.lock_calls();
    let calls = &mut *calls;
    // (Bounded by `max_calling`; this runs about once per deadline, not per call.)
    let due: Vec<u64> = calls
        .pending
        .iter()
        .filter(|(_, call)| call.expires <= now)
        .map(|(id, _)| *id)
        .collect();
    for id in due {
        if let Some(call) = calls.pending.remove(&id) {
            let _ = call.reply.send(Err(RpcError::Deadline));
        }
    }
    calls.armed = calls.pending.values().map(|call| call.expires).min();
}
