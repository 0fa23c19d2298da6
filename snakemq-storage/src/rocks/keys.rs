//! The byte layout of keys and values. Every number is big-endian so that RocksDB's
//! bytewise key order is the numeric order: one peer's messages are contiguous and sorted
//! by sequence number, and the deadline index is sorted by deadline.

use bytes::Bytes;

use crate::{Expiry, Record, Uuid};

/// Column family of the messages: `peer id (u32) ++ seq (u64)` → [`encode_record`].
pub(super) const CF_MESSAGES: &str = "messages";
/// Column family of the indexes, values empty:
/// `INDEX_DEADLINE ++ deadline (u64) ++ seq (u64) ++ peer id (u32)` for [`Expiry::At`],
/// `INDEX_TRANSIENT ++ peer id (u32) ++ seq (u64)` for [`Expiry::WhileConnected`].
pub(super) const CF_INDEX: &str = "index";
/// Column family of received ids: `peer id (u32) ++ n (u64)` → uuid.
pub(super) const CF_RECEIVED: &str = "received";
/// The default column family holds the metadata: [`KEY_FORMAT`], [`KEY_NEXT_SEQ`] and one
/// `PEER_PREFIX ++ peer id (u32)` → [`encode_peer`] row per peer.
pub(super) const CF_META: &str = "default";
/// Every column family of a store, the default one first.
pub(super) const FAMILIES: [&str; 4] = [CF_META, CF_MESSAGES, CF_INDEX, CF_RECEIVED];

pub(super) const INDEX_DEADLINE: u8 = 0;
pub(super) const INDEX_TRANSIENT: u8 = 1;

pub(super) const KEY_FORMAT: &[u8] = b"format";
/// Identifies a snakemq-rs store and the version of this layout.
pub(super) const FORMAT: &[u8] = b"snakemq-rs rocksdb store 1";
pub(super) const KEY_NEXT_SEQ: &[u8] = b"next_seq";
pub(super) const PEER_PREFIX: u8 = b'p';

/// Value header: version, flags, expiry kind, deadline, uuid.
const RECORD_VERSION: u8 = 1;
const HEADER: usize = 1 + 4 + 1 + 8 + 16;
const KIND_NEVER: u8 = 0;
const KIND_AT: u8 = 1;
const KIND_WHILE_CONNECTED: u8 = 2;

