//! Messages to send and messages received.

use std::time::Duration;

use bytes::Bytes;

use crate::proto::{TTL_INFINITE, Uuid};

/// Flag bit 0: the message is persistent (it means something to the sender only).
pub const FLAG_PERSISTENT: u32 = 0x1;

/// A message to send.
///
/// By default a message never expires (Python snakeMQ's default of `ttl = 0` silently
/// loses messages to peers that are not connected; ours waits). `ttl(Duration::ZERO)`
/// restores Python's meaning: delivered only if the peer is connected now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub(crate) data: Bytes,
    pub(crate) ttl: Option<Duration>,
    pub(crate) flags: u32,
    pub(crate) uuid: Option<Uuid>,
}

impl Message {
    /// A message carrying `data`, no expiry, flags 0, a random id.
    pub fn new(data: impl Into<Bytes>) -> Self {
        Message {
            data: data.into(),
            ttl: None,
            flags: 0,
            uuid: None,
        }
    }

    /// Expires `ttl` after it is queued (wall clock, counted also while the process is
    /// down). Zero means "only if the peer is connected now".
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Never expires (the default).
    pub fn no_expiry(mut self) -> Self {
        self.ttl = None;
        self
    }

    /// Sets the flags (passed through to the peer unchanged).
    pub fn flags(mut self, flags: u32) -> Self {
        self.flags = flags;
        self
    }

    /// Sets [`FLAG_PERSISTENT`].
    pub fn persistent(mut self) -> Self {
        self.flags |= FLAG_PERSISTENT;
        self
    }

    /// Uses the given id instead of a random one.
    pub fn uuid(mut self, uuid: Uuid) -> Self {
        self.uuid = Some(uuid);
        self
    }

    /// The payload.
    pub fn data(&self) -> &Bytes {
        &self.data
    }
}

impl From<&'static str> for Message {
    fn from(data: &'static str) -> Self {
        Message::new(Bytes::from_static(data.as_bytes()))
    }
}

impl From<Vec<u8>> for Message {
    fn from(data: Vec<u8>) -> Self {
        Message::new(data)
    }
}

impl From<Bytes> for Message {
    fn from(data: Bytes) -> Self {
        Message::new(data)
    }
}

/// A message received from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The message id.
    pub uuid: Uuid,
    /// The remaining time to live the sender announced, in whole seconds; `None` for no
    /// expiry.
    pub ttl: Option<u32>,
    /// The flags.
    pub flags: u32,
    /// The payload.
    pub data: Bytes,
}

impl ReceivedMessage {
    /// The payload.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    pub(crate) fn from_wire(frame: crate::proto::MessageFrame) -> Self {
        ReceivedMessage {
            uuid: frame.uuid,
            ttl: (frame.ttl != TTL_INFINITE).then_some(frame.ttl),
            flags: frame.flags,
            data: frame.data,
        }
    }
}

/// Formats an id as 32 lowercase hex digits.
pub fn uuid_hex(uuid: &Uuid) -> String {
    use std::fmt::Write;
    uuid.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
