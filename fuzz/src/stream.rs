//! `stream_decoder`: arbitrary bytes, cut into arbitrary chunks, through
//! [`PacketDecoder`], every packet through [`Frame::decode`].
//!
//! Input layout (raw bytes, so that seeds are readable wire captures with a short header):
//!
//! | offset | meaning                                                                 |
//! |--------|-------------------------------------------------------------------------|
//! | 0      | maximum packet size selector: `16 + 4 * b` bytes (16..=1036)            |
//! | 1      | mode: bit 0 set = read like the link does (`read_buffer`, capped reads) |
//! | 2      | `n`, number of chunk sizes that follow (taken modulo 9)                 |
//! | 3..    | `n` chunk sizes (a size of 0 counts as 1), used cyclically              |
//! | rest   | the byte stream                                                         |

use bytes::{BufMut, Bytes, BytesMut};
use snakemq::proto::Frame;
use snakemq_link::PacketDecoder;

/// Length of the size prefix of a packet.
const PREFIX_LEN: usize = 4;

/// `PacketDecoder`'s private growth step (1 MiB); the capacity bound below depends on it.
const GROWTH_STEP: usize = 1024 * 1024;

/// The parsed header of a `stream_decoder` input.
#[derive(Debug)]
pub struct StreamInput<'a> {
    /// Maximum packet body size given to the decoder.
    pub max_packet_size: u32,
    /// Whether bytes go in through `read_buffer` like the link's reader.
    pub reader_mode: bool,
    /// Chunk sizes, used cyclically; never empty, never zero.
    pub chunks: Vec<usize>,
    /// The stream itself.
    pub stream: &'a [u8],
}

impl<'a> StreamInput<'a> {
    /// Splits raw fuzz input into header and stream.
    pub fn parse(data: &'a [u8]) -> Self {
        let (header, rest) = data.split_at(data.len().min(3));
        let max_sel = header.first().copied().unwrap_or(0);
        let mode = header.get(1).copied().unwrap_or(0);
        let count = usize::from(header.get(2).copied().unwrap_or(0) % 9);
        let (sizes, stream) = rest.split_at(rest.len().min(count));
        let mut chunks: Vec<usize> = sizes.iter().map(|&s| usize::from(s).max(1)).collect();
        if chunks.is_empty() {
            chunks.push(usize::MAX);
        }
        StreamInput {
            max_packet_size: 16 + 4 * u32::from(max_sel),
            reader_mode: mode & 1 == 1,
            chunks,
            stream,
        }
    }

    /// Builds raw input from parts (used to write seeds).
    pub fn to_bytes(max_sel: u8, reader_mode: bool, chunks: &[u8], stream: &[u8]) -> Vec<u8> {
        let mut out = vec![max_sel, u8::from(reader_mode), chunks.len().min(8) as u8];
        out.extend(chunks.iter().take(8));
        out.extend_from_slice(stream);
        out
    }
}

