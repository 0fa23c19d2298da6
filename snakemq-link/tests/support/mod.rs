//! Helpers shared by the link's integration tests (`#[path]` include): fast reconnects,
//! bounded waits, and recognisable packet bodies.
#![allow(dead_code)] // each test binary uses a different part of this helper

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use snakemq_link::{Backoff, Connection, Incoming, LinkConfig};
use tokio::time::timeout;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type TestResult = Result<(), BoxError>;

/// Upper bound of any single wait for something that must happen.
pub(crate) const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing happens" is watched for.
pub(crate) const QUIET: Duration = Duration::from_millis(300);

/// Retries start at 10 ms and stay below 50 ms, so tests do not wait for the default
/// multi-second backoff.
pub(crate) fn fast_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
        multiplier: 2.0,
        jitter: 0.0,
    }
}

/// Default settings with [`fast_backoff`].
pub(crate) fn config() -> LinkConfig {
    LinkConfig::default().backoff(fast_backoff())
}

/// `fut`, or an error naming `what` once [`WAIT`] is over.
pub(crate) async fn within<T>(what: &str, fut: impl Future<Output = T>) -> Result<T, BoxError> {
    timeout(WAIT, fut)
        .await
        .map_err(|_| format!("timed out after {WAIT:?} waiting for {what}").into())
}

/// The next connection on `incoming`, within [`WAIT`].
pub(crate) async fn next_conn(incoming: &mut Incoming, what: &str) -> Result<Connection, BoxError> {
    within(what, incoming.next())
        .await?
        .ok_or_else(|| format!("incoming queue closed while waiting for {what}").into())
}

/// Fails if a connection arrives on `incoming` within [`QUIET`].
pub(crate) async fn expect_no_conn(incoming: &mut Incoming, what: &str) -> TestResult {
    match timeout(QUIET, incoming.next()).await {
        Err(_) => Ok(()),
        Ok(Some(conn)) => Err(format!("{what}: unexpected connection {:?}", conn.info()).into()),
        Ok(None) => Err(format!("{what}: incoming queue closed").into()),
    }
}

/// A recognisable body: the index in the first bytes, then a pattern, `len` bytes long.
pub(crate) fn body(index: u32, len: usize) -> Bytes {
    let mut out = Vec::with_capacity(len);
    let tag = index.to_be_bytes();
    for i in 0..len {
        let byte = tag
            .get(i)
            .copied()
            .unwrap_or_else(|| (i as u32).wrapping_mul(31).wrapping_add(index) as u8);
        out.push(byte);
    }
    Bytes::from(out)
}
