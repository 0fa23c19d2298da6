//! What a link's listeners and connectors hand to its owner: new connections, and the
//! connections that could not be established.
//!
//! Failures matter to a user as much as successes: a connector whose TLS handshake is
//! refused (an untrusted certificate, a missing client certificate) retries with backoff
//! forever, and without a report the only trace would be a log line. [`Incoming::next`]
//! returns connections only; [`Incoming::next_event`] returns failures too.

use tokio::sync::mpsc;

use crate::LinkError;
use crate::connection::{Connection, Direction};
use crate::link::ConnectorId;

/// Something a link's listeners or connectors report.
#[derive(Debug)]
#[non_exhaustive]
pub enum LinkEvent {
    /// A new connection, established (TLS handshake and middleware done) and ready.
    Connected(Connection),
    /// A connection could not be established.
    Failed(EstablishFailure),
}

/// A connection that could not be established: a connect that failed, a TLS handshake that
/// was refused, a middleware layer that refused it, or the establish timeout.
#[derive(Debug)]
#[non_exhaustive]
pub struct EstablishFailure {
    /// Accepted by a listener, or opened by a connector.
    pub direction: Direction,
    /// The other end: the endpoint a connector dials, or the address a listener accepted.
    pub remote: String,
    /// The connector that failed; `None` for accepted connections.
    pub connector: Option<ConnectorId>,
    /// The connector's failed attempts in a row, this one included (the backoff grows with
    /// them); 1 for accepted connections.
    pub attempt: u32,
    /// What went wrong ([`LinkError::TlsHandshake`] carries the TLS reason).
    pub error: LinkError,
}

/// New connections (and, on request, failures) from every listener and connector of a link.
#[derive(Debug)]
pub struct Incoming {
    pub(crate) rx: mpsc::Receiver<LinkEvent>,
}

impl Incoming {
    /// The next new connection; `None` once the link is shut down. Failures are skipped.
    pub async fn next(&mut self) -> Option<Connection> {
        loop {
            match self.rx.recv().await? {
                LinkEvent::Connected(connection) => return Some(connection),
                LinkEvent::Failed(_) => continue,
            }
        }
    }

    /// The next connection or failure; `None` once the link is shut down.
    pub async fn next_event(&mut self) -> Option<LinkEvent> {
        self.rx.recv().await
    }
}

/// Queues a failure without waiting: a listener or connector never stalls on reporting
/// (a flood of bad handshakes must not hold up the next accept), so a report that finds the
/// queue full is dropped; the log keeps it.
pub(crate) fn report(tx: &mpsc::Sender<LinkEvent>, failure: EstablishFailure) {
    // Refused peers are worth a line in the log; a connector's retries (every backoff step
    // while a peer is away) are not.
    match failure.direction {
        Direction::Inbound => tracing::info!(
            remote = %failure.remote,
            error = %failure.error,
            "refused an incoming connection"
        ),
        Direction::Outbound => tracing::debug!(
            remote = %failure.remote,
            attempt = failure.attempt,
            error = %failure.error,
            "connect failed"
        ),
    }
    if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(LinkEvent::Failed(failure)) {
        tracing::debug!("incoming queue full, failure report dropped");
    }
}
