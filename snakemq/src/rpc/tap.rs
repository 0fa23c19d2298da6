//! The messaging tap of [`Rpc::spawn_dispatch`](super::Rpc::spawn_dispatch).

use std::sync::{Arc, Weak};

use super::{Inner, Kind, PREFIX, Rpc};
use crate::ReceivedMessage;
use crate::messaging::{Tap, Unqueued};

/// Hands received RPC messages and connection changes to an [`Rpc`] inside messaging's
/// connection tasks.
///
/// Weak: messaging holds its tap, and the `Rpc` holds the messaging; the task of
/// `spawn_dispatch` holds the `Rpc` until messaging stops.
pub(super) struct RpcTap(pub(super) Weak<Inner>);

impl RpcTap {
    fn rpc(&self) -> Option<Rpc> {
        self.0.upgrade().map(|inner| Rpc { inner })
    }
}

impl Tap for RpcTap {
    fn received(
        &self,
        from: &Arc<str>,
        message: ReceivedMessage,
        replies: &mut Vec<Unqueued>,
    ) -> Option<ReceivedMessage> {
        match self.rpc() {
            Some(rpc) if message.data.starts_with(PREFIX) => {
                rpc.handle(from.clone(), &message, None, Some(replies));
            }
            // (The event loop this replaces dropped them too: an RPC-only peer.)
            _ => tracing::debug!(peer = %from, "message dropped: not rpc, on an rpc-only peer"),
        }
        None
    }

    fn unsent(&self, to: &Arc<str>, reply: Unqueued) {
        if let Some(rpc) = self.rpc() {
            super::server::queue_reply(&rpc.inner, to.clone(), reply.data, reply.ttl, None);
        }
    }

    fn drops_duplicates(&self, data: &[u8]) -> bool {
        // A reply: `Rpc::handle` hands it to the call waiting under its id and removes
        // the call, so a second copy (a re-delivery after a reconnect) finds none and is
        // dropped there. Calls and signals keep messaging's window. The kind is field 1,
        // which every encoder of ours writes first; any other layout keeps the window.
        let reply = |code: u8| {
            [Kind::ReplyOk, Kind::ReplyErr]
                .iter()
                .any(|kind| u32::from(code) == kind.code())
        };
        matches!(data.strip_prefix(PREFIX), Some([0x08, code, ..]) if reply(*code))
    }

    fn connected(&self, peer: &Arc<str>) {
        if let Some(rpc) = self.rpc() {
            rpc.peer_connected(peer);
        }
    }

    fn disconnected(&self, peer: &Arc<str>) {
        if let Some(rpc) = self.rpc() {
            rpc.peer_disconnected(peer);
        }
    }
}
