//! One peer's payload bytes, packed into shared chunks.
//!
//! Every byte ever appended has a *logical position*: positions increase by the payload
//! length with every append and never go back, so an entry only needs to remember
//! `(position, length)`. The bytes of positions `[start, end)` live in:
//!
//! - `sealed`: frozen [`Bytes`] segments, contiguous and oldest first; then
//! - `active`: the chunk being filled, starting at `active_start`.
//!
//! Small payloads are copied into `active` (a memcpy, no allocation of their own); a
//! payload of [`COPY_LIMIT`] bytes or more becomes a segment by itself, uncopied, so a
//! large or shared buffer is never duplicated. Handing out a payload that is still in
//! `active` first *seals* the filled part (`BytesMut::split`, which keeps the rest of the
//! chunk's capacity for later appends), so every payload handed out is a
//! [`Bytes::slice`] of a segment: a reference count, no copy.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Payloads at least this long are kept as their own segment instead of being copied.
pub(super) const COPY_LIMIT: usize = 512;
/// Smallest chunk: a peer with a short queue holds little.
pub(super) const MIN_CHUNK: usize = 1024;
/// Largest chunk: big enough that the per-chunk cost (one allocation, one segment) is
/// negligible, small enough that a chunk's unused tail stays negligible too.
pub(super) const MAX_CHUNK: usize = 64 * 1024;
/// An emptied queue keeps an active chunk of at most this many bytes for its next
/// messages; a bigger one is freed so that idle peers hold little memory.
const KEEP_WHEN_EMPTY: usize = 4 * 1024;
/// Segment deques above this capacity shrink once mostly empty.
const SHRINK_ABOVE: usize = 64;

/// The payload bytes of one peer's queue.
#[derive(Debug, Default)]
pub(super) struct Arena {
    /// Frozen segments as (logical position of their first byte, bytes), contiguous.
    sealed: VecDeque<(u64, Bytes)>,
    /// Logical position of the first byte of `active`: the end of the last segment.
    active_start: u64,
    /// The chunk being filled.
    active: BytesMut,
    /// Size of the allocation behind `active` (its `capacity` only counts what is left
    /// after sealing), so that an idle queue can tell whether it holds much.
    active_alloc: usize,
}

impl Arena {
    /// Logical position one past the last byte appended.
    pub(super) fn end(&self) -> u64 {
        self.active_start + self.active.len() as u64
    }

    /// Appends a payload and returns its position. `live` (payload bytes queued) sizes a
    /// new chunk when one is needed: chunks grow with the queue.
    ///
    /// Takes the `Bytes` by value: cloning a `Bytes` made from a `Vec` would allocate its
    /// shared reference count, which a moved one does not need.
    pub(super) fn append(&mut self, data: Bytes, live: u64) -> u64 {
        if data.len() >= COPY_LIMIT {
            self.append_segment(data)
        } else {
            self.append_copy(&data, live)
        }
    }

    /// Keeps `data` as a segment of its own, uncopied.
    fn append_segment(&mut self, data: Bytes) -> u64 {
        // Positions must stay contiguous: what `active` holds so far goes before it.
        self.seal();
        let pos = self.active_start;
        self.active_start += data.len() as u64;
        self.sealed.push_back((pos, data));
        pos
    }

    /// Copies `data` into the active chunk, starting a new chunk when it does not fit.
    fn append_copy(&mut self, data: &[u8], live: u64) -> u64 {
        let pos = self.end();
        if data.is_empty() {
            return pos;
        }
        if self.active.capacity() - self.active.len() < data.len() {
            self.seal();
            let size = chunk_size(live).max(data.len());
            self.active = BytesMut::with_capacity(size);
            self.active_alloc = size;
        }
        self.active.extend_from_slice(data);
        pos
    }

    /// Moves the filled part of the active chunk into a segment; the chunk's remaining
    /// capacity stays available for appends.
    fn seal(&mut self) {
        if self.active.is_empty() {
            return;
        }
        let filled = self.active.split().freeze();
        let pos = self.active_start;
        self.active_start += filled.len() as u64;
        self.sealed.push_back((pos, filled));
    }

