//! The measurements themselves, and the receiving peer's loop.

use std::time::{Duration, Instant};

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use snakemq::{Event, Events, Message, Messaging};
use tokio::sync::oneshot;

use super::{RECEIVER, Report, SENDER};
use crate::common::{CliError, StoreArgs};

/// Flag bit marking a latency ping; the receiver echoes such messages back. Throughput
/// messages carry no flags. (Bit 0 is `FLAG_PERSISTENT`; flags pass through unchanged.)
const FLAG_PING: u32 = 0x2;
/// Longest wait for the first connection to the receiver.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Deliveries between two progress bar updates (the bar takes a lock per update).
const PROGRESS_EVERY: u64 = 4096;

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The sender's store; with one, throughput messages are persistent.
    pub(crate) store: StoreArgs,
    /// TLS, QUIC and throttle settings of the connection.
    pub(crate) transport: crate::transport::TransportArgs,
    /// Sends awaited at once in the throughput run.
    pub(crate) in_flight: u64,
    /// Payload bytes per message.
    pub(crate) size: usize,
    /// Messages in the throughput run; 0 skips it.
    pub(crate) count: u64,
    /// Round trips in the latency run; 0 skips it.
    pub(crate) round_trips: u64,
    /// Longest time without any progress before giving up.
    pub(crate) stall: Duration,
    /// Whether to draw progress bars on stderr.
    pub(crate) progress: bool,
}

/// Connects to the receiver at `endpoint`, runs the plan, shuts down.
pub(crate) async fn run_sender(endpoint: &str, plan: &Plan) -> Result<Report, CliError> {
    let builder = plan
        .store
        .apply(plan.transport.connecting(SENDER, endpoint)?)?;
    let messaging = builder.start().await?;
    let mut events = messaging.events();
    let outcome = measure(&messaging, &mut events, plan).await;
    messaging.shutdown().await;
    outcome
}

async fn measure(
    messaging: &Messaging,
    events: &mut Events,
    plan: &Plan,
) -> Result<Report, CliError> {
    wait_connected(messaging, events).await?;
    // One payload, shared by every message: a clone is a reference count, not a copy.
    let payload = Bytes::from(vec![0xa5u8; plan.size]);
    let mut report = Report::default();
    if plan.count > 0 {
        report.seconds = Some(throughput(messaging, events, plan, &payload).await?);
    }
    if plan.round_trips > 0 {
        report.round_trips_us = latency(messaging, events, plan, &payload).await?;
    }
    Ok(report)
}

/// The next event, taking a ready one without waiting when there is one.
async fn next_event(events: &mut Events) -> Option<Event> {
    match events.try_next() {
        Some(event) => Some(event),
        None => events.next().await,
    }
}

/// The next event within `stall`, or an error saying what we were waiting for.
async fn next_within(
    events: &mut Events,
    stall: Duration,
    waiting_for: &str,
) -> Result<Event, CliError> {
    match tokio::time::timeout(stall, next_event(events)).await {
        Ok(Some(event)) => Ok(event),
        Ok(None) => Err("messaging stopped during the measurement".into()),
        Err(_) => Err(format!(
            "nothing happened for {} s while waiting for {waiting_for}",
            stall.as_secs()
        )
        .into()),
    }
}

async fn wait_connected(messaging: &Messaging, events: &mut Events) -> Result<(), CliError> {
    // Subscribed before the check: a connection made in between is still reported.
    if messaging.connected_peers().iter().any(|p| p == RECEIVER) {
        return Ok(());
    }
    loop {
        if let Event::Connected { peer, acks, .. } =
            next_within(events, CONNECT_TIMEOUT, "the connection to the receiver").await?
        {
            if &*peer == RECEIVER {
                if !acks {
                    tracing::warn!("the receiver does not acknowledge: delivery is not confirmed");
                }
                return Ok(());
            }
        }
    }
}

