//! The TTL sweeper: drops expired messages when their deadline passes and reports each.
//!
//! Messages in flight on a live connection are left alone (an ack may still come); they are
//! swept once the connection is gone, which wakes the sweeper.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::event::{DropReason, Event};
use super::state::Shared;

/// Least time between two sweeps, so that an expired message protected by an in-flight
/// window cannot make the sweeper spin.
const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(200);

pub(crate) async fn run(shared: Arc<Shared>) {
    let mut last_sweep = tokio::time::Instant::now();
    loop {
        let next = {
            // Published under the lock: a send that queues an earlier deadline after this
            // point sees the new value and wakes us.
            let state = shared.lock();
            let next = state.store.next_deadline();
            shared
                .sweep_armed
                .store(next.unwrap_or(u64::MAX), Ordering::Release);
            next
        };
        let wake_at = next.map(|ms| {
            shared
                .clock
                .instant_at(ms)
                .max(last_sweep + MIN_SWEEP_INTERVAL)
        });
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = shared.sweep.notified() => {}
            _ = sleep_until(wake_at), if wake_at.is_some() => {}
        }
        last_sweep = tokio::time::Instant::now();
        sweep(&shared).await;
    }
}

/// Removes every expired message that is not in flight and reports them.
pub(crate) async fn sweep(shared: &Shared) {
    let now_ms = shared.clock.now_ms();
    let mut expired = Vec::new();
    {
        let mut state = shared.lock();
        let state = &mut *state;
        let peers = &state.peers;
        let protect = |peer: &str| peers.get(peer).and_then(|link| link.cursor);
        if let Err(error) = state.store.expire(now_ms, &protect, &mut expired) {
            tracing::error!(%error, "store failed to expire messages");
            return;
        }
    }
    if expired.is_empty() {
        return;
    }
    shared
        .counters
        .dropped
        .fetch_add(expired.len() as u64, Ordering::Relaxed);
    shared.space.notify_waiters();
    tracing::debug!(count = expired.len(), "expired messages dropped");
    for (peer, record) in &expired {
        shared.forget(&Arc::from(peer.as_str()), [record]);
    }
    let events = expired
        .into_iter()
        .map(|(peer, record)| Event::Dropped {
            to: Arc::from(peer),
            uuid: record.uuid,
            reason: DropReason::Expired,
        })
        .collect();
    shared.report_all(events).await;
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
