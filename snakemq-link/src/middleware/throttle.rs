//! [`ThrottleLayer`]: limits the bytes per second a connection may write (and optionally
//! read), per connection or with one [`SharedBudget`] for many connections.
//!
//! # What it does, and what it never does
//!
//! The layer wraps the byte stream of each connection. A write (or read) of `n` bytes is
//! let through once the token bucket has `n` bytes of budget; until then the call is
//! pending and the bytes wait in the caller's buffer. Nothing is dropped, split across
//! packets, reordered or copied: the stream carries exactly the same bytes in the same
//! order, only later. That is why messaging, acknowledgements and RPC work unchanged on a
//! throttled link (Python snakeMQ's throttle delays whole frames by holding them back and
//! re-queuing them, which breaks its messaging).
//!
//! # The bucket
//!
//! A token bucket of `rate` bytes per second holding at most `burst` bytes (default: 1/20 s
//! worth of `rate`, at least 64 bytes or one second's worth if that is less). Over any
//! interval of length `t`, at most `burst + rate * t` bytes pass. It runs on
//! [`tokio::time`], so tests can use `tokio::time::pause()` and `start_paused = true`.
//!
//! A stream reserves up to `burst` bytes at a time, then sleeps until the reservation is
//! paid for: connections that share a budget are served in the order they asked, and a
//! stream never holds more than `burst` bytes of budget it has not used yet (a reading
//! stream that is waiting for data may hold one such reservation).
//!
//! # Writes by default, reads on request
//!
//! By default only writes are limited: it is what a peer sends, and holding back our own
//! bytes is exact on every transport. [`ThrottleDirection::Read`] or
//! [`ThrottleDirection::Both`] also limit reads; on TCP the kernel's flow control then
//! slows the sender once the socket buffers fill, so a peer's burst can exceed the rate
//! by the size of those buffers. Each direction has its own bucket.
//!
//! # Under TLS
//!
//! Middleware runs on the plaintext, after the TLS handshake: the rate counts plaintext
//! bytes, the handshake itself is not throttled, and TLS records add their overhead (a few
//! dozen bytes per record of up to 16 KiB) on the wire.
//!
//! # Keepalive under a low rate
//!
//! Messaging's keepalive closes a connection when nothing arrived within `interval + wait`
//! (default 2 s + 3 s); every byte counts, whole packets or not. Bytes keep their order, so
//! under a low write rate:
//!
//! - **A large packet** needs `size / rate` seconds to arrive, and the PONG to the peer's
//!   PING waits behind the rest of it; its bytes keep arriving meanwhile, which keeps the
//!   connection alive at any size.
//! - **A long backlog towards a peer that sends nothing**: our own PING waits behind the
//!   bytes written before it. A Rust peer's acknowledgements keep arriving while messages
//!   flow, so this does not happen with acks; without them (acks off, a Python peer) a
//!   backlog that takes longer than `wait` to drain can close the connection.
//!
//! A steady flow of ordinary messages keeps both sides alive at any rate, and an idle
//! throttled connection passes its pings.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

use crate::connection::{BoxRead, BoxWrite};
use crate::stream::ByteStream;

/// The largest burst accepted: a bigger one is lowered to this (a gibibyte already
/// defeats any throttling).
const MAX_BURST: u64 = 1 << 30;

/// A rate limit: bytes per second and the burst allowed on top.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    bytes_per_sec: u64,
    burst: u64,
}

impl Rate {
    /// `bytes_per_sec` bytes per second (a 0 is raised to 1) with the default burst: 1/20 s
    /// worth, at least 64 bytes (or one second's worth if the rate is below that).
    pub fn new(bytes_per_sec: u64) -> Self {
        let bytes_per_sec = bytes_per_sec.max(1);
        let burst = (bytes_per_sec / 20).max(bytes_per_sec.min(64));
        Rate {
            bytes_per_sec,
            burst: burst.clamp(1, MAX_BURST),
        }
    }

