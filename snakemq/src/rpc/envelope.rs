//! The envelope every RPC message carries after [`PREFIX`] (documented in
//! `docs/PROTOCOL.md`).

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message as _;

use super::encode::{Encoded, encode_parts};

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

    /// Message data of a call or signal ([`PREFIX`] and the envelope of `kind`, `id`,
    /// `object`, `method`, `body` and `deadline_ms`, everything else empty), encoded from
    /// borrowed parts: the same bytes as [`Envelope::to_data`] of that envelope, without
    /// the two `String`s building one costs per call.
    pub(crate) fn request_data(
        kind: Kind,
        id: u64,
        object: &str,
        method: &str,
        body: &[u8],
        deadline_ms: u32,
    ) -> Bytes {
        let texts = [object.as_bytes(), method.as_bytes()];
        encode_parts(kind, id, texts, body, 0, deadline_ms)
    }

    /// [`Envelope::request_data`] with the body encoded from `args` straight into the
    /// envelope: the same bytes as encoding `args` first, without the buffer and the copy
    /// of that first encoding.
    pub(crate) fn request_data_with<M: prost::Message>(
        kind: Kind,
        id: u64,
        object: &str,
        method: &str,
        args: &M,
        deadline_ms: u32,
    ) -> Bytes {
        let texts = [object.as_bytes(), method.as_bytes()];
        encode_parts(kind, id, texts, &Encoded(args), 0, deadline_ms)
    }

    /// Message data of a reply of `kind` with `body` and `error` (no detail): the same
    /// bytes as [`Envelope::to_data`] of that envelope, without building one (prost's
    /// length pass over every field, then its encoding pass).
    pub(crate) fn reply_data(kind: Kind, id: u64, error: u32, body: &[u8]) -> Bytes {
        encode_parts(kind, id, [b"", b""], body, error, 0)
    }

    /// Decodes message data; `None` when it lacks the prefix or is not an envelope.
    pub fn from_data(data: &Bytes) -> Option<Self> {
        if !data.starts_with(PREFIX) {
            return None;
        }
        Envelope::decode(data.slice(PREFIX.len()..)).ok()
    }
}

/// The wire shape of [`Envelope`] with its text fields as bytes: the reference decoding
/// that [`Received::from_data`] is tested against.
#[cfg(test)]
#[derive(Clone, PartialEq, prost::Message)]
struct RawEnvelope {
    #[prost(uint32, tag = "1")]
    kind: u32,
    #[prost(fixed64, tag = "2")]
    id: u64,
    #[prost(bytes = "bytes", tag = "3")]
    object: Bytes,
    #[prost(bytes = "bytes", tag = "4")]
    method: Bytes,
    #[prost(bytes = "bytes", tag = "5")]
    body: Bytes,
    #[prost(uint32, tag = "6")]
    error: u32,
    #[prost(bytes = "bytes", tag = "7")]
    detail: Bytes,
    #[prost(uint32, tag = "8")]
    deadline_ms: u32,
}

/// A received envelope whose fields stay in the message data (no allocation per field):
/// what [`Envelope::from_data`] accepts, it accepts, and the other way round.
///
/// Decoded by hand into offsets of the data: prost's derived decoding into `Bytes`
/// fields made a reference-counted slice per field (two atomic operations each) and
/// cost about 800 instructions per envelope, two envelopes per RPC call.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    data: Bytes,
    kind: u32,
    id: u64,
    error: u32,
    deadline_ms: u32,
    object: Range<usize>,
    method: Range<usize>,
    body: Range<usize>,
    detail: Range<usize>,
}

