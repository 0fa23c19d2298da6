//! Encoding and decoding of every frame in the wire protocol (WIRE.md).
//!
//! A frame is the body of one packet: `type:u8` then the payload. Decoding never
//! allocates more than the packet it is given (which the link already bounded).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::ProtoError;

/// The protocol version this implementation speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// A message id on the wire.
pub type Uuid = [u8; 16];

/// Wire value of "no expiry".
pub const TTL_INFINITE: u32 = 0xFFFF_FFFF;

/// Size of the MESSAGE header: uuid, ttl, flags.
pub const MESSAGE_HEADER_LEN: usize = 16 + 4 + 4;

/// Whether a MESSAGE frame with `data_len` bytes of data fits a packet of at most
/// `max_packet_size` bytes (the frame's kind byte, its header, the data).
pub fn message_fits(data_len: usize, max_packet_size: usize) -> bool {
    1 + MESSAGE_HEADER_LEN + data_len <= max_packet_size
}

/// CAPABILITIES bit 0: the sender acknowledges received messages with ACK frames.
pub const CAP_ACKS: u32 = 0x1;

/// CAPABILITIES bit 1: the sender understands UNACKED_MESSAGE frames (and never
/// acknowledges them). Only a peer that announced it is sent one.
pub const CAP_UNACKED: u32 = 0x2;

/// Frame type numbers.
pub mod kind {
    /// PROTOCOL_VERSION
    pub const PROTOCOL_VERSION: u8 = 0;
    /// INCOMPATIBLE_PROTOCOL
    pub const INCOMPATIBLE_PROTOCOL: u8 = 1;
    /// IDENTIFICATION
    pub const IDENTIFICATION: u8 = 2;
    /// MESSAGE
    pub const MESSAGE: u8 = 3;
    /// PING
    pub const PING: u8 = 4;
    /// PONG
    pub const PONG: u8 = 5;
    /// CAPABILITIES (Rust extension)
    pub const CAPABILITIES: u8 = 6;
    /// ACK (Rust extension)
    pub const ACK: u8 = 7;
    /// UNACKED_MESSAGE (Rust extension): a MESSAGE the receiver must not acknowledge
    pub const UNACKED_MESSAGE: u8 = 8;
}

/// A MESSAGE frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFrame {
    /// The message id.
    pub uuid: Uuid,
    /// Remaining lifetime in whole seconds; [`TTL_INFINITE`] for none.
    pub ttl: u32,
    /// Flags, passed through unchanged.
    pub flags: u32,
    /// The payload.
    pub data: Bytes,
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// The sender's protocol version.
    ProtocolVersion(u32),
    /// The sender refuses our version.
    IncompatibleProtocol,
    /// The sender's identity, raw bytes as received (validated by the connection).
    Identification(Bytes),
    /// An application message.
    Message(MessageFrame),
    /// Keepalive request.
    Ping,
    /// Keepalive answer.
    Pong,
    /// Capability bits (Rust peers only). Bytes after the known fields are ignored.
    Capabilities(u32),
    /// Acknowledged message ids (Rust peers only), at least one.
    Ack(Vec<Uuid>),
    /// A message of which the sender keeps no copy, so no acknowledgement is wanted
    /// (Rust peers that announced [`CAP_UNACKED`] only). Same layout as MESSAGE.
    UnackedMessage(MessageFrame),
    /// A frame type this implementation does not know; ignored (and counted).
    Unknown {
        /// The type number.
        kind: u8,
        /// Payload length.
        len: usize,
    },
}

impl Frame {
    /// Decodes one packet body.
    pub fn decode(mut body: Bytes) -> Result<Frame, ProtoError> {
        if body.is_empty() {
            return Err(ProtoError::EmptyPacket);
        }
        let kind = body.get_u8();
        let frame = match kind {
            kind::PROTOCOL_VERSION => {
                if body.len() != 4 {
                    return Err(ProtoError::Malformed(
                        "PROTOCOL_VERSION payload is not 4 bytes",
                    ));
                }
                Frame::ProtocolVersion(body.get_u32())
            }
            kind::INCOMPATIBLE_PROTOCOL => Frame::IncompatibleProtocol,
            kind::IDENTIFICATION => Frame::Identification(body),
            kind::MESSAGE => Frame::Message(decode_message(body)?),
            kind::UNACKED_MESSAGE => Frame::UnackedMessage(decode_message(body)?),
            kind::PING => Frame::Ping,
            kind::PONG => Frame::Pong,
            kind::CAPABILITIES => {
                if body.len() < 4 {
                    return Err(ProtoError::Malformed("CAPABILITIES shorter than 4 bytes"));
                }
                Frame::Capabilities(body.get_u32())
            }
            kind::ACK => {
                let mut ids = Vec::with_capacity(body.len() / 16);
                decode_ack_ids(&body, &mut ids)?;
                Frame::Ack(ids)
            }
            other => Frame::Unknown {
                kind: other,
                len: body.len(),
            },
        };
        Ok(frame)
    }