pub(super) fn message_key(peer: u32, seq: u64) -> [u8; 12] {
    let mut key = [0; 12];
    key[..4].copy_from_slice(&peer.to_be_bytes());
    key[4..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The key just past `message_key(peer, seq)` (the end of a range deletion that ends
/// with `seq`): the next number's key, or past every key of `peer` after the last number.
pub(super) fn message_key_after(peer: u32, seq: u64) -> Vec<u8> {
    match seq.checked_add(1) {
        Some(next) => message_key(peer, next).to_vec(),
        None => peer_end(peer),
    }
}

/// The sequence number of a message key of `peer`, if it is one.
pub(super) fn message_seq(peer: u32, key: &[u8]) -> Option<u64> {
    let (id, seq) = key.split_first_chunk::<4>()?;
    let seq: [u8; 8] = seq.try_into().ok()?;
    (u32::from_be_bytes(*id) == peer).then_some(u64::from_be_bytes(seq))
}

/// The key just past every key of `peer` in a column family keyed by peer id first.
pub(super) fn peer_end(peer: u32) -> Vec<u8> {
    match peer.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        None => vec![0xff; 13],
    }
}

pub(super) fn deadline_key(deadline: u64, seq: u64, peer: u32) -> [u8; 21] {
    let mut key = [0; 21];
    key[0] = INDEX_DEADLINE;
    key[1..9].copy_from_slice(&deadline.to_be_bytes());
    key[9..17].copy_from_slice(&seq.to_be_bytes());
    key[17..].copy_from_slice(&peer.to_be_bytes());
    key
}

/// `(deadline, seq, peer)` of a deadline index key.
pub(super) fn parse_deadline_key(key: &[u8]) -> Option<(u64, u64, u32)> {
    let key: &[u8; 21] = key.try_into().ok()?;
    if key[0] != INDEX_DEADLINE {
        return None;
    }
    let (deadline, rest) = key[1..].split_first_chunk::<8>()?;
    let (seq, peer) = rest.split_first_chunk::<8>()?;
    let peer: [u8; 4] = peer.try_into().ok()?;
    Some((
        u64::from_be_bytes(*deadline),
        u64::from_be_bytes(*seq),
        u32::from_be_bytes(peer),
    ))
}

pub(super) fn transient_key(peer: u32, seq: u64) -> [u8; 13] {
    let mut key = [0; 13];
    key[0] = INDEX_TRANSIENT;
    key[1..].copy_from_slice(&message_key(peer, seq));
    key
}

/// `(peer, seq)` of a transient index key.
pub(super) fn parse_transient_key(key: &[u8]) -> Option<(u32, u64)> {
    let (kind, rest) = key.split_first()?;
    if *kind != INDEX_TRANSIENT {
        return None;
    }
    let (peer, seq) = rest.split_first_chunk::<4>()?;
    let seq: [u8; 8] = seq.try_into().ok()?;
    Some((u32::from_be_bytes(*peer), u64::from_be_bytes(seq)))
}

/// The index key of a message with this expiry, if it is indexed.
pub(super) fn index_key(peer: u32, seq: u64, expiry: Expiry) -> Option<Vec<u8>> {
    match expiry {
        Expiry::Never => None,
        Expiry::At(deadline) => Some(deadline_key(deadline, seq, peer).to_vec()),
        Expiry::WhileConnected => Some(transient_key(peer, seq).to_vec()),
    }
}

pub(super) fn received_key(peer: u32, n: u64) -> [u8; 12] {
    message_key(peer, n)
}

pub(super) fn peer_key(peer: u32) -> [u8; 5] {
    let mut key = [PEER_PREFIX; 5];
    key[1..].copy_from_slice(&peer.to_be_bytes());
    key
}

/// The stored part of a message without its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) flags: u32,
    pub(super) expiry: Expiry,
    pub(super) uuid: Uuid,
    /// Payload length.
    pub(super) size: u64,
}

pub(super) fn encode_record(record: &Record) -> Vec<u8> {
    let (kind, deadline) = match record.expiry {
        Expiry::Never => (KIND_NEVER, 0),
        Expiry::At(ms) => (KIND_AT, ms),
        Expiry::WhileConnected => (KIND_WHILE_CONNECTED, 0),
    };
    let mut value = Vec::with_capacity(HEADER + record.data.len());
    value.push(RECORD_VERSION);
    value.extend_from_slice(&record.flags.to_be_bytes());
    value.push(kind);
    value.extend_from_slice(&deadline.to_be_bytes());
    value.extend_from_slice(&record.uuid);
    value.extend_from_slice(&record.data);
    value
}

pub(super) fn decode_header(value: &[u8]) -> Result<Header, String> {
    let (head, data) = value.split_first_chunk::<HEADER>().ok_or_else(|| {
        format!(
            "message value of {} bytes, shorter than its header",
            value.len()
        )
    })?;
    let (version, rest) = head.split_first().ok_or("empty header")?;
    if *version != RECORD_VERSION {
        return Err(format!("message value version {version}"));
    }
    let (flags, rest) = rest.split_first_chunk::<4>().ok_or("short header")?;
    let (kind, rest) = rest.split_first().ok_or("short header")?;
    let (deadline, uuid) = rest.split_first_chunk::<8>().ok_or("short header")?;
    let uuid: Uuid = uuid.try_into().map_err(|_| "short header")?;
    let expiry = match *kind {
        KIND_NEVER => Expiry::Never,
        KIND_AT => Expiry::At(u64::from_be_bytes(*deadline)),
        KIND_WHILE_CONNECTED => Expiry::WhileConnected,
        other => return Err(format!("unknown expiry kind {other}")),
    };
    Ok(Header {
        flags: u32::from_be_bytes(*flags),
        expiry,
        uuid,
        size: data.len() as u64,
    })
}

pub(super) fn decode_record(seq: u64, value: &[u8]) -> Result<Record, String> {
    let header = decode_header(value)?;
    let data = value.get(HEADER..).unwrap_or_default();
    Ok(Record {
        seq,
        uuid: header.uuid,
        data: Bytes::copy_from_slice(data),
        flags: header.flags,
        expiry: header.expiry,
    })
}

/// A peer row: `messages, bytes, received_next (u64 each) ++ name`.
pub(super) fn encode_peer(messages: u64, bytes: u64, received_next: u64, name: &str) -> Vec<u8> {
    let mut value = Vec::with_capacity(24 + name.len());
    value.extend_from_slice(&messages.to_be_bytes());
    value.extend_from_slice(&bytes.to_be_bytes());
    value.extend_from_slice(&received_next.to_be_bytes());
    value.extend_from_slice(name.as_bytes());
    value
}

/// `(messages, bytes, received_next, name)` of a peer row.
pub(super) fn decode_peer(value: &[u8]) -> Result<(u64, u64, u64, String), String> {
    let (messages, rest) = value.split_first_chunk::<8>().ok_or("short peer row")?;
    let (bytes, rest) = rest.split_first_chunk::<8>().ok_or("short peer row")?;
    let (received_next, name) = rest.split_first_chunk::<8>().ok_or("short peer row")?;
    let name = std::str::from_utf8(name).map_err(|_| "peer name is not UTF-8")?;
    Ok((
        u64::from_be_bytes(*messages),
        u64::from_be_bytes(*bytes),
        u64::from_be_bytes(*received_next),
        name.to_owned(),
    ))
}

pub(super) fn decode_u64(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_numerically_and_round_trip() {
        assert!(message_key(1, 255) < message_key(1, 256));
        assert!(message_key(1, u64::MAX) < message_key(2, 0));
        assert!(message_key(1, u64::MAX).as_slice() < peer_end(1).as_slice());
        assert_eq!(message_seq(7, &message_key(7, 42)), Some(42));
        assert_eq!(message_seq(8, &message_key(7, 42)), None);
        assert!(deadline_key(10, 9, 9) < deadline_key(11, 0, 0));
        assert_eq!(parse_deadline_key(&deadline_key(5, 6, 7)), Some((5, 6, 7)));
        assert_eq!(parse_transient_key(&transient_key(3, 4)), Some((3, 4)));
        assert_eq!(parse_transient_key(&deadline_key(3, 4, 5)), None);
    }

    #[test]
    fn records_and_peers_round_trip() -> Result<(), String> {
        for expiry in [Expiry::Never, Expiry::At(u64::MAX), Expiry::WhileConnected] {
            let record = Record {
                seq: 9,
                uuid: [3; 16],
                data: Bytes::from_static(b"payload"),
                flags: 0xdead_beef,
                expiry,
            };
            let value = encode_record(&record);
            assert_eq!(decode_record(9, &value)?, record);
            assert_eq!(decode_header(&value)?.size, 7);
        }
        assert!(decode_header(b"short").is_err());
        let row = encode_peer(1, 2, 3, "bob");
        assert_eq!(decode_peer(&row)?, (1, 2, 3, "bob".to_owned()));
        assert!(decode_peer(row.get(..20).unwrap_or_default()).is_err());
        Ok(())
    }
}
