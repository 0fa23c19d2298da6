//! `snakemq send`: send messages to a peer and wait until they are delivered.

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use snakemq::{Event, Message, Messaging, uuid_hex};

use crate::common::{
    CliError, EXIT_UNDELIVERED, PeerArgs, StoreArgs, parse_seconds, with_deadline,
};

/// Arguments of `snakemq send`.
#[derive(Debug, clap::Args)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    peer: PeerArgs,
    #[command(flatten)]
    store: StoreArgs,
    /// The destination peer's identity.
    #[arg(long, value_name = "PEER")]
    to: String,
    /// Time to live in seconds, or `inf` (the default: no expiry). 0 means "only while
    /// the peer is connected": the command then waits for the peer before sending.
    #[arg(long, value_name = "SECONDS|inf", value_parser = parse_ttl)]
    ttl: Option<Ttl>,
    /// Set the persistent flag on every message (with --store, each is committed to the
    /// store before it counts as sent).
    #[arg(long)]
    persistent: bool,
    /// Raw flags of every message (the persistent bit is added by --persistent).
    #[arg(long, value_name = "N", default_value_t = 0)]
    flags: u32,
    /// Send N generated messages (payload: the sequence number 0..N-1) instead of MESSAGEs.
    #[arg(long, value_name = "N", conflicts_with = "messages")]
    count: Option<u64>,
    /// Pad generated payloads with '.' to BYTES.
    #[arg(long, value_name = "BYTES", requires = "count")]
    size: Option<usize>,
    /// Give up after SECONDS and exit with code 2 if some messages are undelivered
    /// (default: wait as long as it takes).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    timeout: Option<Duration>,
    /// The MESSAGE arguments are hex (for binary data).
    #[arg(long, conflicts_with = "count")]
    hex: bool,
    /// Print the id (32 hex digits) of each queued message on stdout, one per line.
    #[arg(long)]
    print_uuids: bool,
    /// The messages, one per argument. With --store and neither MESSAGEs nor --count, the
    /// command delivers what the store already holds for PEER and exits once that queue
    /// is empty.
    #[arg(value_name = "MESSAGE", required_unless_present_any = ["count", "store"])]
    messages: Vec<String>,
}

/// A `--ttl` value.
#[derive(Debug, Clone, Copy)]
enum Ttl {
    Seconds(Duration),
    Infinite,
}

fn parse_ttl(text: &str) -> Result<Ttl, String> {
    if text.eq_ignore_ascii_case("inf") {
        Ok(Ttl::Infinite)
    } else {
        parse_seconds(text).map(Ttl::Seconds)
    }
}

impl SendArgs {
    /// The payloads in order, checked before anything starts.
    fn payloads(&self) -> Result<Vec<Bytes>, CliError> {
        if let Some(count) = self.count {
            let width = self.size.unwrap_or(0);
            return Ok((0..count)
                .map(|i| Bytes::from(format!("{i:.<width$}")))
                .collect());
        }
        self.messages
            .iter()
            .map(|m| {
                if self.hex {
                    hex::decode(m)
                        .map(Bytes::from)
                        .map_err(|e| format!("MESSAGE {m:?} is not hex: {e}").into())
                } else {
                    Ok(Bytes::from(m.clone()))
                }
            })
            .collect()
    }

    fn message(&self, data: Bytes) -> Message {
        let mut message = Message::new(data).flags(self.flags);
        if let Some(Ttl::Seconds(ttl)) = self.ttl {
            message = message.ttl(ttl);
        }
        if self.persistent {
            message = message.persistent();
        }
        message
    }
}

pub(crate) async fn run(args: SendArgs) -> Result<ExitCode, CliError> {
    let payloads = args.payloads()?;
    let total = payloads.len();
    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    let builder = args.store.apply(args.peer.builder()?)?;
    let messaging = args.peer.start_with(builder).await?;
    // Subscribed before the first send, so no Delivered event can be missed.
    let mut events = messaging.events();
    if total == 0 && args.count.is_none() {
        return drain(&messaging, &mut events, &args, deadline).await;
    }
    let mut seen_peer = false;

    let only_while_connected = matches!(args.ttl, Some(Ttl::Seconds(t)) if t.is_zero());
    if only_while_connected {
        // With ttl 0 a message to a peer that is not connected is dropped at once; the
        // connection is being set up right now, so wait for it first.
        let connected = with_deadline(deadline, async {
            while let Some(event) = events.next().await {
                if matches!(&event, Event::Connected { peer, .. } if **peer == *args.to) {
                    return true;
                }
                log_event(&event);
            }
            false
        })
        .await;
        if connected != Some(true) {
            let code = give_up(&messaging, &args, total, total, false).await;
            return Ok(code);
        }
        seen_peer = true;
    }

    let mut pending = HashSet::with_capacity(total);
    let mut dropped = 0usize;
    for data in payloads {
        let uuid = messaging.send(&args.to, args.message(data)).await?;
        if args.print_uuids {
            println!("{}", uuid_hex(&uuid));
        }
        pending.insert(uuid);
        // Drain what is ready so a long run does not pile events up.
        while let Some(event) = events.try_next() {
            track(&event, &args.to, &mut pending, &mut dropped, &mut seen_peer);
        }
    }

    let finished = with_deadline(deadline, async {
        while !pending.is_empty() {
            let Some(event) = events.next().await else {
                return;
            };
            track(&event, &args.to, &mut pending, &mut dropped, &mut seen_peer);
        }
    })
    .await;
    if finished.is_none() || !pending.is_empty() {
        let code = give_up(&messaging, &args, pending.len() + dropped, total, seen_peer).await;
        return Ok(code);
    }
    messaging.shutdown().await;
    if dropped > 0 {
        eprintln!(
            "snakemq: {dropped} of {total} messages to {} were dropped",
            args.to
        );
        return Ok(ExitCode::from(EXIT_UNDELIVERED));
    }
    tracing::info!("{total} messages delivered to {}", args.to);
    Ok(ExitCode::SUCCESS)
}