    /// Appends this frame as a whole packet (length prefix included) to `out`.
    ///
    /// `Unknown` frames encode as their type byte followed by `len` zero bytes (useful for
    /// tests only).
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Frame::ProtocolVersion(version) => {
                put_header(out, kind::PROTOCOL_VERSION, 4);
                out.put_u32(*version);
            }
            Frame::IncompatibleProtocol => put_header(out, kind::INCOMPATIBLE_PROTOCOL, 0),
            Frame::Identification(ident) => {
                put_header(out, kind::IDENTIFICATION, ident.len());
                out.put_slice(ident);
            }
            Frame::Message(message) => encode_message_of_kind(kind::MESSAGE, message, out),
            Frame::UnackedMessage(message) => {
                encode_message_of_kind(kind::UNACKED_MESSAGE, message, out);
            }
            Frame::Ping => put_header(out, kind::PING, 0),
            Frame::Pong => put_header(out, kind::PONG, 0),
            Frame::Capabilities(bits) => {
                put_header(out, kind::CAPABILITIES, 4);
                out.put_u32(*bits);
            }
            Frame::Ack(ids) => encode_ack(ids, out),
            Frame::Unknown { kind, len } => {
                put_header(out, *kind, *len);
                out.put_bytes(0, *len);
            }
        }
    }
}

/// The payload of a MESSAGE or UNACKED_MESSAGE frame (after its kind byte).
fn decode_message(mut body: Bytes) -> Result<MessageFrame, ProtoError> {
    if body.len() < MESSAGE_HEADER_LEN {
        return Err(ProtoError::Malformed(
            "MESSAGE shorter than its 24-byte header",
        ));
    }
    let mut uuid = [0u8; 16];
    body.copy_to_slice(&mut uuid);
    let ttl = body.get_u32();
    let flags = body.get_u32();
    Ok(MessageFrame {
        uuid,
        ttl,
        flags,
        data: body,
    })
}

/// Appends the ids of an ACK frame's payload (after its kind byte) to `ids`: a non-empty
/// list of 16-byte ids. Split out so that a connection can decode into a reused list.
pub(crate) fn decode_ack_ids(payload: &[u8], ids: &mut Vec<Uuid>) -> Result<(), ProtoError> {
    if payload.is_empty() || payload.len() % 16 != 0 {
        return Err(ProtoError::Malformed(
            "ACK is not a non-empty list of 16-byte ids",
        ));
    }
    ids.extend(
        payload
            .chunks_exact(16)
            .filter_map(|id| <[u8; 16]>::try_from(id).ok()),
    );
    Ok(())
}

/// Appends a MESSAGE packet. Split out so the hot path does not build a [`Frame`].
pub fn encode_message(message: &MessageFrame, out: &mut BytesMut) {
    encode_message_of_kind(kind::MESSAGE, message, out);
}

/// A MESSAGE or UNACKED_MESSAGE packet: header and data.
fn encode_message_of_kind(kind: u8, message: &MessageFrame, out: &mut BytesMut) {
    encode_message_header_of_kind(
        kind,
        &message.uuid,
        message.ttl,
        message.flags,
        message.data.len(),
        out,
    );
    out.put_slice(&message.data);
}

/// Appends the prefix and header of a MESSAGE packet whose data the caller writes (or
/// queues separately, for large payloads).
pub fn encode_message_header(
    uuid: &Uuid,
    ttl: u32,
    flags: u32,
    data_len: usize,
    out: &mut BytesMut,
) {
    encode_message_header_of_kind(kind::MESSAGE, uuid, ttl, flags, data_len, out);
}

/// Appends the prefix and header of a MESSAGE or (with `kind::UNACKED_MESSAGE`) an
/// UNACKED_MESSAGE packet whose data the caller writes.
pub fn encode_message_header_of_kind(
    kind: u8,
    uuid: &Uuid,
    ttl: u32,
    flags: u32,
    data_len: usize,
    out: &mut BytesMut,
) {
    put_header(out, kind, MESSAGE_HEADER_LEN + data_len);
    out.put_slice(uuid);
    out.put_u32(ttl);
    out.put_u32(flags);
}

/// Appends one ACK packet carrying `ids` (nothing when empty).
pub fn encode_ack(ids: &[Uuid], out: &mut BytesMut) {
    if ids.is_empty() {
        return;
    }
    put_header(out, kind::ACK, ids.len() * 16);
    for id in ids {
        out.put_slice(id);
    }
}

