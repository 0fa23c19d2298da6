//! snakemq: a brokerless peer-to-peer message queue, wire-compatible with Python snakeMQ.
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