/// Delivers what the store already holds for `--to` and returns once that queue is empty
/// (checked at start and after every delivery or drop of one of its messages).
async fn drain(
    messaging: &Messaging,
    events: &mut snakemq::Events,
    args: &SendArgs,
    deadline: Option<tokio::time::Instant>,
) -> Result<ExitCode, CliError> {
    let queued = messaging.queue_stats(&args.to)?.messages;
    let mut seen_peer = false;
    let mut dropped = 0usize;
    let finished = with_deadline(deadline, async {
        loop {
            if messaging.queue_stats(&args.to)?.messages == 0 {
                return Ok::<bool, CliError>(true);
            }
            let Some(event) = events.next().await else {
                return Ok(false);
            };
            match &event {
                Event::Delivered { to, .. } if **to == *args.to => {}
                Event::Dropped { to, uuid, reason } if **to == *args.to => {
                    dropped += 1;
                    eprintln!("snakemq: message {} dropped: {reason}", uuid_hex(uuid));
                }
                Event::Connected { peer, .. } if **peer == *args.to => {
                    seen_peer = true;
                    log_event(&event);
                }
                _ => log_event(&event),
            }
        }
    })
    .await;
    if finished.transpose()? != Some(true) {
        let left = messaging.queue_stats(&args.to)?.messages;
        let left = usize::try_from(left).unwrap_or(usize::MAX);
        let queued = usize::try_from(queued).unwrap_or(usize::MAX);
        let code = give_up(messaging, args, left, queued, seen_peer).await;
        return Ok(code);
    }
    messaging.shutdown().await;
    if dropped > 0 {
        eprintln!(
            "snakemq: {dropped} of {queued} queued messages to {} were dropped",
            args.to
        );
        return Ok(ExitCode::from(EXIT_UNDELIVERED));
    }
    tracing::info!("{queued} queued messages delivered to {}", args.to);
    Ok(ExitCode::SUCCESS)
}

/// Updates the bookkeeping with one event about our messages.
fn track(
    event: &Event,
    to: &str,
    pending: &mut HashSet<snakemq::proto::Uuid>,
    dropped: &mut usize,
    seen_peer: &mut bool,
) {
    match event {
        Event::Delivered { uuid, .. } => {
            pending.remove(uuid);
        }
        Event::Dropped { uuid, reason, .. } => {
            if pending.remove(uuid) {
                *dropped += 1;
                eprintln!("snakemq: message {} dropped: {reason}", uuid_hex(uuid));
            }
        }
        Event::Connected { peer, .. } if **peer == *to => {
            *seen_peer = true;
            log_event(event);
        }
        _ => log_event(event),
    }
}

fn log_event(event: &Event) {
    match event {
        Event::ConnectionFailed { failure } => {
            crate::common::log_connection_failure(event, failure)
        }
        Event::Error { .. } => tracing::warn!("{event}"),
        _ => tracing::info!("{event}"),
    }
}

/// Reports the undelivered messages (naming the peer and where it was looked for) and
/// shuts down; the queued messages are lost with the process unless they are persistent
/// and in a --store.
async fn give_up(
    messaging: &Messaging,
    args: &SendArgs,
    undelivered: usize,
    total: usize,
    seen_peer: bool,
) -> ExitCode {
    let seconds = args.timeout.map_or(0.0, |t| t.as_secs_f64());
    let mut line = format!(
        "snakemq: timed out after {seconds} s: {undelivered} of {total} messages to {} undelivered",
        args.to
    );
    if !seen_peer {
        line.push_str(&format!("; peer {} never connected", args.to));
        if !args.peer.connect.is_empty() {
            line.push_str(&format!(" (tried {})", args.peer.connect_list()));
        } else if !args.peer.bind.is_empty() {
            line.push_str(&format!(" (waited on {})", args.peer.bind.join(", ")));
        }
    }
    if let Some(store) = &args.store.store {
        if args.persistent || (args.messages.is_empty() && args.count.is_none()) {
            line.push_str(&format!(
                "; the persistent ones stay queued in {}",
                store.display()
            ));
        }
    }
    eprintln!("{line}");
    messaging.shutdown().await;
    ExitCode::from(EXIT_UNDELIVERED)
}
