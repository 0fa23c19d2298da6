//! Packet framing: `size:u32 big-endian, body[size]`.
//!
//! [`PacketDecoder`] is sans-IO: bytes go in, whole packet bodies come out. It checks the
//! announced size against the maximum *before* reserving memory, and grows its buffer in
//! bounded steps, so a peer that announces a large packet and then stalls cannot make us
//! allocate the whole announced size up front.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::LinkError;

/// Default maximum packet body size: 64 MiB.
pub const DEFAULT_MAX_PACKET_SIZE: u32 = 64 * 1024 * 1024;

/// Length of the size prefix.
pub const PREFIX_LEN: usize = 4;

/// The largest step by which the receive buffer grows for a single packet.
const GROWTH_STEP: usize = 1024 * 1024;

/// Room offered to each read.
const MIN_READ: usize = 64 * 1024;
/// The room below which the read buffer grows by [`MIN_READ`] before a read.
const MIN_ROOM: usize = 16 * 1024;

/// Turns a byte stream into packet bodies.
#[derive(Debug)]
pub struct PacketDecoder {
    buf: BytesMut,
    max_packet_size: u32,
}

impl PacketDecoder {
    /// A decoder that refuses packets larger than `max_packet_size` bytes.
    pub fn new(max_packet_size: u32) -> Self {
        Self {
            buf: BytesMut::with_capacity(MIN_READ),
            max_packet_size,
        }
    }

    /// The configured maximum packet body size.
    pub fn max_packet_size(&self) -> u32 {
        self.max_packet_size
    }

    /// Appends received bytes.
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Number of buffered bytes not yet returned as packets.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete packet body, if one is buffered.
    ///
    /// Fails when the length prefix announces more than the maximum; the caller must then
    /// close the connection (the stream cannot be resynchronised).
    pub fn next_packet(&mut self) -> Result<Option<Bytes>, LinkError> {
        let Some(size) = self.announced_size()? else {
            return Ok(None);
        };
        let total = PREFIX_LEN + size;
        if self.buf.len() < total {
            return Ok(None);
        }
        self.buf.advance(PREFIX_LEN);
        Ok(Some(self.buf.split_to(size).freeze()))
    }

    /// Buffer to read into, with room reserved for the packet being received.
    ///
    /// The reservation is at most 1 MiB beyond what is buffered, whatever the
    /// peer announced: memory follows the bytes that really arrive.
    pub fn read_buffer(&mut self) -> Result<&mut BytesMut, LinkError> {
        let want = match self.announced_size()? {
            Some(size) => (PREFIX_LEN + size).saturating_sub(self.buf.len()),
            None => 0,
        };
        // At least MIN_READ, so one read syscall takes in hundreds of small packets.
        let step = want.clamp(MIN_READ, GROWTH_STEP);
        // Grown when the packet being received does not fit (up to a step), or little room
        // is left. Not whenever the room is under MIN_READ: packets handed out share the
        // buffer, so while one is still held (a reply waiting for its caller) every read
        // allocated a new buffer of MIN_READ.
        let room = self.buf.capacity() - self.buf.len();
        if room < want.min(step).max(MIN_ROOM) {
            self.buf.reserve(step);
        }
        Ok(&mut self.buf)
    }

    fn announced_size(&self) -> Result<Option<usize>, LinkError> {
        let Some(prefix) = self.buf.get(..PREFIX_LEN) else {
            return Ok(None);
        };
        let mut prefix = prefix;
        let size = prefix.get_u32();
        if size > self.max_packet_size {
            return Err(LinkError::PacketTooLarge {
                size: u64::from(size),
                max: self.max_packet_size,
            });
        }
        // u32 always fits in usize on the platforms we support (32 and 64 bit).
        Ok(Some(size as usize))
    }
}

/// Appends one packet (prefix and body) to `out`.
///
/// # Errors
/// Fails when the body does not fit in a `u32` length.
pub fn encode_packet(body: &[u8], out: &mut BytesMut) -> Result<(), LinkError> {
    let size = u32::try_from(body.len()).map_err(|_| LinkError::PacketTooLarge {
        size: body.len() as u64,
        max: u32::MAX,
    })?;
    out.reserve(PREFIX_LEN + body.len());
    out.put_u32(size);
    out.put_slice(body);
    Ok(())
}

/// The 4-byte prefix for a body of `len` bytes.
///
/// # Errors
/// Fails when `len` does not fit in a `u32`.
pub fn packet_prefix(len: usize) -> Result<[u8; PREFIX_LEN], LinkError> {
    let size = u32::try_from(len).map_err(|_| LinkError::PacketTooLarge {
        size: len as u64,
        max: u32::MAX,
    })?;
    Ok(size.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(stream: &[u8], chunks: &[usize], max: u32) -> Result<Vec<Bytes>, LinkError> {
        let mut decoder = PacketDecoder::new(max);
        let mut out = Vec::new();
        let mut rest = stream;
        let mut sizes = chunks.iter().cycle();
        while !rest.is_empty() {
            let n = sizes.next().copied().unwrap_or(1).clamp(1, rest.len());
            let (head, tail) = rest.split_at(n);
            decoder.extend_from_slice(head);
            rest = tail;
            while let Some(p) = decoder.next_packet()? {
                out.push(p);
            }
        }
        Ok(out)
    }

    #[test]
    fn oversized_prefix_is_refused_before_allocation() {
        let mut decoder = PacketDecoder::new(1024);
        decoder.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            decoder.next_packet(),
            Err(LinkError::PacketTooLarge {
                size: 0xffff_ffff,
                max: 1024
            })
        ));
        assert!(decoder.read_buffer().is_err());
    }

    #[test]
    fn reservation_is_bounded_by_growth_step() {
        let mut decoder = PacketDecoder::new(u32::MAX);
        decoder.extend_from_slice(&0xffff_fff0u32.to_be_bytes());
        let buf = decoder.read_buffer().map(|b| b.capacity()).unwrap_or(0);
        assert!(buf <= 2 * GROWTH_STEP + MIN_READ, "reserved {buf}");
    }

    #[test]
    fn zero_length_packet_is_returned_empty() {
        let mut decoder = PacketDecoder::new(1024);
        decoder.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(decoder.next_packet().ok().flatten(), Some(Bytes::new()));
    }

    proptest! {
        #[test]
        fn chunking_does_not_change_packets(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
            chunks in proptest::collection::vec(1usize..64, 1..10),
        ) {
            let mut stream = BytesMut::new();
            for body in &bodies {
                encode_packet(body, &mut stream).map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            let decoded = decode_all(&stream, &chunks, 1024).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let expected: Vec<Bytes> = bodies.into_iter().map(Bytes::from).collect();
            prop_assert_eq!(decoded, expected);
        }
    }
}