/// Runs one input; panics on a broken invariant.
pub fn run(data: &[u8]) {
    let input = StreamInput::parse(data);
    let max = input.max_packet_size as usize;
    let mut decoder = PacketDecoder::new(input.max_packet_size);
    // Everything fed so far, and how much of it the decoder has returned as packets.
    let mut fed: Vec<u8> = Vec::with_capacity(input.stream.len());
    let mut consumed = 0usize;
    let mut rest = input.stream;
    let mut sizes = input.chunks.iter().cycle();

    while !rest.is_empty() {
        let want = sizes.next().copied().unwrap_or(1).min(rest.len());
        let n = if input.reader_mode {
            let buf = match decoder.read_buffer() {
                Ok(buf) => buf,
                Err(_) => {
                    assert_refused(&mut decoder, &fed, consumed, max);
                    return;
                }
            };
            // A socket read never writes past the spare capacity it was given.
            let spare = buf.capacity() - buf.len();
            assert!(spare > 0, "read_buffer gave no room to read into");
            let n = want.min(spare);
            let (head, _) = rest.split_at(n);
            buf.put_slice(head);
            assert!(
                buf.capacity() <= 2 * (PREFIX_LEN + max + GROWTH_STEP) + 16 * 1024,
                "receive buffer grew to {} bytes with max packet {max}",
                buf.capacity()
            );
            n
        } else {
            decoder.extend_from_slice(rest.get(..want).unwrap_or(rest));
            want
        };
        let (head, tail) = rest.split_at(n);
        fed.extend_from_slice(head);
        rest = tail;

        loop {
            match decoder.next_packet() {
                Ok(Some(packet)) => {
                    check_packet(&packet, &fed, &mut consumed, max);
                }
                Ok(None) => break,
                Err(_) => {
                    assert_refused(&mut decoder, &fed, consumed, max);
                    return;
                }
            }
        }
        assert_eq!(
            consumed + decoder.buffered(),
            fed.len(),
            "decoder lost or invented bytes"
        );
        // Whatever is left is one incomplete packet: never more than prefix + max.
        assert!(
            decoder.buffered() < PREFIX_LEN + max,
            "{} bytes buffered after draining, max packet {max}",
            decoder.buffered()
        );
    }
}

/// A packet must be exactly the next slice of the stream, within the maximum, and its frame
/// (when it decodes) must survive a re-encode.
fn check_packet(packet: &Bytes, fed: &[u8], consumed: &mut usize, max: usize) {
    assert!(
        packet.len() <= max,
        "packet of {} > max {max}",
        packet.len()
    );
    let start = *consumed;
    let prefix = fed.get(start..start + PREFIX_LEN);
    let body = fed.get(start + PREFIX_LEN..start + PREFIX_LEN + packet.len());
    assert_eq!(
        prefix,
        Some(&(packet.len() as u32).to_be_bytes()[..]),
        "prefix mismatch"
    );
    assert_eq!(body, Some(&packet[..]), "body is not the next stream slice");
    *consumed += PREFIX_LEN + packet.len();

    let Ok(frame) = Frame::decode(packet.clone()) else {
        return;
    };
    let mut out = BytesMut::new();
    frame.encode(&mut out);
    let encoded_body = out.get(PREFIX_LEN..).unwrap_or_default();
    assert_eq!(
        out.get(..PREFIX_LEN),
        Some(&(encoded_body.len() as u32).to_be_bytes()[..]),
        "encode wrote a wrong prefix for {frame:?}"
    );
    let again = Frame::decode(Bytes::copy_from_slice(encoded_body));
    assert_eq!(
        again.as_ref(),
        Ok(&frame),
        "re-encoded frame decodes differently"
    );
    // Unknown frames re-encode with zero payload, and PING/PONG/INCOMPATIBLE/CAPABILITIES
    // ignore trailing bytes; every frame with a canonical length must re-encode byte for byte.
    if !matches!(frame, Frame::Unknown { .. }) && encoded_body.len() == packet.len() {
        assert_eq!(
            encoded_body,
            &packet[..],
            "re-encode changed bytes of {frame:?}"
        );
    }
}

/// After an oversized prefix the decoder must keep refusing: the stream cannot be
/// resynchronised, and nothing past the bad prefix was returned.
fn assert_refused(decoder: &mut PacketDecoder, fed: &[u8], consumed: usize, max: usize) {
    let prefix = fed.get(consumed..consumed + PREFIX_LEN);
    let announced = prefix.map(|p| p.iter().fold(0usize, |acc, b| acc << 8 | usize::from(*b)));
    assert!(
        announced.is_some_and(|size| size > max),
        "refused a prefix that is within max {max}: {prefix:?}"
    );
    assert!(decoder.next_packet().is_err(), "refusal is not sticky");
    assert!(decoder.read_buffer().is_err(), "read_buffer after refusal");
}