fn progress_bar(enabled: bool, len: u64, what: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{prefix} {wide_bar} {human_pos}/{human_len} {per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(len)
        .with_style(style)
        .with_prefix(what.to_owned())
}

/// Queues `plan.count` messages and waits for every acknowledgement; returns the seconds
/// from the first send to the last acknowledgement.
async fn throughput(
    messaging: &Messaging,
    events: &mut Events,
    plan: &Plan,
    payload: &Bytes,
) -> Result<f64, CliError> {
    let count = plan.count;
    let bar = progress_bar(plan.progress && count >= 10_000, count, "throughput");
    // Counting acknowledgements runs as its own task so that, on a multi-threaded runtime,
    // queueing the next messages does not wait behind event handling.
    let mut acks = {
        let mut events = events.clone();
        let stall = plan.stall;
        let bar = bar.clone();
        tokio::spawn(async move {
            let mut delivered = 0u64;
            while delivered < count {
                match next_within(&mut events, stall, "acknowledgements").await? {
                    Event::Delivered { .. } => {
                        delivered += 1;
                        if delivered % PROGRESS_EVERY == 0 {
                            bar.set_position(delivered);
                        }
                    }
                    Event::Disconnected { peer, .. } => {
                        return Err(format!(
                            "{peer} disconnected after {delivered} of {count} acknowledgements"
                        )
                        .into());
                    }
                    Event::Dropped { reason, .. } => {
                        return Err(format!("a message was dropped: {reason}").into());
                    }
                    Event::Error { error, .. } => return Err(error.to_string().into()),
                    _ => {}
                }
            }
            Ok::<Instant, CliError>(Instant::now())
        })
    };
    let persistent = plan.store.store.is_some();
    let payload = payload.clone();
    let message = move || {
        let message = Message::new(payload.clone());
        if persistent {
            message.persistent()
        } else {
            message
        }
    };
    let start = Instant::now();
    let sending = async {
        if plan.in_flight <= 1 {
            for _ in 0..count {
                messaging.send(RECEIVER, message()).await?;
            }
            return Ok::<(), CliError>(());
        }
        // `in_flight` senders, each awaiting its own sends; their persistent messages
        // meet in the storage writer's group commits.
        let mut senders = tokio::task::JoinSet::new();
        for worker in 0..plan.in_flight {
            let share = count / plan.in_flight + u64::from(worker < count % plan.in_flight);
            let messaging = messaging.clone();
            let message = message.clone();
            senders.spawn(async move {
                for _ in 0..share {
                    messaging.send(RECEIVER, message()).await?;
                }
                Ok::<(), CliError>(())
            });
        }
        while let Some(joined) = senders.join_next().await {
            joined.map_err(|e| format!("a sending task failed: {e}"))??;
        }
        Ok::<(), CliError>(())
    };
    // If acknowledgements fail (the receiver went away), a send waiting for queue space
    // must not keep us here.
    let end = tokio::select! {
        sent = sending => match sent {
            Ok(()) => {
                tracing::debug!(
                    seconds = start.elapsed().as_secs_f64(),
                    "all messages queued; waiting for the remaining acknowledgements"
                );
                (&mut acks).await
            }
            Err(error) => {
                acks.abort();
                return Err(error);
            }
        },
        done = &mut acks => done,
    };
    let end = end.map_err(|e| format!("the acknowledgement task failed: {e}"))??;
    bar.finish_and_clear();
    Ok(end.duration_since(start).as_secs_f64())
}

/// Ping-pong with one message outstanding; returns the sorted round-trip times in µs.
async fn latency(
    messaging: &Messaging,
    events: &mut Events,
    plan: &Plan,
    payload: &Bytes,
) -> Result<Vec<f64>, CliError> {
    // A few untimed round trips first: the first ones pay for cold caches and allocations.
    let warmup = (plan.round_trips / 10).min(100);
    let bar = progress_bar(
        plan.progress && plan.round_trips >= 1000,
        plan.round_trips,
        "latency",
    );
    let mut samples = Vec::with_capacity(usize::try_from(plan.round_trips).unwrap_or(0));
    for i in 0..warmup + plan.round_trips {
        let started = Instant::now();
        messaging
            .send(RECEIVER, Message::new(payload.clone()).flags(FLAG_PING))
            .await?;
        loop {
            match next_within(events, plan.stall, "an echo").await? {
                Event::Received { message, .. } if message.flags & FLAG_PING != 0 => break,
                Event::Disconnected { peer, .. } => {
                    return Err(format!("{peer} disconnected during the latency run").into());
                }
                Event::Error { error, .. } => return Err(error.to_string().into()),
                _ => {}
            }
        }
        if i >= warmup {
            samples.push(started.elapsed().as_secs_f64() * 1e6);
            if samples.len() as u64 % 256 == 0 {
                bar.set_position(samples.len() as u64);
            }
        }
    }
    bar.finish_and_clear();
    samples.sort_by(f64::total_cmp);
    Ok(samples)
}

/// The receiving peer: consumes messages and echoes pings, until the sender disconnects,
/// `stop` fires or messaging stops. Returns how many messages arrived.
pub(crate) async fn serve(
    messaging: Messaging,
    mut stop: oneshot::Receiver<()>,
) -> Result<u64, CliError> {
    let mut events = messaging.events();
    let mut received = 0u64;
    loop {
        let event = match events.try_next() {
            Some(event) => event,
            None => tokio::select! {
                _ = &mut stop => break,
                event = events.next() => match event {
                    Some(event) => event,
                    None => break,
                },
            },
        };
        match event {
            Event::Received { from, message } => {
                received += 1;
                if message.flags & FLAG_PING != 0 {
                    messaging
                        .send(&from, Message::new(message.data).flags(FLAG_PING))
                        .await?;
                }
            }
            Event::Disconnected { peer, .. } if &*peer == SENDER => break,
            _ => {}
        }
    }
    Ok(received)
}
