//! `snakemq bench --mode queue-memory`: bytes of process memory per message waiting in the
//! in-memory queue of a peer that is away.
//!
//! The messages are what a user would queue: each payload its own buffer (a `Vec` turned
//! into `Bytes`), distinct content, no TTL. Memory is the resident set (`/proc/self/statm`)
//! just before the first send and just after the last, divided by the count, so it includes
//! everything the queue costs: entries, payload storage, allocator overhead and slack. The
//! libzmq figure in `cargo xtask bench` is measured the same way (`zmq_bench memory`).

use std::time::Duration;

use bytes::Bytes;
use snakemq::{Message, Messaging, QueueLimits, QueuePolicy};

use super::SENDER;
use crate::common::CliError;

/// The peer the messages wait for; nobody of that name ever connects.
const ABSENT_PEER: &str = "bench-absent-peer";

/// Resident set size of this process in bytes (Linux).
fn resident_bytes() -> Result<u64, CliError> {
    let statm = std::fs::read_to_string("/proc/self/statm")
        .map_err(|e| format!("reading /proc/self/statm (Linux only): {e}"))?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .ok_or("unexpected /proc/self/statm format")?;
    // The page size of every Linux target this runs on; statm counts in pages.
    Ok(pages * 4096)
}

/// What the run measured.
pub(crate) struct QueueMemory {
    /// Resident bytes added per queued message.
    pub(crate) bytes_per_message: f64,
    /// Messages the queue held when memory was read.
    pub(crate) queued: u64,
}

/// Queues `count` messages of `size` bytes for an absent peer and measures the memory.
pub(crate) async fn measure(size: usize, count: u64) -> Result<QueueMemory, CliError> {
    let messaging = Messaging::builder(SENDER)
        .queue_limits(QueueLimits {
            max_messages: count.saturating_add(1),
            max_bytes: u64::MAX,
            policy: QueuePolicy::Error,
        })
        .start()
        .await?;
    // Settle the runtime's own allocations before the first reading.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = resident_bytes()?;
    for n in 0..count {
        let mut payload = vec![0x5a; size];
        for (byte, source) in payload.iter_mut().zip(n.to_le_bytes()) {
            *byte = source;
        }
        messaging
            .send(ABSENT_PEER, Message::new(Bytes::from(payload)))
            .await?;
    }
    let after = resident_bytes()?;
    let queued = messaging.queue_stats(ABSENT_PEER)?.messages;
    messaging.shutdown().await;
    if queued != count {
        return Err(format!("{queued} of {count} messages were queued").into());
    }
    Ok(QueueMemory {
        bytes_per_message: after.saturating_sub(before) as f64 / count.max(1) as f64,
        queued,
    })
}