impl Received {
    /// Decodes `data` (prefix included); `None` when it is not a well-formed envelope or a
    /// text field is not UTF-8. Field semantics are protobuf's, as prost applies them: the
    /// last occurrence of a field wins, unknown fields are skipped, a known field with
    /// another wire type is an error.
    pub(crate) fn from_data(data: &Bytes) -> Option<Self> {
        use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
        let mut buf: &[u8] = data.strip_prefix(PREFIX)?;
        let mut received = Received {
            data: data.clone(),
            kind: 0,
            id: 0,
            error: 0,
            deadline_ms: 0,
            object: 0..0,
            method: 0..0,
            body: 0..0,
            detail: 0..0,
        };
        while !buf.is_empty() {
            let (tag, wire_type) = decode_key(&mut buf).ok()?;
            let expected = match tag {
                1 | 6 | 8 => WireType::Varint,
                2 => WireType::SixtyFourBit,
                3 | 4 | 5 | 7 => WireType::LengthDelimited,
                _ => {
                    skip_field(wire_type, tag, &mut buf, DecodeContext::default()).ok()?;
                    continue;
                }
            };
            if wire_type != expected {
                return None;
            }
            match wire_type {
                WireType::Varint => {
                    // (prost truncates a uint32 varint the same way.)
                    let value = decode_varint(&mut buf).ok()? as u32;
                    match tag {
                        1 => received.kind = value,
                        6 => received.error = value,
                        _ => received.deadline_ms = value,
                    }
                }
                WireType::SixtyFourBit => {
                    let (id, rest) = buf.split_first_chunk::<8>()?;
                    received.id = u64::from_le_bytes(*id);
                    buf = rest;
                }
                _ => {
                    let len = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
                    // (`buf` is a suffix of `data`: where it starts is an offset into it.)
                    let start = data.len() - buf.len();
                    buf = buf.get(len..)?;
                    let range = start..start + len;
                    match tag {
                        3 => received.object = range,
                        4 => received.method = range,
                        5 => received.body = range,
                        _ => received.detail = range,
                    }
                }
            }
        }
        // (Empty ones, most of them, need no look.)
        for text in [&received.object, &received.method, &received.detail] {
            if !text.is_empty() {
                std::str::from_utf8(data.get(text.clone())?).ok()?;
            }
        }
        Some(received)
    }

    fn text(&self, range: &Range<usize>) -> &str {
        if range.is_empty() {
            return "";
        }
        // (Checked to be UTF-8 in `from_data`.)
        self.data
            .get(range.clone())
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .unwrap_or_default()
    }

    /// The kind, if known.
    pub(crate) fn kind(&self) -> Option<Kind> {
        Kind::from_code(self.kind)
    }

    /// The kind's code as received.
    pub(crate) fn kind_code(&self) -> u32 {
        self.kind
    }

    /// The request id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The call's deadline in ms (0: none).
    pub(crate) fn deadline_ms(&self) -> u32 {
        self.deadline_ms
    }

    /// The object called.
    pub(crate) fn object(&self) -> &str {
        self.text(&self.object)
    }

    /// The method called.
    pub(crate) fn method(&self) -> &str {
        self.text(&self.method)
    }

    /// The body: a slice of the message data.
    pub(crate) fn body(&self) -> Bytes {
        if self.body.is_empty() {
            Bytes::new()
        } else {
            self.data.slice(self.body.clone())
        }
    }

    /// A reply's error code (0 when none).
    pub(crate) fn error(&self) -> u32 {
        self.error
    }

    /// A reply's details of a failure (empty when none were sent).
    pub(crate) fn detail(&self) -> &str {
        self.text(&self.detail)
    }

