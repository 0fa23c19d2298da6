//! A tap: a consumer of received messages that runs inside the connection drivers, in
//! place of the event stream.
//!
//! Typed RPC on a peer that uses its messaging for RPC only ([`crate::rpc::Rpc::spawn_dispatch`])
//! installs one: a call is then handled in the task that read it (and its reply usually
//! leaves in the same write as the call's acknowledgement), where the event stream cost a
//! channel hand-over, a task switch to the event loop and a second hand-over back for the
//! acknowledgement, on both sides of every call.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::message::ReceivedMessage;

/// A message a connection's driver writes outside the peer's queue, with a fresh id: a
/// tap's answer to the peer whose message it took (see [`Tap::received`]), or a message
/// handed over by `Messaging::send_unqueued`. Nothing keeps a copy of it.
#[derive(Debug)]
pub(crate) struct Unqueued {
    /// The message's data.
    pub(crate) data: Bytes,
    /// Its TTL on the wire (whole seconds are sent).
    pub(crate) ttl: Duration,
}

/// Takes received messages (and hears of connections) inside the connection drivers.
///
/// Its methods run in a driver's task and must not block: they queue work or spawn it.
pub(crate) trait Tap: Send + Sync + 'static {
    /// A fresh (not duplicate) message from `from`. Returns the message when the tap does
    /// not take it (it then goes to the event stream). A message taken counts as done
    /// with: it is acknowledged at once.
    ///
    /// What the tap pushes to `replies` goes back to `from` on this connection, written
    /// by the driver in this turn without entering the queue (no store, no in-flight
    /// window, no acknowledgement awaited): for answers that the tap can produce again if
    /// they are lost with the connection (an RPC reply: the caller sends its call again
    /// after a reconnect and the reply cache answers it). A reply the driver cannot write
    /// now goes back to [`Tap::unsent`].
    fn received(
        &self,
        from: &Arc<str>,
        message: ReceivedMessage,
        replies: &mut Vec<Unqueued>,
    ) -> Option<ReceivedMessage>;

    /// A reply from [`Tap::received`] that the driver could not write at once (messages
    /// queued for the peer before it would be overtaken, the connection is closing, or it
    /// is too large): the tap queues it as an ordinary message.
    fn unsent(&self, to: &Arc<str>, reply: Unqueued);

    /// Whether a message with this data may skip messaging's duplicate window because
    /// the tap drops its duplicates by itself (an RPC reply: a second copy finds no call
    /// waiting for it). Called for every received message under messaging's lock: a
    /// look at a few bytes, nothing more.
    fn drops_duplicates(&self, data: &[u8]) -> bool;

    /// `peer` identified on a new connection (before any of its messages is delivered).
    fn connected(&self, peer: &Arc<str>);

    /// `peer`'s connection ended.
    fn disconnected(&self, peer: &Arc<str>);
}

#[cfg(feature = "rpc")]
impl super::Messaging {
    /// Hands `data` (TTL `ttl` on the wire) to the driver of `to`'s connection, to write
    /// ahead of the queue without entering it, when nothing queued for `to` waits unsent
    /// (so it overtakes nothing); gives it back otherwise (no connection, messages
    /// waiting, too large, shutting down) for an ordinary [`send`](Self::send).
    ///
    /// For a message whose sender sends it again itself if the connection drops before
    /// the peer took it, as the queue would: an RPC call that went out on a connection is
    /// sent again with the same request id after a reconnect, and the server's reply
    /// cache answers one that already ran. Such a message costs no queue insertion,
    /// store read, in-flight entry or removal (about a tenth of an RPC call's work with
    /// one call outstanding), as the tap's replies (see [`Tap::received`]). It leaves
    /// before anything queued after it; it is not reported as delivered or dropped.
    pub(crate) fn send_unqueued(&self, to: &str, data: Bytes, ttl: Duration) -> Result<(), Bytes> {
        let shared = &self.inner.shared;
        if shared.is_stopping()
            || !crate::proto::message_fits(data.len(), shared.max_packet_size as usize)
        {
            return Err(data);
        }
        let wake = {
            let mut state = shared.lock();
            let state = &mut *state;
            let (inserted, paging) = (state.inserted, !state.backlogs.is_empty());
            match state.peers.get_mut(to) {
                Some(link) if link.drained(inserted, paging) => {
                    link.unqueued.push(Unqueued { data, ttl });
                    link.wake.clone()
                }
                _ => return Err(data),
            }
        };
        wake.notify();
        Ok(())
    }
}
