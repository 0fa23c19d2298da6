//! One established connection: its description, a packet reader and a packet writer.
//!
//! The reader is pulled by whoever drives the protocol. The writer is a cheap handle in
//! front of the write half: when nothing is queued it writes at once, in the caller's task,
//! as far as the socket takes it; whatever is left (and everything sent while something is
//! left) goes to a task that drains the queue into one buffer and writes it with one call,
//! so many small packets cost one syscall, while large bodies are written straight from
//! their own buffer without a copy. The task keeps a connection whose peer does not read
//! from blocking its owner's reading.

use std::fmt;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::LinkError;
use crate::packet::{PREFIX_LEN, PacketDecoder, packet_prefix};

/// A boxed read half of a byte stream.
pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// A boxed write half of a byte stream.
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Chunks at least this large are written directly instead of being copied into the
/// coalescing buffer.
const DIRECT_WRITE_THRESHOLD: usize = 64 * 1024;
/// The coalescing buffer is flushed once it holds this much.
const COALESCE_LIMIT: usize = 256 * 1024;
/// Chunks queued in front of the writer task before `send` waits.
const WRITE_QUEUE_CHUNKS: usize = 1024;

/// Process-unique connection number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl ConnId {
    pub(crate) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ConnId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// The kind of byte stream under a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportKind {
    /// Plain TCP.
    Tcp,
    /// The in-process memory transport.
    Memory,
    /// One bidirectional stream of a QUIC connection (feature `quic`).
    Quic,
}

/// Which side opened the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Accepted by one of our listeners.
    Inbound,
    /// Opened by one of our connectors.
    Outbound,
}

/// Facts about a connection, handed out with every connection event.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnInfo {
    /// Process-unique number.
    pub id: ConnId,
    /// The remote socket address (`None` for memory connections).
    pub remote_addr: Option<SocketAddr>,
    /// The local socket address (`None` for memory connections).
    pub local_addr: Option<SocketAddr>,
    /// A printable name of the remote end (`"127.0.0.1:4000"`, `"memory:bob"`).
    pub remote: String,
    /// The transport.
    pub transport: TransportKind,
    /// Who opened it.
    pub direction: Direction,
    /// The certificate chain the peer presented and that this side verified, DER, the
    /// peer's own certificate first (the equivalent of Python's `getpeercert`).
    ///
    /// Empty for plain transports, for a TLS peer that presented no certificate (a client
    /// of a server that does not ask for one) and when verification was turned off (the
    /// `TlsClient::insecure_python_compat_no_verification` opt-out of feature `tls`): a
    /// chain is only ever shown here once it was verified, so a non-empty list means an
    /// authenticated peer (see [`ConnInfo::peer_verified`]).
    pub peer_certificates: Vec<Bytes>,
    /// What the TLS handshake settled on; `None` for plain transports.
    pub tls: Option<TlsSessionInfo>,
}

/// The outcome of a connection's TLS handshake (feature `tls`), for logs and audits: which
/// protocol version and cipher suite protect the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsSessionInfo {
    /// The protocol version as rustls names it: `"TLSv1_3"` or `"TLSv1_2"` (QUIC always
    /// runs TLS 1.3).
    pub version: String,
    /// The cipher suite as rustls names it (`"TLS13_AES_256_GCM_SHA384"`); `None` where the
    /// transport does not report it (QUIC: quinn keeps its TLS session to itself).
    pub cipher_suite: Option<String>,
}

impl ConnInfo {
    /// A description of a new connection without addresses and certificates, for a
    /// transport built outside this crate (or a test driving a handshake by hand).
    pub fn new(transport: TransportKind, direction: Direction, remote: impl Into<String>) -> Self {
        ConnInfo {
            id: ConnId::next(),
            remote_addr: None,
            local_addr: None,
            remote: remote.into(),
            transport,
            direction,
            peer_certificates: Vec::new(),
            tls: None,
        }
    }

    /// Whether the peer proved an identity with a certificate this side verified: it is
    /// what identity binding in messaging relies on.
    pub fn peer_verified(&self) -> bool {
        !self.peer_certificates.is_empty()
    }
}

/// Fires when every part of a connection (reader, writer handles, writer task) is gone.
///
/// Connectors wait on it before reconnecting; the link uses it to count open connections.
#[derive(Debug, Clone)]
pub(crate) struct AliveToken {
    _inner: Arc<(
        oneshot::Sender<()>,
        Option<tokio::sync::OwnedSemaphorePermit>,
    )>,
}

