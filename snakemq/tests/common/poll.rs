//! Waiting for state that no event reports (`#[path]` include).

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