    /// An owned [`Envelope`] (text fields copied): what the tests compare with prost's
    /// decoding.
    #[cfg(test)]
    pub(crate) fn into_envelope(self) -> Envelope {
        Envelope {
            kind: self.kind,
            id: self.id,
            object: self.object().to_owned(),
            method: self.method().to_owned(),
            detail: self.text(&self.detail).to_owned(),
            body: self.body(),
            error: self.error,
            deadline_ms: self.deadline_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_data_matches_the_derived_encoding() {
        for kind in [Kind::ReplyOk, Kind::ReplyErr] {
            for id in [0, 1, u64::MAX] {
                for error in [0, 7, 300] {
                    for body in [&b""[..], b"\x08\x01", &[0x5a; 300]] {
                        let mut envelope =
                            Envelope::new(kind, id).with_body(Bytes::copy_from_slice(body));
                        envelope.error = error;
                        let direct = Envelope::reply_data(kind, id, error, body);
                        assert_eq!(direct, envelope.to_data());
                    }
                }
            }
        }
    }

    #[test]
    fn request_data_matches_the_derived_encoding() {
        let bodies: [&[u8]; 3] = [b"", b"\x08\x01", &[0x5a; 300]];
        for kind in [Kind::Call, Kind::Signal] {
            for id in [0, 1, 300, u64::MAX] {
                for (object, method) in [("", ""), ("echo", "echo"), ("o", &*"m".repeat(200))] {
                    for body in bodies {
                        for deadline_ms in [0, 1, 30_000, u32::MAX] {
                            let mut envelope = Envelope::new(kind, id)
                                .target(object, method)
                                .with_body(Bytes::copy_from_slice(body));
                            envelope.deadline_ms = deadline_ms;
                            let direct =
                                Envelope::request_data(kind, id, object, method, body, deadline_ms);
                            assert_eq!(direct, envelope.to_data());
                            assert_eq!(Envelope::from_data(&direct), Some(envelope.clone()));
                            let received =
                                Received::from_data(&direct).map(Received::into_envelope);
                            assert_eq!(received, Some(envelope));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod received_tests {
    use super::*;

    /// Accepted and refused alike by both decoders: text fields that are not UTF-8, a
    /// wrong wire type, a truncated field, unknown fields, repeated fields.
    #[test]
    fn received_agrees_with_the_derived_decoder() {
        let full = {
            let mut e = Envelope::new(Kind::ReplyErr, 9).target("obj", "meth");
            e.body = Bytes::from_static(b"body");
            e.error = 3;
            e.detail = "why".into();
            e.deadline_ms = 5;
            e.to_data()
        };
        let mut cases: Vec<Vec<u8>> = vec![
            full.to_vec(),
            [PREFIX, b"\x1a\x02\xff\xfe"].concat(),
            [PREFIX, b"\x22\x01\x80"].concat(),
            [PREFIX, b"\x3a\x02\xc3\x28"].concat(),
            [PREFIX, b"\x1d\x00\x00\x00\x00"].concat(),
            [PREFIX, b"\x08"].concat(),
            [PREFIX, b"\x2a\x05ab"].concat(),
            [PREFIX, b"\x08\x01\x78\x05\x08\x02"].concat(),
            [PREFIX, b"\x1a\x01a\x1a\x01b"].concat(),
            [PREFIX, b""].concat(),
            b"SRPC".to_vec(),
        ];
        for cut in 0..full.len() {
            cases.push(full.get(..cut).unwrap_or_default().to_vec());
        }
        for case in cases {
            let data = Bytes::from(case);
            let derived = Envelope::from_data(&data);
            let received = Received::from_data(&data).map(Received::into_envelope);
            assert_eq!(received, derived, "{data:?}");
        }
    }

    /// The hand-written decoder against prost's derived one on every single-byte change
    /// of a full envelope (with an unknown field of each wire type appended): the same
    /// verdict and the same fields.
    #[test]
    fn received_agrees_with_prost_on_mutations() {
        let mut full = {
            let mut e = Envelope::new(Kind::Call, 0x0102_0304_0506_0708).target("o", "mm");
            e.body = Bytes::from_static(b"\x08\x96\x01");
            e.error = 300;
            e.detail = "d".into();
            e.deadline_ms = 30_000;
            e.to_data().to_vec()
        };
        // Unknown fields 9 (varint), 10 (64-bit), 11 (bytes), 12 (32-bit).
        full.extend_from_slice(
            b"\x48\x01\x51\x00\x00\x00\x00\x00\x00\x00\x00\x5a\x01x\x65\x00\x00\x00\x00",
        );
        let values = [
            0x00, 0x01, 0x02, 0x05, 0x07, 0x08, 0x0a, 0x7f, 0x80, 0xc3, 0xff,
        ];
        let mut checked = 0;
        for at in PREFIX.len()..full.len() {
            for value in values {
                let mut case = full.clone();
                if let Some(byte) = case.get_mut(at) {
                    *byte = value;
                }
                let data = Bytes::from(case);
                let ours = Received::from_data(&data).map(|r| {
                    let fields = (r.kind, r.id, r.error, r.deadline_ms);
                    let texts = (r.object().to_owned(), r.method().to_owned());
                    (fields, texts, r.body(), r.text(&r.detail).to_owned())
                });
                let theirs = data
                    .get(PREFIX.len()..)
                    .and_then(|rest| RawEnvelope::decode(rest).ok())
                    .filter(|raw| {
                        [&raw.object, &raw.method, &raw.detail]
                            .iter()
                            .all(|text| std::str::from_utf8(text).is_ok())
                    })
                    .map(|raw| {
                        let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
                        let fields = (raw.kind, raw.id, raw.error, raw.deadline_ms);
                        let texts = (text(&raw.object), text(&raw.method));
                        (fields, texts, raw.body.clone(), text(&raw.detail))
                    });
                assert_eq!(ours, theirs, "byte {at} = {value:#x}: {data:?}");
                checked += 1;
            }
        }
        assert!(checked > 100);
    }
}