    /// Sets the burst: the most bytes that may pass at once after an idle period (at least
    /// 1, at most 1 GiB). A larger burst means fewer, larger writes; a smaller one a
    /// smoother rate.
    pub fn burst(mut self, bytes: u64) -> Self {
        self.burst = bytes.clamp(1, MAX_BURST);
        self
    }

    /// Bytes per second.
    pub fn bytes_per_sec(&self) -> u64 {
        self.bytes_per_sec
    }

    /// The burst in bytes.
    pub fn burst_bytes(&self) -> u64 {
        self.burst
    }
}

impl From<u64> for Rate {
    fn from(bytes_per_sec: u64) -> Self {
        Rate::new(bytes_per_sec)
    }
}

/// Which directions of a connection a [`ThrottleLayer`] limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ThrottleDirection {
    /// Only what this side writes (the default).
    #[default]
    Write,
    /// Only what this side reads.
    Read,
    /// Both, each direction with its own bucket of the same rate.
    Both,
}

impl ThrottleDirection {
    fn writes(self) -> bool {
        matches!(self, ThrottleDirection::Write | ThrottleDirection::Both)
    }

    fn reads(self) -> bool {
        matches!(self, ThrottleDirection::Read | ThrottleDirection::Both)
    }
}

/// One budget shared by every connection of every [`ThrottleLayer`] made from it: their
/// writes together stay within the rate (and their reads together, when reads are
/// limited). Cheap to clone; clones share the budget.
#[derive(Clone)]
pub struct SharedBudget {
    rate: Rate,
    write: Arc<Mutex<Bucket>>,
    read: Arc<Mutex<Bucket>>,
}

impl SharedBudget {
    /// A budget of `rate` (bytes per second, or a [`Rate`] with its burst).
    pub fn new(rate: impl Into<Rate>) -> Self {
        let rate = rate.into();
        SharedBudget {
            rate,
            write: Arc::new(Mutex::new(Bucket::new(rate))),
            read: Arc::new(Mutex::new(Bucket::new(rate))),
        }
    }

    /// The rate.
    pub fn rate(&self) -> Rate {
        self.rate
    }
}

impl fmt::Debug for SharedBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBudget")
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
enum Scope {
    PerConnection(Rate),
    Shared(SharedBudget),
}

/// Limits the bytes per second of connections; see the [module docs](self).
///
/// ```
/// use snakemq_link::LinkConfig;
/// use snakemq_link::middleware::{Rate, SharedBudget, ThrottleDirection, ThrottleLayer};
///
/// // Every connection may write 64 KiB/s.
/// let each = LinkConfig::default().middleware(ThrottleLayer::per_connection(64 * 1024));
///
/// // All connections together may write 1 MiB/s and read 1 MiB/s, in bursts of 16 KiB.
/// let budget = SharedBudget::new(Rate::new(1024 * 1024).burst(16 * 1024));
/// let all = LinkConfig::default()
///     .middleware(ThrottleLayer::shared(budget).direction(ThrottleDirection::Both));
/// # let _ = (each, all);
/// ```
#[derive(Debug, Clone)]
pub struct ThrottleLayer {
    scope: Scope,
    direction: ThrottleDirection,
}

impl ThrottleLayer {
    /// Each connection gets its own budget of `rate` (bytes per second, or a [`Rate`]).
    pub fn per_connection(rate: impl Into<Rate>) -> Self {
        ThrottleLayer {
            scope: Scope::PerConnection(rate.into()),
            direction: ThrottleDirection::default(),
        }
    }

    /// Every connection draws on `budget`, together with every other layer made from a
    /// clone of it.
    pub fn shared(budget: SharedBudget) -> Self {
        ThrottleLayer {
            scope: Scope::Shared(budget),
            direction: ThrottleDirection::default(),
        }
    }

    /// Which directions are limited (default: writes only).
    pub fn direction(mut self, direction: ThrottleDirection) -> Self {
        self.direction = direction;
        self
    }
}

impl<S> Layer<S> for ThrottleLayer {
    type Service = Throttle<S>;

