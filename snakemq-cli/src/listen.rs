//! `snakemq listen`: receive messages from any snakeMQ peer and print them.

use std::io::Write;
use std::process::ExitCode;

use base64::Engine;
use snakemq::{Event, ReceivedMessage, uuid_hex};

use crate::common::{CliError, PeerArgs, StoreArgs};

/// Arguments of `snakemq listen`.
#[derive(Debug, clap::Args)]
pub(crate) struct ListenArgs {
    #[command(flatten)]
    peer: PeerArgs,
    /// With --store, the ids of received messages are kept there too, so a message sent
    /// again after a restart of this listener is still recognised as a duplicate.
    #[command(flatten)]
    store: StoreArgs,
    /// Exit after N messages (once their acknowledgements have been sent).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// One JSON object per message on stdout:
    /// {"from","uuid","ttl","flags","len","data"} ("data_b64" when not UTF-8).
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: ListenArgs) -> Result<ExitCode, CliError> {
    let builder = args.store.apply(args.peer.builder()?)?;
    let messaging = args.peer.start_with(builder).await?;
    let mut events = messaging.events();
    let mut received = 0u64;
    let stdout = std::io::stdout();
    while args.count.is_none_or(|count| received < count) {
        let Some(event) = events.next().await else {
            break;
        };
        match event {
            Event::Received { from, message } => {
                let line = if args.json {
                    json_line(&from, &message)
                } else {
                    human_line(&from, &message)
                };
                // Flushed per line: a reader of a pipe sees each message as it arrives.
                let mut out = stdout.lock();
                writeln!(out, "{line}")?;
                out.flush()?;
                received += 1;
            }
            Event::Connected { .. } | Event::Disconnected { .. } => {
                tracing::info!("{event}");
            }
            Event::ConnectionFailed { ref failure } => {
                crate::common::log_connection_failure(&event, failure);
            }
            Event::Error { .. } => tracing::warn!("{event}"),
            _ => tracing::debug!("{event}"),
        }
    }
    // Every printed message is done with: acknowledge them, and shut down, which flushes
    // the connections so the acknowledgements reach their senders before the process
    // exits. Messages taken from the queue but not printed stay unacknowledged and are
    // sent again to the next listener.
    events.confirm();
    messaging.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// `{"from":…,"uuid":…,"ttl":…,"flags":…,"len":…,"data":…}` with a fixed key order.
pub(crate) fn json_line(from: &str, message: &ReceivedMessage) -> String {
    let string = |s: &str| serde_json::Value::from(s).to_string();
    let ttl = message
        .ttl
        .map_or_else(|| "null".to_owned(), |ttl| ttl.to_string());
    let data = match std::str::from_utf8(&message.data) {
        Ok(text) => format!("\"data\":{}", string(text)),
        Err(_) => format!(
            "\"data_b64\":{}",
            string(&base64::engine::general_purpose::STANDARD.encode(&message.data))
        ),
    };
    format!(
        "{{\"from\":{},\"uuid\":\"{}\",\"ttl\":{ttl},\"flags\":{},\"len\":{},{data}}}",
        string(from),
        uuid_hex(&message.uuid),
        message.flags,
        message.data.len(),
    )
}

/// `alice: hello  [uuid …, ttl 600 s, flags 0x5, 5 bytes]`; data that is not UTF-8 is
/// shown as hex.
fn human_line(from: &str, message: &ReceivedMessage) -> String {
    let data = match std::str::from_utf8(&message.data) {
        Ok(text) => format!("{text:?}"),
        Err(_) => format!("hex {}", hex::encode(&message.data)),
    };
    let ttl = message
        .ttl
        .map_or_else(|| "no expiry".to_owned(), |ttl| format!("ttl {ttl} s"));
    format!(
        "{from}: {data}  [{}, {ttl}, flags {:#x}, {} bytes]",
        uuid_hex(&message.uuid),
        message.flags,
        message.data.len()
    )
}
