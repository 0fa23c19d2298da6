//! The payload of a commit log record: one [`WriteBatch`], little-endian.
//!
//! - pushes: count (u32), then per push: peer, seq (u64), uuid (16 bytes), flags (u32),
//!   expiry kind (u8: 0 never, 1 at, 2 while connected), deadline (u64, 0 unless `at`),
//!   data length (u32) and data;
//! - removals: count (u32), then per removal: peer, seq (u64);
//! - received ids: count (u32), then per id: peer, uuid (16 bytes).
//!
//! A peer is its name's length (u16) and UTF-8 bytes. A run of operations for one peer
//! (the usual case) stores the name once: a length of `u16::MAX` means "the same peer as
//! the previous operation".

use std::sync::Arc;

use bytes::Bytes;

use crate::{Expiry, Record, Uuid, WriteBatch};

/// The peer length that stands for "the previous operation's peer".
const SAME_PEER: u16 = u16::MAX;

/// Appends `batch` to `out`.
pub(super) fn encode(batch: &WriteBatch, out: &mut Vec<u8>) {
    let mut peers = PeerWriter::default();
    put_count(out, batch.pushes.len());
    for (peer, record) in &batch.pushes {
        peers.put(out, peer);
        out.extend_from_slice(&record.seq.to_le_bytes());
        out.extend_from_slice(&record.uuid);
        out.extend_from_slice(&record.flags.to_le_bytes());
        let (kind, deadline) = match record.expiry {
            Expiry::Never => (0u8, 0u64),
            Expiry::At(ms) => (1, ms),
            Expiry::WhileConnected => (2, 0),
        };
        out.push(kind);
        out.extend_from_slice(&deadline.to_le_bytes());
        put_count(out, record.data.len());
        out.extend_from_slice(&record.data);
    }
    put_count(out, batch.removes.len());
    for (peer, seq) in &batch.removes {
        peers.put(out, peer);
        out.extend_from_slice(&seq.to_le_bytes());
    }
    put_count(out, batch.received.len());
    for (peer, uuid) in &batch.received {
        peers.put(out, peer);
        out.extend_from_slice(uuid);
    }
}

/// Decodes a payload written by [`encode`]; the error says what is wrong.
pub(super) fn decode(bytes: &[u8]) -> Result<WriteBatch, String> {
    let mut input = Reader { bytes, peer: None };
    let mut batch = WriteBatch::new();
    for _ in 0..input.u32()? {
        let peer = input.peer()?;
        let seq = input.u64()?;
        let uuid = input.uuid()?;
        let flags = input.u32()?;
        let kind = input.take(1)?.first().copied().unwrap_or(u8::MAX);
        let deadline = input.u64()?;
        let expiry = match kind {
            0 => Expiry::Never,
            1 => Expiry::At(deadline),
            2 => Expiry::WhileConnected,
            other => return Err(format!("unknown expiry kind {other}")),
        };
        let len = input.u32()? as usize;
        let data = Bytes::copy_from_slice(input.take(len)?);
        batch.pushes.push((
            peer,
            Record {
                seq,
                uuid,
                data,
                flags,
                expiry,
            },
        ));
    }
    for _ in 0..input.u32()? {
        let peer = input.peer()?;
        batch.removes.push((peer, input.u64()?));
    }
    for _ in 0..input.u32()? {
        let peer = input.peer()?;
        batch.received.push((peer, input.uuid()?));
    }
    if !input.bytes.is_empty() {
        return Err(format!("{} bytes after the batch", input.bytes.len()));
    }
    Ok(batch)
}

/// Counts and lengths are u32; a batch is far smaller than 4 GiB (the log caps records).
fn put_count(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

/// Writes peer names, each run of one peer once.
#[derive(Default)]
struct PeerWriter<'a> {
    previous: Option<&'a str>,
}

impl<'a> PeerWriter<'a> {
    fn put(&mut self, out: &mut Vec<u8>, peer: &'a str) {
        if self.previous == Some(peer) {
            out.extend_from_slice(&SAME_PEER.to_le_bytes());
            return;
        }
        // Peer names are identities from the handshake, far shorter than 64 KiB; a longer
        // one is cut (at a character boundary) rather than written wrong.
        let mut end = peer.len().min(usize::from(SAME_PEER - 1));
        while !peer.is_char_boundary(end) {
            end -= 1;
        }
        let name = peer.get(..end).unwrap_or_default();
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        self.previous = Some(peer);
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    peer: Option<Arc<str>>,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err(format!(
                "truncated: {n} bytes wanted, {} left",
                self.bytes.len()
            ));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, String> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, String> {
        self.array().map(u64::from_le_bytes)
    }

    fn uuid(&mut self) -> Result<Uuid, String> {
        self.array()
    }

    fn peer(&mut self) -> Result<Arc<str>, String> {
        let len = u16::from_le_bytes(self.array()?);
        if len == SAME_PEER {
            return self
                .peer
                .clone()
                .ok_or_else(|| "\"same peer\" before any peer".to_owned());
        }
        let name = std::str::from_utf8(self.take(usize::from(len))?)
            .map_err(|e| format!("peer name: {e}"))?;
        let peer: Arc<str> = Arc::from(name);
        self.peer = Some(peer.clone());
        Ok(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, expiry: Expiry, data: &'static [u8]) -> Record {
        Record {
            seq,
            uuid: [seq as u8; 16],
            data: Bytes::from_static(data),
            flags: 3,
            expiry,
        }
    }

    #[test]
    fn a_batch_survives_the_round_trip() -> Result<(), String> {
        let bob: Arc<str> = Arc::from("bob");
        let eve: Arc<str> = Arc::from("é-eve");
        let batch = WriteBatch {
            pushes: vec![
                (bob.clone(), record(1, Expiry::Never, b"one")),
                (bob.clone(), record(2, Expiry::At(99), b"")),
                (eve.clone(), record(3, Expiry::WhileConnected, b"three")),
            ],
            removes: vec![(eve.clone(), 3), (bob.clone(), 1), (bob.clone(), 2)],
            received: vec![(eve.clone(), [9; 16])],
        };
        let mut bytes = Vec::new();
        encode(&batch, &mut bytes);
        assert_eq!(decode(&bytes)?, batch);
        assert_eq!(
            decode(&{
                let mut empty = Vec::new();
                encode(&WriteBatch::new(), &mut empty);
                empty
            })?,
            WriteBatch::new()
        );
        Ok(())
    }

    #[test]
    fn damaged_payloads_are_errors_not_panics() {
        let bob: Arc<str> = Arc::from("bob");
        let batch = WriteBatch {
            pushes: vec![(bob.clone(), record(1, Expiry::At(5), b"payload"))],
            removes: vec![(bob, 1)],
            received: Vec::new(),
        };
        let mut bytes = Vec::new();
        encode(&batch, &mut bytes);
        for cut in 0..bytes.len() {
            assert!(
                decode(bytes.get(..cut).unwrap_or_default()).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        // An unknown expiry kind: peer (2 + 3), seq 8, uuid 16, flags 4 after the count.
        let mut kind = bytes;
        if let Some(byte) = kind.get_mut(4 + 5 + 8 + 16 + 4) {
            *byte = 7;
        }
        assert!(decode(&kind).is_err());
        // "Same peer" with no peer before it.
        assert!(decode(&[0, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
