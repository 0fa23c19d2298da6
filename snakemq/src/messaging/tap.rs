//! A tap: a consumer of received messages that runs inside the connection drivers, in
//! place of the event stream.
//!
//! Typed RPC on a peer that uses its messaging for RPC only ([`crate::rpc::Rpc::spawn_dispatch`])
//! installs one: a call is then handled in the task that read it (and its reply usually
//! leaves in the same write as the call's acknowledgement), where the event stream cost a
//! channel hand-over, a task switch to the event loop and a second hand-over back for the
//! acknowledgement, on both sides of every call.

use std::sync::Arc;

use super::message::ReceivedMessage;

/// Takes received messages (and hears of connections) inside the connection drivers.
///
/// Its methods run in a driver's task and must not block: they queue work or spawn it.
pub(crate) trait Tap: Send + Sync + 'static {
    /// A fresh (not duplicate) message from `from`. Returns the message when the tap does
    /// not take it (it then goes to the event stream). A message taken counts as done
    /// with: it is acknowledged at once.
    fn received(&self, from: &Arc<str>, message: ReceivedMessage) -> Option<ReceivedMessage>;

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