/// The receiving side of [`AliveToken`].
pub(crate) type ClosedSignal = oneshot::Receiver<()>;

/// A token and its signal; the token also holds the connection's slot in the link's
/// connection limit, released when the connection is gone.
pub(crate) fn alive_pair(
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> (AliveToken, ClosedSignal) {
    let (tx, rx) = oneshot::channel();
    (
        AliveToken {
            _inner: Arc::new((tx, permit)),
        },
        rx,
    )
}

/// An established connection, ready to carry packets.
#[derive(Debug)]
pub struct Connection {
    info: ConnInfo,
    reader: PacketReader,
    writer: PacketWriter,
}

impl Connection {
    /// Wraps the two halves of a byte stream. Spawns the writer task on the current runtime.
    pub(crate) fn spawn(
        info: ConnInfo,
        read: BoxRead,
        write: BoxWrite,
        max_packet_size: u32,
        alive: AliveToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_CHUNKS);
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        let span = tracing::debug_span!("writer", conn = %info.id, remote = %info.remote);
        let writer_alive = alive.clone();
        let half = Arc::new(WriteHalf {
            state: Mutex::new(HalfState {
                stream: write,
                queued: 0,
                written: 0,
            }),
        });
        let task_half = half.clone();
        tokio::spawn(
            async move {
                if let Err(error) = write_loop(&task_half, rx).await {
                    tracing::debug!(%error, "write failed");
                }
                let _ = done_tx.send(true);
                drop(writer_alive);
            }
            .instrument(span),
        );
        Connection {
            reader: PacketReader {
                read,
                decoder: PacketDecoder::new(max_packet_size),
                bytes_received: 0,
                _alive: alive.clone(),
            },
            writer: PacketWriter {
                tx,
                half,
                done: done_rx,
                _alive: alive,
            },
            info,
        }
    }

    /// Facts about this connection.
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }

    /// Splits into its description, reader and writer.
    pub fn into_parts(self) -> (ConnInfo, PacketReader, PacketWriter) {
        (self.info, self.reader, self.writer)
    }
}

/// Pulls packet bodies from a connection.
pub struct PacketReader {
    read: BoxRead,
    decoder: PacketDecoder,
    bytes_received: u64,
    _alive: AliveToken,
}

impl fmt::Debug for PacketReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketReader")
            .field("buffered", &self.decoder.buffered())
            .finish()
    }
}

impl PacketReader {
    /// The next packet body; `Ok(None)` when the peer closed the stream cleanly between
    /// packets.
    ///
    /// Cancel-safe: a packet is only removed from the buffer when it is returned.
    pub async fn next(&mut self) -> Result<Option<Bytes>, LinkError> {
        loop {
            if let Some(packet) = self.decoder.next_packet()? {
                return Ok(Some(packet));
            }
            let buf = self.decoder.read_buffer()?;
            let n = self.read.read_buf(buf).await?;
            self.bytes_received += n as u64;
            if n == 0 {
                let buffered = self.decoder.buffered();
                return if buffered == 0 {
                    Ok(None)
                } else {
                    Err(LinkError::TruncatedPacket { buffered })
                };
            }
        }
    }

    /// A packet that is already buffered, without reading from the socket.
    pub fn try_next(&mut self) -> Result<Option<Bytes>, LinkError> {
        self.decoder.next_packet()
    }

    /// Bytes read from the stream so far, whole packets or not. A protocol's keepalive can
    /// take a growing count as a sign of life while a large packet is still arriving (for
    /// example through a throttled link).
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received
    }
}

/// The write half, shared by the writer handles (writes at once) and the writer task
/// (writes what is queued).
struct WriteHalf {
    state: Mutex<HalfState>,
}

struct HalfState {
    stream: BoxWrite,
    /// Chunks handed to the writer task and not yet written and flushed. A handle writes
    /// at once only when this is 0, and counts here (under the same lock) what it queues:
    /// bytes never overtake bytes sent earlier.
    queued: usize,
    /// Bytes the stream took so far.
    written: u64,
}

