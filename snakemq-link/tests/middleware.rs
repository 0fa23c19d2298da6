//! Middleware on a real link: the throttle's rate holds (per connection, shared, on reads),
//! the trace counters match what was sent, a user-written layer stacks with both, and a
//! `ServiceBuilder` puts its first layer nearest the socket.
//!
//! Rate tests run with paused time on the memory transport: the clock only moves when
//! every task waits for a timer, so the measured rates are the throttle's alone and the
//! tests take no real time.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use snakemq_link::middleware::{
    Layer, Service, ServiceBuilder, SharedBudget, ThrottleDirection, ThrottleLayer, TraceLayer,
};
use snakemq_link::{
    BoxRead, BoxWrite, ByteStream, Connection, Incoming, Link, LinkConfig, PacketReader,
    PacketWriter,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, timeout};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TestResult = Result<(), BoxError>;

/// Bound of a wait for something that must happen (virtual time in paused tests).
const WAIT: Duration = Duration::from_secs(120);
/// The rate of the throttle tests, bytes per second.
const RATE: u64 = 20_000;
/// Largest relative rate error accepted.
const TOLERANCE: f64 = 0.10;

async fn next_conn(incoming: &mut Incoming) -> Result<Connection, BoxError> {
    timeout(WAIT, incoming.next())
        .await?
        .ok_or_else(|| "incoming queue closed".into())
}

/// A server with `server_config` on `memory:NAME` and `clients` connections to it from a
/// client link with `client_config`; returns the (server, client) sides of each.
async fn connect(
    name: &str,
    server_config: LinkConfig,
    client_config: LinkConfig,
    clients: usize,
) -> Result<(Link, Link, Vec<(Connection, Connection)>), BoxError> {
    let endpoint = format!("memory:{name}").parse()?;
    let (server, mut accepted) = Link::new(server_config);
    server.listen(&endpoint).await?;
    let (client, mut connected) = Link::new(client_config);
    let mut pairs = Vec::new();
    for _ in 0..clients {
        client.connect(endpoint.clone())?;
        let c = next_conn(&mut connected).await?;
        let s = next_conn(&mut accepted).await?;
        pairs.push((s, c));
    }
    Ok((server, client, pairs))
}

/// Packets of varied sizes (a large one included, which the writer sends without a copy),
/// `total` body bytes or a little more.
fn workload(total: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut sent = 0;
    let mut i: usize = 0;
    while sent < total {
        let len = if i == 3 { 70_000 } else { (i * 977) % 3000 + 1 };
        out.push(Bytes::from(
            (0..len)
                .map(|j| (i.wrapping_mul(31) ^ j) as u8)
                .collect::<Vec<u8>>(),
        ));
        sent += len;
        i += 1;
    }
    out
}

/// Bytes on the wire for `packets`: bodies and their 4-byte prefixes.
fn wire_bytes(packets: &[Bytes]) -> u64 {
    packets.iter().map(|p| p.len() as u64 + 4).sum()
}

/// Queues every packet on `writer` (in a task, so the reader runs at the same time).
fn send_all(writer: PacketWriter, packets: Vec<Bytes>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for packet in packets {
            if writer.send_packet(packet).await.is_err() {
                return;
            }
        }
        writer.finish().await;
    })
}

/// Reads `expected` in order and checks every byte; returns when the last one arrived.
async fn receive_all(mut reader: PacketReader, expected: Vec<Bytes>) -> Result<Instant, BoxError> {
    for (i, want) in expected.iter().enumerate() {
        let got = timeout(WAIT, reader.next())
            .await??
            .ok_or_else(|| format!("stream ended before packet {i}"))?;
        if got != want {
            return Err(format!("packet {i} differs").into());
        }
    }
    Ok(Instant::now())
}

/// The relative error of `bytes` over `elapsed` against `rate`, printed for the record.
fn rate_error(what: &str, bytes: u64, elapsed: Duration, rate: u64) -> f64 {
    let measured = bytes as f64 / elapsed.as_secs_f64();
    let error = (measured - rate as f64).abs() / rate as f64;
    println!(
        "{what}: {bytes} bytes in {elapsed:?} = {measured:.0} B/s against {rate} B/s, error {:.2}%",
        error * 100.0
    );
    error
}

