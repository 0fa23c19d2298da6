//! Wall-clock milliseconds for TTL deadlines, anchored once and advanced by tokio's clock.
//!
//! Deadlines are wall-clock (they are stored and must count across restarts), but reading
//! `SystemTime` directly would make TTL untestable with `tokio::time::pause()`. So the wall
//! clock is read once at start and advanced by tokio's monotonic clock: real time in
//! production, virtual time in tests, and immune to the system clock jumping backwards.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    anchor_ms: u64,
    anchor: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        let anchor_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            anchor_ms,
            anchor: Instant::now(),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub(crate) fn now_ms(&self) -> u64 {
        self.anchor_ms + self.anchor.elapsed().as_millis() as u64
    }

    /// The tokio instant at which the wall clock reads `ms`.
    pub(crate) fn instant_at(&self, ms: u64) -> Instant {
        self.anchor + std::time::Duration::from_millis(ms.saturating_sub(self.anchor_ms))
    }
}