    fn layer(&self, inner: S) -> Throttle<S> {
        Throttle {
            inner,
            scope: self.scope.clone(),
            direction: self.direction,
        }
    }
}

/// The service of [`ThrottleLayer`]: wraps the stream's halves, then hands it on.
#[derive(Debug, Clone)]
pub struct Throttle<S> {
    inner: S,
    scope: Scope,
    direction: ThrottleDirection,
}

impl<S> Service<ByteStream> for Throttle<S>
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
        let (write, read) = match &self.scope {
            Scope::PerConnection(rate) => (
                BucketRef::Own(Bucket::new(*rate)),
                BucketRef::Own(Bucket::new(*rate)),
            ),
            Scope::Shared(budget) => (
                BucketRef::Shared(budget.write.clone()),
                BucketRef::Shared(budget.read.clone()),
            ),
        };
        // Wrapped on the way in, so layers listed earlier in a ServiceBuilder sit nearer
        // the socket (see the module docs of `middleware`).
        if self.direction.writes() {
            stream.write = Box::new(ThrottledWrite {
                inner: stream.write,
                gate: Gate::new(write),
            });
        }
        if self.direction.reads() {
            stream.read = Box::new(ThrottledRead {
                inner: stream.read,
                gate: Gate::new(read),
            });
        }
        self.inner.call(stream)
    }
}

/// A token bucket in its "virtual scheduling" form: instead of a token count it keeps the
/// instant at which every byte granted so far is paid for at the rate. Exact over long
/// runs (no rounding drift from timer wake-ups, which may come late).
#[derive(Debug)]
struct Bucket {
    rate: Rate,
    /// When all bytes granted so far are paid for; `None` before the first grant.
    paid_until: Option<Instant>,
}

impl Bucket {
    fn new(rate: Rate) -> Self {
        Bucket {
            rate,
            paid_until: None,
        }
    }

    /// The time `bytes` take at the rate.
    fn cost(&self, bytes: u64) -> Duration {
        let nanos = u128::from(bytes) * 1_000_000_000 / u128::from(self.rate.bytes_per_sec);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Reserves `wanted` bytes, or the burst if that is less, and returns how many and
    /// when they may pass: once no more than `burst` bytes granted are still unpaid.
    fn reserve(&mut self, wanted: u64, now: Instant) -> (u64, Instant) {
        let bytes = wanted.min(self.rate.burst);
        let start = self.paid_until.map_or(now, |paid| paid.max(now));
        let paid = start.checked_add(self.cost(bytes)).unwrap_or(start);
        self.paid_until = Some(paid);
        let at = paid
            .checked_sub(self.cost(self.rate.burst))
            .map_or(now, |at| at.max(now));
        (bytes, at)
    }
}

/// A bucket of one stream, or one shared with other streams.
#[derive(Debug)]
enum BucketRef {
    Own(Bucket),
    Shared(Arc<Mutex<Bucket>>),
}

impl BucketRef {
    fn reserve(&mut self, wanted: u64, now: Instant) -> (u64, Instant) {
        match self {
            BucketRef::Own(bucket) => bucket.reserve(wanted, now),
            BucketRef::Shared(shared) => lock(shared).reserve(wanted, now),
        }
    }
}

fn lock(bucket: &Mutex<Bucket>) -> std::sync::MutexGuard<'_, Bucket> {
    // The bucket holds no invariant a panic elsewhere could break.
    bucket.lock().unwrap_or_else(|e| e.into_inner())
}

/// The throttling state of one direction of one stream.
struct Gate {
    bucket: BucketRef,
    /// Bytes reserved and paid for (once `sleeping` is over) but not passed yet.
    credit: u64,
    /// Made on the first wait and re-armed after, so polling never allocates.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Whether `credit` is still waiting for `sleep`.
    sleeping: bool,
}

impl Gate {
    fn new(bucket: BucketRef) -> Self {
        Gate {
            bucket,
            credit: 0,
            sleep: None,
            sleeping: false,
        }
    }

