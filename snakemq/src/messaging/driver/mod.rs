//! The async shell around one connection: moves bytes between the socket and the sans-IO
//! protocol core, feeds received messages to the application and queued messages to the
//! peer.
//!
//! One task per connection. Each turn of the loop handles everything that is ready (a
//! burst of buffered packets, a wake-up for new messages, a timer), then sends what the
//! turn produced in one write: many messages and one batched ACK frame per syscall.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use snakemq_link::{ConnInfo, Connection, PacketReader, PacketWriter};
use snakemq_storage::Expiry;
use tokio::time::Instant;
use tracing::Instrument;

mod inbound;
mod outbound;

use super::confirmations::Confirmations;
use super::event::{DropReason, Event};
use super::state::Shared;
use crate::Error;
use crate::proto::{self, ConnectionConfig, Uuid};

/// Packets handled per turn before the driver looks at timers and the queue again.
const PACKETS_PER_TURN: usize = 512;
/// Messages at least this large are queued to the writer without being copied.
const DIRECT_PAYLOAD: usize = 64 * 1024;
/// How long messages to a peer without acks (a Python peer) are held after it identified.
///
/// Python snakeMQ 1.6 closes a connection whose identity is already connected, but keeps
/// processing the rest of that read; a MESSAGE in the same read then crashes the Python
/// process. Giving it time to read our IDENTIFICATION alone (and to close a duplicate)
/// before the first MESSAGE avoids that.
const LEGACY_FIRST_SEND_DELAY: Duration = Duration::from_millis(150);
/// Longest wait for the writer to flush when a connection ends.
const FLUSH_ON_CLOSE: Duration = Duration::from_secs(5);
/// Where the connection's timer rests while the protocol has no deadline.
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// Runs one connection to its end.
pub(crate) async fn drive(shared: Arc<Shared>, conn: Connection) {
    let (info, reader, writer) = conn.into_parts();
    let span = tracing::info_span!("conn", id = %info.id, remote = %info.remote, peer = tracing::field::Empty);
    // A span no subscriber wants is still entered and left at every poll, and with
    // tracing's `log` feature (which a dependency turns on) each of those asks `log`
    // whether it should record it: about 300 instructions per RPC call, four polls.
    // `Span::none()` skips all of it.
    let span = if span.is_disabled() {
        tracing::Span::none()
    } else {
        span
    };
    let settings = &shared.settings;
    let config = ConnectionConfig::new(settings.identity.clone())
        .acks(settings.acks)
        .keepalive(settings.keepalive)
        .handshake_timeout(settings.handshake_timeout)
        // Acknowledgements wait for the driver to go idle (see `run`), not for a timer.
        .ack_delay(None);
    let wake = shared.drivers.register();
    let mut driver = Driver {
        proto: proto::Connection::new(config, now()),
        shared: shared.clone(),
        info,
        writer,
        peer: None,
        acks: false,
        confirmations: Arc::new(Confirmations::new(wake.clone())),
        wake,
        evicted: Arc::new(AtomicBool::new(false)),
        chunks: Vec::new(),
        delivered_on_write: Vec::new(),
        scratch: Scratch::default(),
        hold_until: None,
        in_flight_seen: 0,
        pump_drained: false,
    };
    async move {
        let outcome = driver.run(reader).await;
        driver.finish(outcome).await;
    }
    .instrument(span)
    .await;
}

/// Identity binding: a peer that proved a certificate may only claim a name in it. Runs
/// before the peer is registered, so nothing queued for `identity` reaches an impostor.
#[cfg(feature = "tls")]
fn check_identity_binding(info: &ConnInfo, identity: &str) -> Result<(), Error> {
    let Some(leaf) = info.peer_certificates.first() else {
        return Ok(());
    };
    let names = snakemq_link::tls::certificate_names(leaf)?;
    if names.matches(identity) {
        return Ok(());
    }
    Err(Error::IdentityMismatch {
        identity: identity.to_owned(),
        names: names.identity_names().to_vec(),
    })
}

