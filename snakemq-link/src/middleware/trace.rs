//! [`TraceLayer`]: a tracing span per connection, an event per packet at trace level, and
//! byte and packet counters a user can read.
//!
//! - **Span** `connection` at debug level with the fields `conn`, `remote`, `transport`
//!   and `direction`; every event of the layer is emitted inside it.
//! - **Events**: `opened` and `closed` at debug level (the close reports the connection's
//!   bytes and packets in each direction); one `packet` event per packet at trace level,
//!   with `dir` (`"in"` or `"out"`) and `len` (the body size).
//! - **Counters**: [`TraceLayer::stats`] hands out a [`TraceStats`], totals over every
//!   connection the layer (and its clones) wrapped, readable at any time.
//!
//! Packets are found by following the 4-byte big-endian length prefixes as the bytes pass:
//! no buffering and no copies. The layer must therefore see the packet stream itself:
//! place it nearer the link than any layer that changes the bytes (compression,
//! encryption of a user's own), that is, later in a `ServiceBuilder` (see the
//! [`middleware`](super) docs).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower::{Layer, Service};
use tracing::Span;

use crate::connection::{BoxRead, BoxWrite};
use crate::packet::PREFIX_LEN;
use crate::stream::ByteStream;

/// Traces connections and counts their bytes and packets; see the [module docs](self).
///
/// ```
/// use snakemq_link::LinkConfig;
/// use snakemq_link::middleware::TraceLayer;
///
/// let trace = TraceLayer::new();
/// let stats = trace.stats();
/// let config = LinkConfig::default().middleware(trace);
/// // ... later, at any time:
/// println!("{} bytes out in {} packets", stats.bytes_written(), stats.packets_written());
/// # let _ = config;
/// ```
#[derive(Debug, Clone, Default)]
pub struct TraceLayer {
    stats: TraceStats,
}

impl TraceLayer {
    /// A layer with fresh counters.
    pub fn new() -> Self {
        TraceLayer::default()
    }

    /// The counters of every connection this layer and its clones wrap.
    pub fn stats(&self) -> TraceStats {
        self.stats.clone()
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Trace<S> {
        Trace {
            inner,
            stats: self.stats.clone(),
        }
    }
}

/// Byte and packet totals of a [`TraceLayer`]. Cheap to clone; clones read the same
/// counters. Bytes count when the wrapped stream accepted (written) or returned (read)
/// them; packets count when their last byte did.
#[derive(Debug, Clone, Default)]
pub struct TraceStats {
    totals: Arc<Totals>,
}

#[derive(Debug, Default)]
struct Totals {
    connections: AtomicU64,
    open: AtomicU64,
    counts: Counts,
}

/// Counters of both directions; the same shape for one connection and for the totals.
#[derive(Debug, Default)]
struct Counts {
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    packets_read: AtomicU64,
    packets_written: AtomicU64,
}

impl TraceStats {
    /// Connections wrapped so far.
    pub fn connections(&self) -> u64 {
        self.totals.connections.load(Ordering::Relaxed)
    }

    /// Wrapped connections not closed yet (both halves dropped counts as closed).
    pub fn open_connections(&self) -> u64 {
        self.totals.open.load(Ordering::Relaxed)
    }

    /// Bytes read from the wrapped streams.
    pub fn bytes_read(&self) -> u64 {
        self.totals.counts.bytes_read.load(Ordering::Relaxed)
    }

    /// Bytes written to the wrapped streams.
    pub fn bytes_written(&self) -> u64 {
        self.totals.counts.bytes_written.load(Ordering::Relaxed)
    }

    /// Whole packets read.
    pub fn packets_read(&self) -> u64 {
        self.totals.counts.packets_read.load(Ordering::Relaxed)
    }

    /// Whole packets written.
    pub fn packets_written(&self) -> u64 {
        self.totals.counts.packets_written.load(Ordering::Relaxed)
    }
}

/// The service of [`TraceLayer`]: opens the connection's span, wraps the halves, then
/// hands the stream on.
#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
    stats: TraceStats,
}

impl<S> Service<ByteStream> for Trace<S>
where
    S: Service<ByteStream>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut stream: ByteStream) -> S::Future {
        let info = &stream.info;
        let span = tracing::debug_span!(
            "connection",
            conn = %info.id,
            remote = %info.remote,
            transport = ?info.transport,
            direction = ?info.direction,
        );
        tracing::debug!(parent: &span, "opened");
        let totals = self.stats.totals.clone();
        totals.connections.fetch_add(1, Ordering::Relaxed);
        totals.open.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(ConnTrace {
            span,
            totals,
            counts: Counts::default(),
        });
        stream.write = Box::new(TracedWrite {
            inner: stream.write,
            conn: conn.clone(),
            scanner: PacketScanner::default(),
        });
        stream.read = Box::new(TracedRead {
            inner: stream.read,
            conn,
            scanner: PacketScanner::default(),
        });
        self.inner.call(stream)
    }
}

/// What both halves of one traced connection share; reports the connection closed when
/// the last half is dropped.
#[derive(Debug)]
struct ConnTrace {
    span: Span,
    totals: Arc<Totals>,
    counts: Counts,
}