    /// How many of `wanted` (> 0) bytes may pass now; pending until at least one may.
    fn poll_grant(&mut self, cx: &mut Context<'_>, wanted: usize) -> Poll<usize> {
        let wanted = u64::try_from(wanted).unwrap_or(u64::MAX);
        loop {
            if self.sleeping {
                if let Some(sleep) = self.sleep.as_mut() {
                    ready!(sleep.as_mut().poll(cx));
                }
                self.sleeping = false;
            }
            if self.credit > 0 {
                let granted = self.credit.min(wanted);
                return Poll::Ready(usize::try_from(granted).unwrap_or(usize::MAX));
            }
            let now = Instant::now();
            let (bytes, at) = self.bucket.reserve(wanted, now);
            self.credit = bytes;
            if at > now {
                match self.sleep.as_mut() {
                    Some(sleep) => sleep.as_mut().reset(at),
                    None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
                }
                self.sleeping = true;
            }
        }
    }

    /// `n` granted bytes have passed.
    fn spend(&mut self, n: usize) {
        self.credit = self
            .credit
            .saturating_sub(u64::try_from(n).unwrap_or(u64::MAX));
    }
}

/// A write half that waits for its bucket.
struct ThrottledWrite {
    inner: BoxWrite,
    gate: Gate,
}

impl AsyncWrite for ThrottledWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        let granted = ready!(this.gate.poll_grant(cx, buf.len()));
        let part = buf.get(..granted).unwrap_or(buf);
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, part))?;
        this.gate.spend(written);
        Poll::Ready(Ok(written))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A read half that waits for its bucket.
struct ThrottledRead {
    inner: BoxRead,
    gate: Gate,
}

impl AsyncRead for ThrottledRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let wanted = buf.remaining();
        if wanted == 0 {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let granted = ready!(this.gate.poll_grant(cx, wanted));
        let got = if granted >= wanted {
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            buf.filled().len().saturating_sub(before)
        } else {
            // A window of `granted` bytes over the caller's buffer: the data lands in
            // place, no copy. Zeroing the window (only the part never initialised) is
            // what lets this stay free of unsafe code.
            let mut window = ReadBuf::new(buf.initialize_unfilled_to(granted));
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut window))?;
            let got = window.filled().len();
            buf.advance(got);
            got
        };
        this.gate.spend(got);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_burst_is_small() {
        assert_eq!(Rate::new(0).bytes_per_sec(), 1);
        assert_eq!(Rate::new(0).burst_bytes(), 1);
        assert_eq!(Rate::new(10).burst_bytes(), 10);
        assert_eq!(Rate::new(1000).burst_bytes(), 64);
        assert_eq!(Rate::new(64 * 1024).burst_bytes(), 64 * 1024 / 20);
        assert_eq!(Rate::new(5).burst(0).burst_bytes(), 1);
        assert_eq!(Rate::new(5).burst(u64::MAX).burst_bytes(), MAX_BURST);
    }

    #[tokio::test(start_paused = true)]
    async fn reservations_follow_the_rate_after_the_burst() {
        let mut bucket = Bucket::new(Rate::new(1000).burst(100));
        let t0 = Instant::now();
        // The burst passes at once, then each 100 bytes cost 100 ms.
        assert_eq!(bucket.reserve(100, t0), (100, t0));
        assert_eq!(
            bucket.reserve(100, t0),
            (100, t0 + Duration::from_millis(100))
        );
        assert_eq!(
            bucket.reserve(50, t0),
            (50, t0 + Duration::from_millis(150))
        );
        // Never more than the burst at once.
        assert_eq!(
            bucket.reserve(1000, t0),
            (100, t0 + Duration::from_millis(250))
        );
        // Idle long enough refills the burst, and never more than it.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(bucket.reserve(100, later), (100, later));
        assert_eq!(
            bucket.reserve(100, later),
            (100, later + Duration::from_millis(100))
        );
    }

    #[test]
    fn huge_costs_do_not_overflow() {
        let bucket = Bucket::new(Rate::new(1));
        assert_eq!(bucket.cost(u64::MAX), Duration::from_nanos(u64::MAX));
    }
}