/// Sends 400 KB from the server to the client of one connection (`server` and `client` are
/// their link settings) and checks that it took `RATE` within the tolerance.
async fn one_connection_holds_the_rate(
    name: &str,
    what: &str,
    server: LinkConfig,
    client: LinkConfig,
) -> TestResult {
    let (_server, _client, mut pairs) = connect(name, server, client, 1).await?;
    let (s, c) = pairs.pop().ok_or("no connection")?;
    let (_, _, writer) = s.into_parts();
    let (_, reader, _) = c.into_parts();
    let packets = workload(400_000);
    let wire = wire_bytes(&packets);
    let start = Instant::now();
    let sender = send_all(writer, packets.clone());
    let done = receive_all(reader, packets).await?;
    sender.await?;
    let error = rate_error(what, wire, done - start, RATE);
    assert!(error < TOLERANCE, "rate off by {:.1}%", error * 100.0);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn per_connection_rate_holds_within_ten_percent() -> TestResult {
    let config = LinkConfig::default().middleware(ThrottleLayer::per_connection(RATE));
    one_connection_holds_the_rate(
        "mw-rate-one",
        "per connection",
        config,
        LinkConfig::default(),
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn shared_budget_holds_across_two_connections() -> TestResult {
    let budget = SharedBudget::new(RATE);
    let config = LinkConfig::default().middleware(ThrottleLayer::shared(budget));
    let (_server, _client, pairs) =
        connect("mw-rate-shared", config, LinkConfig::default(), 2).await?;
    let packets = workload(200_000);
    let wire = wire_bytes(&packets);
    let start = Instant::now();
    let mut receivers = Vec::new();
    for (s, c) in pairs {
        let (_, _, writer) = s.into_parts();
        let (_, reader, _) = c.into_parts();
        let _sender = send_all(writer, packets.clone());
        receivers.push(tokio::spawn(receive_all(reader, packets.clone())));
    }
    let mut finished = Vec::new();
    for receiver in receivers {
        finished.push(receiver.await?? - start);
    }
    let last = finished.iter().max().copied().ok_or("no connection")?;
    let first = finished.iter().min().copied().ok_or("no connection")?;
    let error = rate_error("shared by two", 2 * wire, last, RATE);
    assert!(error < TOLERANCE, "rate off by {:.1}%", error * 100.0);
    // Served in turn: neither connection gets the budget to itself for long.
    assert!(
        first.as_secs_f64() > 0.9 * last.as_secs_f64(),
        "one connection finished at {first:?}, the other at {last:?}"
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn read_throttle_rate_holds_within_ten_percent() -> TestResult {
    let config = LinkConfig::default()
        .middleware(ThrottleLayer::per_connection(RATE).direction(ThrottleDirection::Read));
    one_connection_holds_the_rate("mw-rate-read", "reads", LinkConfig::default(), config).await
}

#[tokio::test]
async fn trace_counters_equal_the_bytes_sent() -> TestResult {
    let (client_trace, server_trace) = (TraceLayer::new(), TraceLayer::new());
    let (client_stats, server_stats) = (client_trace.stats(), server_trace.stats());
    let (_server, _client, mut pairs) = connect(
        "mw-trace",
        LinkConfig::default().middleware(server_trace),
        LinkConfig::default().middleware(client_trace),
        1,
    )
    .await?;
    let (s, c) = pairs.pop().ok_or("no connection")?;
    assert_eq!(
        (client_stats.connections(), client_stats.open_connections()),
        (1, 1)
    );
    let (_, s_reader, s_writer) = s.into_parts();
    let (_, c_reader, c_writer) = c.into_parts();
    let up = workload(300_000);
    let down = workload(50_000);
    let (up_wire, down_wire) = (wire_bytes(&up), wire_bytes(&down));
    let (up_count, down_count) = (up.len() as u64, down.len() as u64);
    let senders = [
        send_all(c_writer, up.clone()),
        send_all(s_writer, down.clone()),
    ];
    receive_all(s_reader, up).await?;
    receive_all(c_reader, down).await?;
    for sender in senders {
        sender.await?;
    }
    assert_eq!(client_stats.bytes_written(), up_wire);
    assert_eq!(client_stats.packets_written(), up_count);
    assert_eq!(client_stats.bytes_read(), down_wire);
    assert_eq!(client_stats.packets_read(), down_count);
    assert_eq!(server_stats.bytes_read(), up_wire);
    assert_eq!(server_stats.packets_read(), up_count);
    assert_eq!(server_stats.bytes_written(), down_wire);
    assert_eq!(server_stats.packets_written(), down_count);
    // Both halves of both ends are gone (readers dropped, writers finished).
    assert_eq!(client_stats.open_connections(), 0);
    assert_eq!(server_stats.open_connections(), 0);
    Ok(())
}

/// A user-written layer: counts the bytes each direction passes. The full form (a `Layer`
/// type and its `Service`), as a reusable layer would be written.
#[derive(Clone, Default)]
struct CountLayer {
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

#[derive(Clone)]
struct Count<S> {
    inner: S,
    counters: CountLayer,
}

impl<S> Layer<S> for CountLayer {
    type Service = Count<S>;

    fn layer(&self, inner: S) -> Count<S> {
        Count {
            inner,
            counters: self.clone(),
        }
    }
}

impl<S: Service<ByteStream>> Service<ByteStream> for Count<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut stream: ByteStream) -> S::Future {
        let written = self.counters.written.clone();
        let read = self.counters.read.clone();
        stream.write = Box::new(Tap::write(stream.write, move |b| {
            written.fetch_add(b.len() as u64, Ordering::Relaxed);
        }));
        stream.read = Box::new(Tap::read(stream.read, move |b| {
            read.fetch_add(b.len() as u64, Ordering::Relaxed);
        }));
        self.inner.call(stream)
    }
}

/// A half that shows `see` every byte it passes on, and optionally changes it (`xor`)
/// first on writes, after on reads: a stand-in for a compressing layer.
struct Tap<H, F> {
    inner: H,
    see: F,
    xor: u8,
}

impl<F: FnMut(&[u8])> Tap<BoxWrite, F> {
    fn write(inner: BoxWrite, see: F) -> Self {
        Tap { inner, see, xor: 0 }
    }
}

impl<F: FnMut(&[u8])> Tap<BoxRead, F> {
    fn read(inner: BoxRead, see: F) -> Self {
        Tap { inner, see, xor: 0 }
    }
}

impl<F: FnMut(&[u8]) + Unpin> AsyncWrite for Tap<BoxWrite, F> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = if this.xor == 0 {
            ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?
        } else {
            // Test code: a copy per write is fine here.
            let changed: Vec<u8> = buf.iter().map(|b| b ^ this.xor).collect();
            ready!(Pin::new(&mut this.inner).poll_write(cx, &changed))?
        };
        (this.see)(buf.get(..n).unwrap_or(buf));
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<F: FnMut(&[u8]) + Unpin> AsyncRead for Tap<BoxRead, F> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let xor = this.xor;
        for byte in buf.filled_mut().iter_mut().skip(before) {
            *byte ^= xor;
        }
        (this.see)(buf.filled().get(before..).unwrap_or(&[]));
        Poll::Ready(Ok(()))
    }
}

type Log = Arc<Mutex<Vec<u8>>>;

fn record(log: &Log, bytes: &[u8]) {
    log.lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend_from_slice(bytes);
}

fn seen(log: &Log) -> Vec<u8> {
    log.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A `map_request` closure that taps both halves: writes into `out`, reads into `inn`,
/// xoring with `xor`.
fn tap(
    xor: u8,
    out: &Log,
    inn: &Log,
) -> impl Fn(ByteStream) -> ByteStream + Clone + Send + Sync + 'static {
    let (out, inn) = (out.clone(), inn.clone());
    move |mut stream: ByteStream| {
        let (out, inn) = (out.clone(), inn.clone());
        let mut write = Tap::write(stream.write, move |b| record(&out, b));
        write.xor = xor;
        let mut read = Tap::read(stream.read, move |b| record(&inn, b));
        read.xor = xor;
        stream.write = Box::new(write);
        stream.read = Box::new(read);
        stream
    }
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

#[tokio::test]
async fn service_builder_puts_the_first_layer_nearest_the_socket() -> TestResult {
    let logs: [Log; 4] = Default::default();
    let [socket_out, socket_in, link_out, link_in] = &logs;
    let (socket_trace, link_trace) = (TraceLayer::new(), TraceLayer::new());
    let (socket_stats, link_stats) = (socket_trace.stats(), link_trace.stats());
    let client = LinkConfig::default().middleware(
        ServiceBuilder::new()
            .layer(socket_trace)
            .map_request(tap(0, socket_out, socket_in))
            .map_request(tap(0x5a, &Log::default(), &Log::default()))
            .map_request(tap(0, link_out, link_in))
            .layer(link_trace),
    );
    // The server undoes the xor so that both ends see the same packets.
    let server = LinkConfig::default().middleware(ServiceBuilder::new().map_request(tap(
        0x5a,
        &Log::default(),
        &Log::default(),
    )));
    let (_server, _client, mut pairs) = connect("mw-order", server, client, 1).await?;
    let (s, c) = pairs.pop().ok_or("no connection")?;
    let (_, mut s_reader, s_writer) = s.into_parts();
    let (_, mut c_reader, c_writer) = c.into_parts();
    c_writer.send_packet(Bytes::from_static(b"hello")).await?;
    assert_eq!(s_reader.next().await?.as_deref(), Some(&b"hello"[..]));
    s_writer.send_packet(Bytes::from_static(b"world")).await?;
    assert_eq!(c_reader.next().await?.as_deref(), Some(&b"world"[..]));

    let xored = |b: &[u8]| b.iter().map(|b| b ^ 0x5a).collect::<Vec<u8>>();
    // Nearest the link: the packets as the link wrote and reads them.
    assert_eq!(seen(link_out), framed(b"hello"));
    assert_eq!(seen(link_in), framed(b"world"));
    // Nearest the socket: after the xor layer on the way out, before it on the way in.
    assert_eq!(seen(socket_out), xored(&framed(b"hello")));
    assert_eq!(seen(socket_in), xored(&framed(b"world")));
    // So only the trace nearest the link can follow the packets.
    assert_eq!(
        (link_stats.packets_written(), link_stats.packets_read()),
        (1, 1)
    );
    assert_eq!(
        (socket_stats.bytes_written(), socket_stats.bytes_read()),
        (9, 9)
    );
    assert_eq!(
        (socket_stats.packets_written(), socket_stats.packets_read()),
        (0, 0)
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn user_layer_stacks_with_throttle_and_trace() -> TestResult {
    let count = CountLayer::default();
    let trace = TraceLayer::new();
    let stats = trace.stats();
    let client = LinkConfig::default().middleware(
        ServiceBuilder::new()
            .layer(ThrottleLayer::per_connection(RATE))
            .layer(count.clone())
            .layer(trace),
    );
    let (_server, _client, mut pairs) =
        connect("mw-user-layer", LinkConfig::default(), client, 1).await?;
    let (s, c) = pairs.pop().ok_or("no connection")?;
    let (_, reader, _) = s.into_parts();
    let (_, _, writer) = c.into_parts();
    let packets = workload(200_000);
    let wire = wire_bytes(&packets);
    let start = Instant::now();
    let sender = send_all(writer, packets.clone());
    let done = receive_all(reader, packets).await?;
    sender.await?;
    assert_eq!(count.written.load(Ordering::Relaxed), wire);
    assert_eq!(stats.bytes_written(), wire);
    let error = rate_error("stacked", wire, done - start, RATE);
    assert!(error < TOLERANCE, "rate off by {:.1}%", error * 100.0);
    Ok(())
}

/// Over loopback TCP in real time: the bytes arrive intact and in order (no time
/// assertions here; the rate is checked with paused time above).
#[tokio::test]
async fn throttled_tcp_link_carries_packets_intact() -> TestResult {
    let config = LinkConfig::default().middleware(
        ThrottleLayer::per_connection(4 * 1024 * 1024).direction(ThrottleDirection::Both),
    );
    let (server, mut accepted) = Link::new(config.clone());
    let (_, bound) = server.listen(&"127.0.0.1:0".parse()?).await?;
    let (client, mut connected) = Link::new(config);
    client.connect(bound)?;
    let (_, reader, _) = next_conn(&mut accepted).await?.into_parts();
    let (_, _, writer) = next_conn(&mut connected).await?.into_parts();
    let packets = workload(300_000);
    let sender = send_all(writer, packets.clone());
    receive_all(reader, packets).await?;
    sender.await?;
    Ok(())
}