impl WriteHalf {
    // A panic while holding the lock (inside a stream's poll) leaves nothing half-updated
    // that the count depends on; the stream reports its own state.
    fn lock(&self) -> MutexGuard<'_, HalfState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Polls the stream under the lock, never holding the lock across a wait.
    async fn with_stream<T>(
        &self,
        mut poll: impl FnMut(Pin<&mut BoxWrite>, &mut Context<'_>) -> Poll<T>,
    ) -> T {
        poll_fn(|cx| poll(Pin::new(&mut self.lock().stream), cx)).await
    }

    async fn write_all(&self, mut buf: &[u8]) -> std::io::Result<()> {
        while !buf.is_empty() {
            // Counted under the lock of the write itself: no second lock per write.
            let n = poll_fn(|cx| {
                let mut half = self.lock();
                let polled = Pin::new(&mut half.stream).poll_write(cx, buf);
                if let Poll::Ready(Ok(n)) = polled {
                    half.written += n as u64;
                }
                polled
            })
            .await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            buf = buf.get(n..).unwrap_or_default();
        }
        Ok(())
    }
}

impl fmt::Debug for WriteHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteHalf").finish_non_exhaustive()
    }
}

/// Bytes counted as queued by [`PacketWriter::try_send_raw`] and not queued yet: pass
/// them to [`PacketWriter::send_queued`]. (Dropping them instead leaves the count too
/// high, so later sends queue behind bytes that never come.)
#[derive(Debug)]
#[must_use = "pass it to PacketWriter::send_queued"]
pub struct QueuedBytes(Bytes);

/// Writes packets to a connection: at once when nothing is queued, else through the
/// connection's writer task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PacketWriter {
    tx: mpsc::Sender<Bytes>,
    half: Arc<WriteHalf>,
    done: tokio::sync::watch::Receiver<bool>,
    _alive: AliveToken,
}

impl PacketWriter {
    /// Queues one packet: the prefix is added here.
    pub async fn send_packet(&self, body: Bytes) -> Result<(), LinkError> {
        let prefix = packet_prefix(body.len())?;
        if body.len() >= DIRECT_WRITE_THRESHOLD {
            self.send_raw(Bytes::copy_from_slice(&prefix)).await?;
            self.send_raw(body).await
        } else {
            let mut buf = BytesMut::with_capacity(PREFIX_LEN + body.len());
            buf.extend_from_slice(&prefix);
            buf.extend_from_slice(&body);
            self.send_raw(buf.freeze()).await
        }
    }

    /// Queues bytes that are already framed (one or more whole packets, prefixes included).
    ///
    /// This is how a protocol sends a batch: encode many packets into one buffer, queue it
    /// once.
    ///
    /// When nothing is queued, the bytes are written at once as far as the socket takes
    /// them (a syscall in the caller's task instead of a hand-over to the writer task and
    /// a task switch: on a request/reply exchange that hand-over was a tenth of the round
    /// trip); the rest is queued.
    pub async fn send_raw(&self, framed: Bytes) -> Result<(), LinkError> {
        match self.try_send_raw(framed)? {
            None => Ok(()),
            Some(queued) => self.send_queued(queued).await,
        }
    }

    /// [`send_raw`](Self::send_raw) without waiting: writes or queues `framed` when
    /// nothing is queued (`None`), and otherwise hands it back, to be passed to
    /// [`send_queued`](Self::send_queued) (the only order-keeping way on from there).
    ///
    /// A protocol driver that writes on every turn calls this first: the future of
    /// `send_raw`, with the queue's send inside it, is built, moved and dropped for
    /// nothing when the write goes through at once (about 150 instructions per write).
    pub fn try_send_raw(&self, framed: Bytes) -> Result<Option<QueuedBytes>, LinkError> {
        if framed.is_empty() {
            return Ok(None);
        }
        let mut half = self.half.lock();
        if half.queued == 0 && !self.tx.is_closed() {
            let written = write_now(&mut half.stream, &framed)?;
            half.written += written as u64;
            let rest = framed.slice(written..);
            if rest.is_empty() && flush_now(&mut half.stream)? {
                return Ok(None);
            }
            // Queued under the lock, so nothing sent after it can be written before
            // it; an empty chunk asks the task for the flush that did not finish. The
            // queue is empty (nothing counted), so there is room.
            half.queued += 1;
            return self
                .tx
                .try_send(rest)
                .map(|()| None)
                .map_err(|_| LinkError::Closed);
        }
        // Counted under the lock: nothing sent after it writes at once before it.
        half.queued += 1;
        Ok(Some(QueuedBytes(framed)))
    }

