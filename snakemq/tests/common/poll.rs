//! Bounded waits for tests (`#[path]` include): for something that should happen, and for
//! state that no event reports.
#![allow(dead_code)] // each test binary uses a different part of this helper

use std::time::Duration;

/// Waits until `done` holds, looking every 5 ms; fails after 20 s instead of hanging.
/// Only for state no event reports (a server's counters, a cache's size).
pub(crate) async fn until(
    mut done: impl FnMut() -> bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        if tokio::time::Instant::now() > give_up {
            return Err("condition not reached".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// A test waiting for something that should happen fails after 20 s instead of hanging.
pub(crate) async fn within<T>(wait: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .map_err(|_| "nothing happened in 20 s".to_owned())
}