    /// The payload at `pos`, as a slice of its segment (sealing the active chunk first if
    /// the payload is there). `None` if the range is not held (a broken invariant).
    pub(super) fn get(&mut self, pos: u64, len: usize) -> Option<Bytes> {
        if len == 0 {
            return Some(Bytes::new());
        }
        if pos >= self.active_start {
            self.seal();
        }
        let (segment, offset) = self.locate_sealed(pos, len)?;
        Some(segment.slice(offset..offset + len))
    }

    /// The sealed segment holding `[pos, pos + len)` and the offset of `pos` in it.
    fn locate_sealed(&self, pos: u64, len: usize) -> Option<(&Bytes, usize)> {
        let index = self
            .sealed
            .partition_point(|(start, _)| *start <= pos)
            .checked_sub(1)?;
        let (start, segment) = self.sealed.get(index)?;
        let offset = usize::try_from(pos - start).ok()?;
        (offset.checked_add(len)? <= segment.len()).then_some((segment, offset))
    }

    /// Appends the payload at `(pos, len)` of `from` to `self` (compaction): small ones
    /// are copied, large ones keep sharing their segment. `None` if `from` lacks it.
    pub(super) fn append_from(
        &mut self,
        from: &Arena,
        pos: u64,
        len: usize,
        live: u64,
    ) -> Option<u64> {
        if len >= COPY_LIMIT {
            let (segment, offset) = from.locate_sealed(pos, len)?;
            return Some(self.append_segment(segment.slice(offset..offset + len)));
        }
        let bytes = match from.locate_sealed(pos, len) {
            Some((segment, offset)) => segment.get(offset..offset + len)?,
            None => {
                let offset = usize::try_from(pos.checked_sub(from.active_start)?).ok()?;
                from.active.get(offset..offset.checked_add(len)?)?
            }
        };
        Some(self.append_copy(bytes, live))
    }

    /// Drops the segments that lie wholly before `pos` (the first live payload).
    pub(super) fn release_before(&mut self, pos: u64) {
        while self
            .sealed
            .front()
            .is_some_and(|(start, segment)| start + segment.len() as u64 <= pos)
        {
            self.sealed.pop_front();
        }
        if self.sealed.capacity() > SHRINK_ABOVE && self.sealed.len() * 4 < self.sealed.capacity() {
            self.sealed.shrink_to(self.sealed.len() * 2);
        }
    }

    /// Forgets every payload (the queue is empty). Positions keep increasing.
    pub(super) fn clear(&mut self) {
        // A small deque is kept: a queue that empties after every message (one request
        // outstanding) would otherwise allocate it again for the next one.
        self.sealed.clear();
        if self.sealed.capacity() > SHRINK_ABOVE {
            self.sealed = VecDeque::new();
        }
        self.active_start = self.end();
        if self.active_alloc > KEEP_WHEN_EMPTY {
            self.active = BytesMut::new();
            self.active_alloc = 0;
        } else {
            // Keeps the unused tail of a small chunk for the next messages.
            let _ = self.active.split();
        }
    }

    /// An upper bound of the payload storage this arena keeps alive (not counting buffers
    /// that records handed out still share): every segment plus the allocation behind the
    /// active chunk (so sealed parts of the active chunk count twice).
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.sealed.iter().map(|(_, s)| s.len()).sum::<usize>() + self.active_alloc
    }

    /// Number of sealed segments.
    #[cfg(test)]
    pub(super) fn segments(&self) -> usize {
        self.sealed.len()
    }
}

