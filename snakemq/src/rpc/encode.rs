//! Encoding of outgoing envelopes from borrowed parts ([`encode_parts`]), into buffers
//! that clones share without an allocation.

use bytes::{BufMut, Bytes, BytesMut};

use super::envelope::{Kind, PREFIX};

/// The body field of an envelope being encoded.
pub(crate) trait Body {
    /// Its length in bytes.
    fn len(&self) -> usize;
    /// Writes it.
    fn put(&self, buf: &mut impl BufMut);
}

impl Body for [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn put(&self, buf: &mut impl BufMut) {
        buf.put_slice(self);
    }
}

/// A message encoded as the body in place (a generated client's arguments): the same
/// bytes as its `encode_to_vec`, without that buffer and its copy into the envelope.
pub(crate) struct Encoded<'a, M>(pub(crate) &'a M);

impl<M: prost::Message> Body for Encoded<'_, M> {
    fn len(&self) -> usize {
        self.0.encoded_len()
    }

    fn put(&self, buf: &mut impl BufMut) {
        self.0.encode_raw(buf);
    }
}

/// The data of a small envelope, stored inline: [`Bytes::from_owner`] puts it and the
/// reference count in one allocation.
///
/// Data made from a `Vec` (`BytesMut::freeze`) costs a second allocation at its first
/// clone (bytes moves the buffer's ownership to a shared header then), and both
/// envelopes of a call are cloned: a request is kept for a re-send after a reconnect
/// while messaging queues it, a reply is kept by the reply cache while it goes out. Four
/// allocations per call became two. Sizes come in a few classes so that a cached reply
/// takes at most about twice its size.
struct Inline<const N: usize> {
    len: usize,
    buf: [u8; N],
}

impl<const N: usize> AsRef<[u8]> for Inline<N> {
    fn as_ref(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

/// `write`'s bytes (at most `N`) as inline data.
fn inline<const N: usize>(write: impl FnOnce(&mut &mut [u8])) -> Bytes {
    let mut owner = Inline {
        len: 0,
        buf: [0; N],
    };
    let mut rest: &mut [u8] = &mut owner.buf;
    write(&mut rest);
    owner.len = N - rest.len();
    Bytes::from_owner(owner)
}

/// Encodes an envelope without a detail field from borrowed parts, field by field in tag
/// order with defaults left out: what prost's derive does.
pub(crate) fn encode_parts<B: Body + ?Sized>(
    kind: Kind,
    id: u64,
    texts: [&[u8]; 2],
    body: &B,
    error: u32,
    deadline_ms: u32,
) -> Bytes {
    use prost::encoding::{encoded_len_varint, key_len};
    let delimited = |tag: u32, len: usize| {
        if len == 0 {
            0
        } else {
            key_len(tag) + encoded_len_varint(len as u64) + len
        }
    };
    let varint = |tag: u32, value: u32| {
        if value == 0 {
            0
        } else {
            key_len(tag) + encoded_len_varint(u64::from(value))
        }
    };
    let kind = kind.code();
    let body_len = body.len();
    let [object, method] = texts;
    let len = PREFIX.len()
        + varint(1, kind)
        + if id != 0 { key_len(2) + 8 } else { 0 }
        + delimited(3, object.len())
        + delimited(4, method.len())
        + delimited(5, body_len)
        + varint(6, error)
        + varint(8, deadline_ms);
    let fields = Fields {
        kind,
        id,
        texts,
        body,
        body_len,
        error,
        deadline_ms,
    };
    match len {
        0..=64 => inline::<64>(|buf| fields.write(buf)),
        65..=128 => inline::<128>(|buf| fields.write(buf)),
        129..=256 => inline::<256>(|buf| fields.write(buf)),
        257..=512 => inline::<512>(|buf| fields.write(buf)),
        _ => {
            let mut buf = BytesMut::with_capacity(len);
            fields.write(&mut buf);
            buf.freeze()
        }
    }
}

/// The fields of [`encode_parts`].
struct Fields<'a, B: ?Sized> {
    kind: u32,
    id: u64,
    texts: [&'a [u8]; 2],
    body: &'a B,
    body_len: usize,
    error: u32,
    deadline_ms: u32,
}

impl<B: Body + ?Sized> Fields<'_, B> {
    fn write<W: BufMut>(&self, buf: &mut W) {
        use prost::encoding::{WireType, encode_key, encode_varint};
        let put_varint = |buf: &mut W, tag: u32, value: u32| {
            if value != 0 {
                encode_key(tag, WireType::Varint, buf);
                encode_varint(u64::from(value), buf);
            }
        };
        let put_delimited = |buf: &mut W, tag: u32, len: usize| {
            encode_key(tag, WireType::LengthDelimited, buf);
            encode_varint(len as u64, buf);
        };
        buf.put_slice(PREFIX);
        put_varint(buf, 1, self.kind);
        if self.id != 0 {
            encode_key(2, WireType::SixtyFourBit, buf);
            buf.put_u64_le(self.id);
        }
        for (tag, text) in [3, 4].into_iter().zip(self.texts) {
            if !text.is_empty() {
                put_delimited(buf, tag, text.len());
                buf.put_slice(text);
            }
        }
        if self.body_len != 0 {
            put_delimited(buf, 5, self.body_len);
            self.body.put(buf);
        }
        put_varint(buf, 6, self.error);
        put_varint(buf, 8, self.deadline_ms);
    }
}
