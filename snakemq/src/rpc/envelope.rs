//! The envelope every RPC message carries after [`PREFIX`] (documented in
//! `docs/PROTOCOL.md`).

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message as _;

/// The bytes every RPC message's data starts with: `SRPC` and envelope version 1. Python
/// snakeMQ's own RPC uses `rpcreq`/`rpcrep` with pickles; ours never overlaps with it.
pub const PREFIX: &[u8] = b"SRPC\x01";

/// What an envelope is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// A call that wants a reply.
    Call,
    /// A successful reply; the body is the method's result message.
    ReplyOk,
    /// A failed call; `error` says why (7: the body is the method's error message).
    ReplyErr,
    /// A one-way call; no reply.
    Signal,
}

impl Kind {
    /// The wire code.
    pub fn code(self) -> u32 {
        match self {
            Kind::Call => 1,
            Kind::ReplyOk => 2,
            Kind::ReplyErr => 3,
            Kind::Signal => 4,
        }
    }

    /// The kind for a wire code.
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            1 => Kind::Call,
            2 => Kind::ReplyOk,
            3 => Kind::ReplyErr,
            4 => Kind::Signal,
            _ => return None,
        })
    }
}

/// The `error` code of a reply carrying the method's own error type.
pub const APPLICATION_ERROR: u32 = 7;

/// One RPC message (protobuf, fields by tag).
#[derive(Clone, PartialEq, prost::Message)]
#[non_exhaustive]
pub struct Envelope {
    /// [`Kind`] code.
    #[prost(uint32, tag = "1")]
    pub kind: u32,
    /// Request id, chosen by the caller; a reply carries the call's id.
    #[prost(fixed64, tag = "2")]
    pub id: u64,
    /// The object name (calls and signals).
    #[prost(string, tag = "3")]
    pub object: String,
    /// The method name (calls and signals).
    #[prost(string, tag = "4")]
    pub method: String,
    /// Arguments (calls, signals), result (reply-ok) or application error (reply-err 7).
    #[prost(bytes = "bytes", tag = "5")]
    pub body: Bytes,
    /// Why a reply-err failed (see [`super::RemoteErrorKind::code`] and
    /// [`APPLICATION_ERROR`]).
    #[prost(uint32, tag = "6")]
    pub error: u32,
    /// Details of a reply-err as text (empty when the server does not send them).
    #[prost(string, tag = "7")]
    pub detail: String,
    /// Milliseconds the caller will wait (calls; 0: no deadline given).
    #[prost(uint32, tag = "8")]
    pub deadline_ms: u32,
}

impl Envelope {
    /// An envelope of `kind` with the given id and everything else empty.
    pub fn new(kind: Kind, id: u64) -> Self {
        Envelope {
            kind: kind.code(),
            id,
            ..Envelope::default()
        }
    }

    /// Sets object and method.
    pub fn target(mut self, object: &str, method: &str) -> Self {
        object.clone_into(&mut self.object);
        method.clone_into(&mut self.method);
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: Bytes) -> Self {
        self.body = body;
        self
    }

    /// The kind, if known.
    pub fn kind(&self) -> Option<Kind> {
        Kind::from_code(self.kind)
    }

    /// Message data: [`PREFIX`] followed by the encoded envelope.
    pub fn to_data(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(PREFIX.len() + self.encoded_len());
        buf.put_slice(PREFIX);
        // Encoding into a buffer sized by encoded_len cannot run out of room.
        self.encode_raw(&mut buf);
        buf.freeze()
    }

    /// Decodes message data; `None` when it lacks the prefix or is not an envelope.
    pub fn from_data(data: &Bytes) -> Option<Self> {
        if !data.starts_with(PREFIX) {
            return None;
        }
        Envelope::decode(data.slice(PREFIX.len()..)).ok()
    }
}
