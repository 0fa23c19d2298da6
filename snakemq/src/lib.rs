//! snakemq: a brokerless peer-to-peer message queue, wire-compatible with Python snakeMQ.
//!
//! Every process runs the same stack; any peer may listen or connect, and once connected
//! both ends are equal. Messages are sent to a peer's *name* and wait in that peer's queue
//! until it is connected.
//!
//! ```
//! use std::time::Duration;
//! use snakemq::{Event, Message, Messaging};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), snakemq::Error> {
//! // Two peers on the in-process transport; use "127.0.0.1:4000" for TCP.
//! let bob = Messaging::builder("bob").listen("memory:crate-doc").start().await?;
//! let alice = Messaging::builder("alice").connect("memory:crate-doc").start().await?;
//!
//! let mut bob_events = bob.events();
//! alice.send("bob", Message::new("hello").ttl(Duration::from_secs(600))).await?;
//!
//! while let Some(event) = bob_events.next().await {
//!     if let Event::Received { from, message } = event {
//!         assert_eq!(&*from, "alice");
//!         assert_eq!(message.data(), "hello");
//!         break;
//!     }
//! }
//! alice.shutdown().await;
//! bob.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Delivery contract
//!
//! - **Per-peer FIFO**, also across reconnects and re-deliveries.
//! - **TTL is a deadline**: enqueue time + ttl on the wall clock. Expired messages are swept
//!   by a timer and reported as [`Event::Dropped`] with [`DropReason::Expired`], never
//!   silently. `ttl = 0` means "only if the peer is connected now" (Python's meaning) and is
//!   reported as [`DropReason::NotConnected`] when it cannot be delivered. The default is
//!   *no expiry*. On the wire the TTL is the remaining whole seconds, truncated.
//! - **Bounded queues**: per-peer limits in messages and bytes ([`QueueLimits`]) with a
//!   [`QueuePolicy`]: wait (default), error, or drop the oldest (reported).
//! - **With a Rust peer: at-least-once.** Both sides announce acknowledgements in a
//!   CAPABILITIES frame. The receiver acknowledges a message once the application is done
//!   with it: it took the [`Event::Received`] and asked for the next event, or called
//!   [`Events::confirm`]. The sender removes it from its queue only then, and re-sends
//!   unacknowledged messages after a reconnect, in order. The receiver
//!   suppresses duplicates by message id within a bounded window. Acks are batched; many
//!   messages are in flight at once.
//! - **With a Python peer: Python's at-most-once.** Python has no acks: a message counts as
//!   delivered once written to the connection.
//! - **Identity**: ours is 1 to 50 characters; a remote identity that is empty, not UTF-8
//!   or over 200 bytes closes the connection. A second connection claiming an identity
//!   that is connected is refused unless
//!   [`MessagingBuilder::replace_duplicate_identities`] is set. Keepalive is on by default
//!   (ping after 2 s idle, close after 3 s more), so a dead connection does not lock a
//!   reconnecting peer out for long.
//!
//! # Layers
//!
//! [`link`] moves packets (TCP, the in-memory transport), [`proto`] is the sans-IO protocol
//! core, [`messaging`] drives both with queues from a [`storage`] backend. The link and
//! packet layers are usable on their own for a protocol of a user's own.
#![forbid(unsafe_code)]

#[cfg(feature = "blocking")]
pub mod blocking;
mod error;
pub mod messaging;
pub mod proto;
pub mod router;

pub use error::Error;
pub use messaging::{
    DropReason, Event, Events, FLAG_PERSISTENT, Message, Messaging, MessagingBuilder, QueueLimits,
    QueuePolicy, ReceivedMessage, Stats, uuid_hex,
};
pub use snakemq_link as link;
pub use snakemq_storage as storage;