/// Without TLS support the link never verifies a certificate, so there is nothing to bind.
#[cfg(not(feature = "tls"))]
fn check_identity_binding(_info: &ConnInfo, _identity: &str) -> Result<(), Error> {
    Ok(())
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// Buffers a driver reuses from turn to turn: a turn that receives or sends a message
/// allocated half a dozen short-lived vectors for these before (about a tenth of the
/// allocations of an RPC call, one call outstanding).
#[derive(Default)]
struct Scratch {
    /// Messages read this turn.
    frames: Vec<proto::MessageFrame>,
    /// Whether each of them came as an UNACKED_MESSAGE.
    unacked: Vec<bool>,
    /// Whether each of them is new (not a duplicate).
    fresh: Vec<bool>,
    /// The ones the tap took.
    tapped: Vec<Uuid>,
    /// Sequence numbers of acknowledged messages.
    seqs: Vec<u64>,
    /// Records read from the queue for sending.
    records: Vec<snakemq_storage::Record>,
    /// Replies of the tap, written outside the queue.
    replies: Vec<super::tap::Unqueued>,
    /// Ids the application confirmed, taken from [`Driver::confirmations`].
    confirmed: Vec<Uuid>,
    /// Messages handed over by `Messaging::send_unqueued`, written outside the queue.
    unqueued: Vec<super::tap::Unqueued>,
}

/// Why a connection ended without an error worth reporting.
enum Ended {
    PeerClosed,
    Shutdown,
    Evicted,
}

struct Driver {
    shared: Arc<Shared>,
    info: ConnInfo,
    proto: proto::Connection,
    writer: PacketWriter,
    /// The peer's identity once it identified and was registered.
    peer: Option<Arc<str>>,
    acks: bool,
    wake: Arc<super::wake::DriverWake>,
    evicted: Arc<AtomicBool>,
    /// Whole packets waiting to be written before the protocol's transmit buffer (large
    /// payloads kept out of the copy).
    chunks: Vec<Bytes>,
    /// Messages to a peer without acks, reported delivered once written.
    delivered_on_write: Vec<Uuid>,
    /// Buffers reused from turn to turn.
    scratch: Scratch,
    /// No messages go out before this instant (see [`LEGACY_FIRST_SEND_DELAY`]).
    hold_until: Option<Instant>,
    /// Receipts of the application send the ids it is done with here.
    confirmations: Arc<Confirmations>,
    /// How many messages its peer's link had in flight when the driver last changed
    /// them (`pump` adds, `acked` removes; nothing else does): while zero, an ACK matches
    /// nothing (the tap's replies and unqueued calls are not in flight, and their ACKs
    /// are two per RPC call) and is ignored without the lock and the peer's look-up.
    in_flight_seen: usize,
    /// Whether the last `pump` found nothing to send (its peer's queue drained). Until the
    /// driver is woken (a send queued something or handed over an unqueued message; both
    /// notify it), an acknowledgement frees room in flight, the peer registers or a hold
    /// ends, the next pump would find nothing either, and its lock and look-up of the
    /// peer are skipped: two of the three turns of an RPC call.
    pump_drained: bool,
}

impl Driver {
    async fn run(&mut self, mut reader: PacketReader) -> Result<Ended, Error> {
        let shared = self.shared.clone();
        // What `reader` had read when the protocol last heard of it (keepalive).
        let mut bytes_seen = reader.bytes_received();
        // And what the writer had written: a backlog draining is a sign of life too.
        let mut written_seen = self.writer.write_progress().0;
        self.flush().await?;
        // One timer for the connection's life, moved only when the protocol's deadline
        // comes earlier than the one armed: the keepalive deadline moves later with every
        // packet, and a new timer per turn cost two timer-wheel operations per turn. A
        // timer that fires before the current deadline finds nothing due and is re-armed.
        let timer = tokio::time::sleep_until(Instant::now() + NEVER);
        tokio::pin!(timer);
        // Shutdown, new messages and an eviction wake the driver through its
        // `DriverWake` (see `wake.rs`); shutdown is the token's flag, looked at first.
        let wake = self.wake.clone();
        // Whether senders can be woken while this driver runs (see the wake-up branch):
        // by the storage thread's group commits, or by other worker threads.
        let yield_on_wake = shared.persister.is_some()
            || tokio::runtime::Handle::current().runtime_flavor()
                != tokio::runtime::RuntimeFlavor::CurrentThread;
        let mut armed: Option<Instant> = None;
        loop {
            let deadline = match (
                self.proto.poll_timeout().map(Instant::from_std),
                self.hold_until,
            ) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(deadline) = deadline.filter(|d| armed.is_none_or(|a| *d < a)) {
                timer.as_mut().reset(deadline);
                armed = Some(deadline);
            }
            // Acknowledgements ride with the next outgoing data. When nothing else is ready,
            // the tasks that are ready get one turn first (the application answering a
            // request queues its reply, and the request's ack leaves in the same write),
            // then they go out alone. Under load they batch by themselves; when idle they
            // leave within one scheduler round, without a timer.
            let acks_waiting = self.proto.pending_acks() > 0;
            let mut acks_now = false;
            let mut woken = false;
            tokio::select! {
                biased;
                () = std::future::poll_fn(|_| {
                    // (No waker of its own: `Shared::stop` cancels, then notifies `wake`,
                    // whose branch below is polled whenever this one is pending.)
                    if shared.is_stopping() {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                }) => {
                    // What the application finished before the shutdown is acknowledged
                    // (the acks go out with the final flush).
                    self.take_confirmed().await;
                    return Ok(Ended::Shutdown);
                }
                packet = reader.next() => {
                    let Some(packet) = packet? else {
                        return Ok(Ended::PeerClosed);
                    };
                    let now = now();
                    self.proto.handle_packet(packet, now);
                    bytes_seen = reader.bytes_received();
                    for _ in 1..PACKETS_PER_TURN {
                        match reader.try_next() {
                            Ok(Some(packet)) => self.proto.handle_packet(packet, now),
                            Ok(None) => break,
                            Err(error) => {
                                // What arrived before the bad prefix still counts.
                                self.process_events().await?;
                                self.flush().await?;
                                return Err(error.into());
                            }
                        }
                    }
                }
                () = std::future::poll_fn(|cx| wake.poll_notified(cx)) => {
                    woken = true;
                    // New messages were queued. Let the other tasks that are ready run first:
                    // when a group commit wakes many senders at once, each queues its message
                    // before this driver writes, so they leave in one write instead of one
                    // syscall (and one read and one ack at the peer) per message.
                    //
                    // Not on a current-thread runtime without a durable store: there every
                    // sender woken with the one that notified this driver was woken before
                    // it and runs first anyway, and the yield only cost a second poll of
                    // this task per wake-up (about 500 instructions of an RPC call).
                    if yield_on_wake {
                        yield_to_ready().await;
                    }
                }
                () = &mut timer, if armed.is_some() && !acks_waiting => {
                    armed = None;
                    let now = now();
                    // Part of a packet arrived since the last look, or the peer's side took
                    // more of a backlog of ours (its answer to a PING may wait behind it,
                    // through a throttle, when it sends nothing else): it is alive. Bytes
                    // written with nothing queued behind them prove nothing (a socket takes
                    // a PING whether or not anyone is there).
                    let received = reader.bytes_received();
                    let (written, backlog) = self.writer.write_progress();
                    if received != bytes_seen || (backlog && written != written_seen) {
                        bytes_seen = received;
                        self.proto.handle_progress(now);
                    }
                    written_seen = written;
                    self.proto.handle_timeout(now);
                    if self.hold_until.is_some_and(|t| t <= Instant::now()) {
                        self.hold_until = None;
                    }
                    self.pump_drained = false;
                }
                // (The timer above is not polled meanwhile: this branch is ready after one
                // round, and arming an earlier timer costs a wake-up syscall.)
                //
                // Tokio's own yield here, not `yield_to_ready`: it waits until the run queue
                // is empty, and only then does a current-thread runtime poll its
                // `block_on` future, often the caller that is about to send the next
                // request (which the acks then ride with).
                () = tokio::task::yield_now(), if acks_waiting => acks_now = true,
            }
            // (A turn woken for something else, one of three per RPC call, has no protocol
            // event: the call, poll and drop of `process_events`'s future are skipped.)
            if self.proto.has_events() {
                self.process_events().await?;
            }
            // Before new messages: what the application confirmed before it sent
            // something goes out first, so a peer never sees a reply ahead of the
            // acknowledgements of what the reply answers. (A confirmation notifies `wake`,
            // whose branch above ends the wait.)
            self.take_confirmed().await;
            // A send during this turn (typically a reply the tap could not write itself)
            // notified this driver; the pump below takes what it queued, so that
            // notification would only cost a turn that finds nothing. Taken before the
            // pump (a send after this point notifies again), and before the look at
            // `evicted`, which is set before its notification.
            woken |= wake.take();
            if self.evicted.load(Ordering::Acquire) {
                return Ok(Ended::Evicted);
            }
            if woken || !self.pump_drained {
                self.pump().await;
            }
            if acks_now {
                self.flush_all().await?;
            } else {
                self.flush().await?;
            }
        }
    }

    /// Unregisters the peer, reports how the connection ended, flushes and closes.
    async fn finish(mut self, outcome: Result<Ended, Error>) {
        match &outcome {
            Ok(Ended::PeerClosed) => tracing::debug!("peer closed the connection"),
            Ok(Ended::Shutdown) => tracing::debug!("closing for shutdown"),
            Ok(Ended::Evicted) => tracing::info!("replaced by a newer connection of the same peer"),
            Err(error) => tracing::info!(%error, "closing connection"),
        }
        // Whatever the protocol still wants to say (INCOMPATIBLE_PROTOCOL, acks) goes out.
        let _ = self.flush_all().await;
        let mut events = Vec::new();
        if let Some(peer) = self.peer.take() {
            self.unregister(&peer, &mut events);
            if let Some(tap) = self.shared.tap.get() {
                tap.disconnected(&peer);
            }
            events.push(Event::Disconnected {
                peer: peer.clone(),
                info: self.info.clone(),
            });
            if let Err(error) = outcome {
                events.insert(
                    0,
                    Event::Error {
                        conn: Some(self.info.clone()),
                        peer: Some(peer),
                        error: Arc::new(error),
                    },
                );
            }
        } else if let Err(error) = outcome {
            events.push(Event::Error {
                conn: Some(self.info.clone()),
                peer: None,
                error: Arc::new(error),
            });
        }
        self.shared.sweep.notify_one();
        self.shared.report_all(events).await;
        let _ = tokio::time::timeout(FLUSH_ON_CLOSE, self.writer.finish()).await;
    }

    /// Removes our registration (unless a newer connection replaced it) and drops the
    /// `ttl = 0` messages that were only valid while this connection lasted.
    fn unregister(&mut self, peer: &Arc<str>, events: &mut Vec<Event>) {
        let mut state = self.shared.lock();
        let state = &mut *state;
        let ours = state
            .peers
            .get(peer)
            .is_some_and(|l| l.conn == self.info.id);
        if !ours {
            return;
        }
        state.peers.remove(peer);
        let mut page = Vec::new();
        let mut after = None;
        let mut doomed = Vec::new();
        loop {
            page.clear();
            if state.store.read(peer, after, 4096, &mut page).is_err() {
                break;
            }
            let Some(last) = page.last() else {
                break;
            };
            after = Some(last.seq);
            doomed.extend(
                page.iter()
                    .filter(|r| r.expiry == Expiry::WhileConnected)
                    .map(|r| (r.seq, r.uuid)),
            );
        }
        if doomed.is_empty() {
            return;
        }
        let seqs: Vec<u64> = doomed.iter().map(|(seq, _)| *seq).collect();
        if let Err(error) = state.store.remove(peer, &seqs) {
            tracing::error!(%error, "store remove failed");
        }
        self.shared.space.notify_waiters();
        let uuids = doomed.into_iter().map(|(_, uuid)| uuid);
        events.extend(self.shared.dropped(peer, uuids, DropReason::NotConnected));
    }
}

/// Lets the tasks that are ready now run before this one goes on: the task wakes itself
/// and returns `Pending` once, which puts it at the back of the runtime's run queue.
///
/// Not `tokio::task::yield_now`: that one holds the wake-up back until the runtime has
/// run out of ready tasks and polled the I/O driver, which costs a non-blocking
/// `epoll_wait` per yield. The tasks this driver waits for after a wake-up (senders woken
/// by a group commit, a handler queuing its reply) are already in the run queue; the I/O
/// driver's turn comes when it empties.
async fn yield_to_ready() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await;
}