/// Length prefix (type byte included) and type byte.
fn put_header(out: &mut BytesMut, kind: u8, payload_len: usize) {
    // Packet sizes are bounded by the link's maximum (far below 4 GiB) before we get here;
    // saturating keeps a pathological caller from wrapping around silently.
    let size = u32::try_from(payload_len + 1).unwrap_or(u32::MAX);
    out.reserve(5 + payload_len);
    out.put_u32(size);
    out.put_u8(kind);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn body(frame: &Frame) -> Bytes {
        let mut out = BytesMut::new();
        frame.encode(&mut out);
        let mut packet = out.freeze();
        let size = packet.get_u32() as usize;
        assert_eq!(size, packet.len());
        packet
    }

    #[test]
    fn wire_examples_from_the_spec() {
        let mut out = BytesMut::new();
        Frame::ProtocolVersion(1).encode(&mut out);
        assert_eq!(&out[..], b"\x00\x00\x00\x05\x00\x00\x00\x00\x01");
        out.clear();
        Frame::Identification(Bytes::from_static(b"bob")).encode(&mut out);
        assert_eq!(&out[..], b"\x00\x00\x00\x04\x02bob");
        out.clear();
        Frame::Ping.encode(&mut out);
        assert_eq!(&out[..], b"\x00\x00\x00\x01\x04");
        out.clear();
        Frame::Message(MessageFrame {
            uuid: [0x55; 16],
            ttl: TTL_INFINITE,
            flags: 5,
            data: Bytes::from_static(b"ack:payload-1"),
        })
        .encode(&mut out);
        let mut want = vec![0, 0, 0, 0x26, 3];
        want.extend([0x55; 16]);
        want.extend([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 5]);
        want.extend(b"ack:payload-1");
        assert_eq!(&out[..], &want[..]);
    }

    #[test]
    fn malformed_frames_are_errors() {
        for bad in [
            &b""[..],
            b"\x00\x00\x00\x01",
            b"\x00\x00\x00\x00\x01\x02",
            b"\x03short",
            b"\x06\x00",
            b"\x07",
            b"\x07\x01\x02",
            b"\x08short",
        ] {
            assert!(
                Frame::decode(Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn capabilities_ignore_trailing_fields() {
        let frame = Frame::decode(Bytes::from_static(b"\x06\x00\x00\x00\x03extra")).ok();
        assert_eq!(frame, Some(Frame::Capabilities(3)));
    }

    fn any_frame() -> impl Strategy<Value = Frame> {
        let uuid = proptest::array::uniform16(any::<u8>());
        prop_oneof![
            any::<u32>().prop_map(Frame::ProtocolVersion),
            Just(Frame::IncompatibleProtocol),
            proptest::collection::vec(any::<u8>(), 0..64)
                .prop_map(|v| Frame::Identification(Bytes::from(v))),
            (
                uuid,
                any::<u32>(),
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 0..256),
                any::<bool>(),
            )
                .prop_map(|(uuid, ttl, flags, data, unacked)| {
                    let message = MessageFrame {
                        uuid,
                        ttl,
                        flags,
                        data: Bytes::from(data),
                    };
                    if unacked {
                        Frame::UnackedMessage(message)
                    } else {
                        Frame::Message(message)
                    }
                }),
            Just(Frame::Ping),
            Just(Frame::Pong),
            any::<u32>().prop_map(Frame::Capabilities),
            proptest::collection::vec(uuid, 1..20).prop_map(Frame::Ack),
            (9u8..=255, 0usize..32).prop_map(|(kind, len)| Frame::Unknown { kind, len }),
        ]
    }

    proptest! {
        #[test]
        fn every_frame_round_trips(frame in any_frame()) {
            let decoded = Frame::decode(body(&frame)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decoded, frame);
        }

        #[test]
        fn decoding_never_panics(data in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = Frame::decode(Bytes::from(data));
        }

        #[test]
        fn stream_chunking_does_not_change_frames(
            frames in proptest::collection::vec(any_frame(), 0..16),
            chunks in proptest::collection::vec(1usize..50, 1..8),
        ) {
            let mut stream = BytesMut::new();
            for frame in &frames {
                frame.encode(&mut stream);
            }
            let mut decoder = snakemq_link::PacketDecoder::new(1 << 20);
            let mut decoded = Vec::new();
            let mut rest = &stream[..];
            let mut sizes = chunks.iter().cycle();
            while !rest.is_empty() {
                let n = sizes.next().copied().unwrap_or(1).min(rest.len());
                let (head, tail) = rest.split_at(n);
                decoder.extend_from_slice(head);
                rest = tail;
                while let Some(packet) = decoder.next_packet().map_err(|e| TestCaseError::fail(e.to_string()))? {
                    decoded.push(Frame::decode(packet).map_err(|e| TestCaseError::fail(e.to_string()))?);
                }
            }
            prop_assert_eq!(decoded, frames);
        }
    }
}