impl ConnTrace {
    fn count(&self, outgoing: bool, bytes: usize, packets: u64) {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        for counts in [&self.counts, &self.totals.counts] {
            let (b, p) = if outgoing {
                (&counts.bytes_written, &counts.packets_written)
            } else {
                (&counts.bytes_read, &counts.packets_read)
            };
            b.fetch_add(bytes, Ordering::Relaxed);
            if packets > 0 {
                p.fetch_add(packets, Ordering::Relaxed);
            }
        }
    }

    /// Counts bytes that just passed and emits an event for each packet they complete.
    fn passed(&self, scanner: &mut PacketScanner, bytes: &[u8], outgoing: bool) {
        if bytes.is_empty() {
            return;
        }
        let dir = if outgoing { "out" } else { "in" };
        let packets = scanner.feed(bytes, |len| {
            tracing::trace!(parent: &self.span, dir, len, "packet");
        });
        self.count(outgoing, bytes.len(), packets);
    }
}

impl Drop for ConnTrace {
    fn drop(&mut self) {
        self.totals.open.fetch_sub(1, Ordering::Relaxed);
        let c = &self.counts;
        tracing::debug!(
            parent: &self.span,
            bytes_in = c.bytes_read.load(Ordering::Relaxed),
            bytes_out = c.bytes_written.load(Ordering::Relaxed),
            packets_in = c.packets_read.load(Ordering::Relaxed),
            packets_out = c.packets_written.load(Ordering::Relaxed),
            "closed"
        );
    }
}

/// Follows the packet framing of a byte stream fed to it in pieces of any size.
#[derive(Debug, Default)]
struct PacketScanner {
    prefix: [u8; PREFIX_LEN],
    /// Prefix bytes seen of the current packet (`PREFIX_LEN` once its size is known).
    have: usize,
    /// The current packet's body size.
    len: u32,
    /// Body bytes of the current packet still to come.
    remaining: u32,
}

impl PacketScanner {
    /// Feeds the next bytes of the stream; calls `on_packet(body size)` for every packet
    /// they complete and returns how many that was.
    fn feed(&mut self, mut bytes: &[u8], mut on_packet: impl FnMut(u32)) -> u64 {
        let mut completed = 0;
        while !bytes.is_empty() {
            if self.have < PREFIX_LEN {
                let take = (PREFIX_LEN - self.have).min(bytes.len());
                let (head, rest) = bytes.split_at_checked(take).unwrap_or((bytes, &[]));
                for &byte in head {
                    if let Some(slot) = self.prefix.get_mut(self.have) {
                        *slot = byte;
                    }
                    self.have += 1;
                }
                bytes = rest;
                if self.have == PREFIX_LEN {
                    self.len = u32::from_be_bytes(self.prefix);
                    self.remaining = self.len;
                }
            } else {
                let take = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                bytes = bytes.get(take..).unwrap_or(&[]);
                // `take` is at most `remaining`, a u32.
                self.remaining -= u32::try_from(take).unwrap_or(self.remaining);
            }
            if self.have == PREFIX_LEN && self.remaining == 0 {
                on_packet(self.len);
                completed += 1;
                self.have = 0;
            }
        }
        completed
    }
}

/// A write half that counts and traces what it passes on.
struct TracedWrite {
    inner: BoxWrite,
    conn: Arc<ConnTrace>,
    scanner: PacketScanner,
}

impl AsyncWrite for TracedWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        let passed = buf.get(..written).unwrap_or(buf);
        this.conn.passed(&mut this.scanner, passed, true);
        Poll::Ready(Ok(written))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A read half that counts and traces what it returns.
struct TracedRead {
    inner: BoxRead,
    conn: Arc<ConnTrace>,
    scanner: PacketScanner,
}

impl AsyncRead for TracedRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let fresh = buf.filled().get(before..).unwrap_or(&[]);
        this.conn.passed(&mut this.scanner, fresh, false);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(bodies: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for body in bodies {
            out.extend_from_slice(&(body.len() as u32).to_be_bytes());
            out.extend_from_slice(body);
        }
        out
    }

    #[test]
    fn scanner_finds_packets_in_pieces_of_any_size() {
        let stream = framed(&[b"hello", b"", b"x", &[7u8; 300]]);
        for piece in [1, 2, 3, 4, 5, 7, 64, stream.len()] {
            let mut scanner = PacketScanner::default();
            let mut seen = Vec::new();
            let mut total = 0;
            for chunk in stream.chunks(piece) {
                total += scanner.feed(chunk, |len| seen.push(len));
            }
            assert_eq!(seen, vec![5, 0, 1, 300], "pieces of {piece}");
            assert_eq!(total, 4);
        }
    }

    #[test]
    fn scanner_waits_for_the_end_of_a_packet() {
        let mut scanner = PacketScanner::default();
        let mut seen = Vec::new();
        assert_eq!(scanner.feed(&[0, 0, 0, 3, b'a', b'b'], |l| seen.push(l)), 0);
        assert_eq!(scanner.feed(&[b'c', 0, 0], |l| seen.push(l)), 1);
        assert_eq!(scanner.feed(&[0, 0], |l| seen.push(l)), 1);
        assert_eq!(seen, vec![3, 0]);
    }
}