/// Size of a new chunk for a queue holding `live` payload bytes: about as big as the
/// queue, between [`MIN_CHUNK`] and [`MAX_CHUNK`], so the unused tail of the active chunk
/// is never more than the queue itself (or one small chunk).
pub(super) fn chunk_size(live: u64) -> usize {
    usize::try_from(live)
        .unwrap_or(MAX_CHUNK)
        .clamp(MIN_CHUNK, MAX_CHUNK)
        .next_power_of_two()
        .min(MAX_CHUNK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(n: usize, len: usize) -> Bytes {
        Bytes::from((0..len).map(|i| (n * 31 + i) as u8).collect::<Vec<u8>>())
    }

    #[test]
    fn order_and_content_survive_chunk_boundaries() {
        let mut arena = Arena::default();
        let mut live = 0;
        let mut placed = Vec::new();
        // 100 B payloads do not divide 1 KiB chunks: several boundaries are crossed.
        for n in 0..200 {
            let data = payload(n, 100 + n % 7);
            placed.push((arena.append(data.clone(), live), data));
            live += 100 + (n % 7) as u64;
        }
        assert!(arena.segments() >= 5, "filled chunks were sealed");
        for (pos, data) in &placed {
            assert_eq!(arena.get(*pos, data.len()).as_ref(), Some(data));
        }
    }

    #[test]
    fn reads_interleaved_with_appends_seal_without_copying_twice() {
        let mut arena = Arena::default();
        let first = payload(1, 64);
        let a = arena.append(first.clone(), 0);
        let got = arena.get(a, 64);
        assert_eq!(got.as_ref(), Some(&first));
        // The next payload lands in the same chunk, right after the sealed part.
        let second = payload(2, 64);
        let b = arena.append(second.clone(), 64);
        assert_eq!(b, a + 64);
        let got2 = arena.get(b, 64);
        assert_eq!(got2.as_ref(), Some(&second));
        let (Some(got), Some(got2)) = (got, got2) else {
            panic!("payloads present")
        };
        assert_eq!(
            got.as_ptr().wrapping_add(64),
            got2.as_ptr(),
            "both payloads share one chunk"
        );
        // Reading again returns the same bytes, no further sealing needed.
        assert_eq!(arena.get(a, 64).as_ref(), Some(&first));
        assert_eq!(arena.segments(), 2);
    }

    #[test]
    fn large_payloads_are_kept_without_a_copy() {
        let mut arena = Arena::default();
        let small = payload(1, 10);
        let big = payload(2, COPY_LIMIT * 3);
        let s = arena.append(small.clone(), 0);
        let b = arena.append(big.clone(), 10);
        let after = arena.append(small.clone(), 10 + big.len() as u64);
        let got = arena.get(b, big.len());
        assert_eq!(got.as_ref().map(|g| g.as_ptr()), Some(big.as_ptr()));
        assert_eq!(got.as_ref(), Some(&big));
        assert_eq!(arena.get(s, 10).as_ref(), Some(&small));
        assert_eq!(arena.get(after, 10).as_ref(), Some(&small));
    }

    #[test]
    fn chunks_grow_with_the_queue() {
        assert_eq!(chunk_size(0), MIN_CHUNK);
        assert_eq!(chunk_size(3000), 4096);
        assert_eq!(chunk_size(10 << 20), MAX_CHUNK);
        assert_eq!(chunk_size(u64::MAX), MAX_CHUNK);
    }

    #[test]
    fn passed_segments_are_released_and_clear_frees_big_chunks() {
        let mut arena = Arena::default();
        let mut live = 0;
        let mut positions = Vec::new();
        for n in 0..2000 {
            positions.push(arena.append(payload(n, 100), live));
            live += 100;
        }
        let held = arena.held();
        assert!(held >= 200_000);
        if let Some(&pos) = positions.get(1500) {
            arena.release_before(pos);
        }
        // Everything before the segment holding position 150,000 is gone.
        assert!(arena.held() < held - 100_000, "{} of {held}", arena.held());
        arena.clear();
        assert_eq!(arena.held(), 0, "a big active chunk is freed");
        let pos = arena.append(payload(7, 5), 0);
        assert_eq!(arena.held(), MIN_CHUNK, "the next chunk starts small");
        assert_eq!(arena.get(pos, 5), Some(payload(7, 5)));
    }
}