    /// [`try_send_raw`](Self::try_send_raw) from a buffer the caller keeps: what is
    /// written at once leaves `buf` empty with its capacity, for the caller's next
    /// packets, instead of a split and a `Bytes` per write (and the buffer's
    /// re-allocation check at the next one); only bytes that have to wait are split off.
    pub fn try_send_buf(&self, buf: &mut BytesMut) -> Result<Option<QueuedBytes>, LinkError> {
        if buf.is_empty() {
            return Ok(None);
        }
        let mut half = self.half.lock();
        if half.queued == 0 && !self.tx.is_closed() {
            let written = write_now(&mut half.stream, buf)?;
            half.written += written as u64;
            if written == buf.len() && flush_now(&mut half.stream)? {
                buf.clear();
                return Ok(None);
            }
            // As in `try_send_raw`: the rest (or an empty chunk for the flush) is queued
            // under the lock, into an empty queue.
            buf.advance(written);
            half.queued += 1;
            return self
                .tx
                .try_send(buf.split().freeze())
                .map(|()| None)
                .map_err(|_| LinkError::Closed);
        }
        half.queued += 1;
        Ok(Some(QueuedBytes(buf.split().freeze())))
    }

    /// Queues what [`try_send_raw`](Self::try_send_raw) handed back, waiting for room.
    pub async fn send_queued(&self, queued: QueuedBytes) -> Result<(), LinkError> {
        self.tx.send(queued.0).await.map_err(|_| LinkError::Closed)
    }

    /// Stops queuing through this handle and waits until the writer task has flushed
    /// everything queued and shut the stream down.
    ///
    /// The task ends once every clone of this writer is gone (or the stream failed), so
    /// drop the other clones first.
    pub async fn finish(self) {
        let PacketWriter { tx, mut done, .. } = self;
        drop(tx);
        let _ = done.wait_for(|done| *done).await;
    }

    /// Bytes the stream has taken so far (written to the socket, or to the middleware or
    /// TLS layer above it), and whether more is queued behind them.
    ///
    /// A protocol's keepalive can take a growing count *with a backlog* as a sign of life:
    /// a peer whose side keeps draining a long (for example throttled) backlog of ours is
    /// there, even while its answer to a PING waits behind it. Without a backlog the count
    /// says nothing: a socket takes a few bytes (a PING) whether or not anyone is there.
    pub fn write_progress(&self) -> (u64, bool) {
        let half = self.half.lock();
        (half.written, half.queued > 0)
    }

    /// Whether the writer task has stopped (the stream failed or was shut down).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Writes as much of `buf` as the stream takes now; 0 when it would wait.
fn write_now(stream: &mut BoxWrite, buf: &[u8]) -> Result<usize, LinkError> {
    // A no-op waker: this is a try, whatever is left goes to the writer task, whose own
    // poll registers its waker (only the waker of the latest poll counts).
    let mut cx = Context::from_waker(Waker::noop());
    let mut written = 0;
    while let Some(rest) = buf.get(written..).filter(|r| !r.is_empty()) {
        match Pin::new(&mut *stream).poll_write(&mut cx, rest) {
            Poll::Ready(Ok(0)) => {
                return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
            }
            Poll::Ready(Ok(n)) => written += n,
            Poll::Ready(Err(error)) => return Err(error.into()),
            Poll::Pending => break,
        }
    }
    Ok(written)
}

/// Flushes the stream if it can now (a no-op for TCP; TLS writes its buffered records).
fn flush_now(stream: &mut BoxWrite) -> Result<bool, LinkError> {
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(stream).poll_flush(&mut cx) {
        Poll::Ready(Ok(())) => Ok(true),
        Poll::Ready(Err(error)) => Err(error.into()),
        Poll::Pending => Ok(false),
    }
}

async fn write_loop(half: &WriteHalf, mut rx: mpsc::Receiver<Bytes>) -> Result<(), LinkError> {
    let mut buf = BytesMut::with_capacity(COALESCE_LIMIT);
    while let Some(first) = rx.recv().await {
        let mut chunks = 0;
        let mut next = Some(first);
        while let Some(chunk) = next.take() {
            chunks += 1;
            if chunk.len() >= DIRECT_WRITE_THRESHOLD {
                if !buf.is_empty() {
                    half.write_all(&buf).await?;
                    buf.clear();
                }
                half.write_all(&chunk).await?;
            } else {
                buf.extend_from_slice(&chunk);
                if buf.len() >= COALESCE_LIMIT {
                    half.write_all(&buf).await?;
                    buf.clear();
                }
            }
            next = rx.try_recv().ok();
        }
        if !buf.is_empty() {
            half.write_all(&buf).await?;
            buf.clear();
        }
        half.with_stream(|s, cx| s.poll_flush(cx)).await?;
        // Written and flushed: the handles may write at once again when nothing else is
        // queued.
        let mut state = half.lock();
        state.queued = state.queued.saturating_sub(chunks);
    }
    half.with_stream(|s, cx| s.poll_shutdown(cx)).await?;
    Ok(())
}
