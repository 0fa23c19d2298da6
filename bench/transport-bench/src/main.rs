//! Transport benchmark harnesses for `cargo xtask bench --only transport`: both peers in one
//! process on 127.0.0.1, certificates made by rcgen at start, rustls with the ring provider.
//!
//! Usage: `transport-bench MODE [--mib N] [--connections N] [--threads N]`
//!
//! Throughput modes send N packets of 1 MiB (default 256) one way and time them from the
//! moment the receiver has the warm-up packets until it has the last one:
//! - `tcp-link`: our `Link` over plain TCP (context);
//! - `tls-link`: our `Link` over TCP with mutual TLS ([`TlsServer`]/[`TlsClient`]);
//! - `rustls-memory`: the TLS ceiling: a rustls client and server connection with the same
//!   settings, passing the same framed 1 MiB packets through `Vec` buffers in 64 KiB
//!   pieces, no sockets, one thread;
//! - `quic-link`: our `Link` over `quic://127.0.0.1:0`, mutual TLS 1.3;
//! - `quinn-raw`: the QUIC ceiling: quinn 0.11 with its own UDP socket and default transport
//!   settings, one bidirectional stream carrying the same bytes, the same rustls settings.
//!
//! `tls-idle-memory` opens N idle connections (default 500) to a listener, once over plain
//! TCP and once over TLS, each in a fresh process (`idle-memory`), with the connecting side
//! in a child process of its own (`idle-clients`), so each side's resident memory is its
//! own. It reports bytes per connection for both transports and both sides.
//!
//! Every mode prints one JSON line.
//!
//! [`TlsServer`]: snakemq_link::tls::TlsServer
//! [`TlsClient`]: snakemq_link::tls::TlsClient
#![forbid(unsafe_code)]

mod ceilings;
mod certs;
mod idle;
mod links;

use std::process::ExitCode;
use std::time::Duration;

/// A boxed error for the harness's own failures.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The packet body of the throughput modes.
pub(crate) const PACKET: usize = 1 << 20;
/// Packets sent before the clock starts (connection set-up, first allocations, window
/// growth are not measured).
pub(crate) const WARM_UP: usize = 16;
/// Upper bound of any wait for something that must happen.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

const USAGE: &str = "usage: transport-bench \
tcp-link|tls-link|rustls-memory|quic-link|quinn-raw|tls-idle-memory \
[--mib N] [--connections N] [--threads N]";

/// Parsed command line.
pub(crate) struct Args {
    pub(crate) mode: String,
    /// Measured packets of 1 MiB.
    pub(crate) mib: usize,
    /// Idle connections of the memory modes.
    pub(crate) connections: usize,
    /// Runtime worker threads (1: a current-thread runtime).
    pub(crate) threads: usize,
    /// `idle-memory` / `idle-clients`: `tcp` or `tls`.
    pub(crate) transport: String,
    /// `idle-clients`: the listener to connect to.
    pub(crate) endpoint: String,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mode = args.next().ok_or("no mode given")?;
    let mut parsed = Args {
        mode,
        mib: 256,
        connections: 500,
        threads: 2,
        transport: "tls".to_owned(),
        endpoint: String::new(),
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{flag}: `{value}` is not a positive number"))
        };
        match flag.as_str() {
            "--mib" => parsed.mib = number()?,
            "--connections" => parsed.connections = number()?,
            "--threads" => parsed.threads = number()?,
            "--transport" => parsed.transport = value,
            "--endpoint" => parsed.endpoint = value,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(parsed)
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("transport-bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Two workers by default: the sending and the receiving side each get a core, as two
    // peers in their own processes would on this two-core machine.
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("transport-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match args.mode.as_str() {
            "tcp-link" | "tls-link" | "quic-link" => links::throughput(&args).await,
            "rustls-memory" => ceilings::rustls_memory(&args),
            "quinn-raw" => ceilings::quinn_raw(&args).await,
            "tls-idle-memory" => idle::compare(&args).await,
            "idle-memory" => idle::listener_side(&args).await,
            "idle-clients" => idle::client_side(&args).await,
            other => Err(format!("unknown mode `{other}`\n{USAGE}").into()),
        }
    });
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("transport-bench {}: {e}", args.mode);
            ExitCode::FAILURE
        }
    }
}

/// The JSON line of a throughput mode.
pub(crate) fn throughput_json(
    args: &Args,
    seconds: f64,
    extra: &[(&str, String)],
) -> Result<String, BoxError> {
    if seconds <= 0.0 {
        return Err("the measured interval is empty".into());
    }
    let mut line = format!(
        "{{\"mode\":\"{}\",\"packet_bytes\":{PACKET},\"packets\":{},\"threads\":{},\
         \"seconds\":{seconds:.6},\"mib_per_sec\":{:.1}",
        args.mode,
        args.mib,
        args.threads,
        args.mib as f64 / seconds
    );
    for (key, value) in extra {
        line.push_str(&format!(",\"{key}\":\"{value}\""));
    }
    line.push('}');
    Ok(line)
}

/// The body every throughput mode sends: 1 MiB of a recognisable pattern.
pub(crate) fn body() -> bytes::Bytes {
    (0..PACKET)
        .map(|i| (i as u32).wrapping_mul(31) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// The 4-byte big-endian length prefix of our packets, so the ceilings carry the same bytes.
pub(crate) fn prefix() -> [u8; 4] {
    (PACKET as u32).to_be_bytes()
}

/// `what` within [`WAIT`], or an error naming it.
pub(crate) async fn within<T>(
    what: &str,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, BoxError> {
    tokio::time::timeout(WAIT, fut)
        .await
        .map_err(|_| format!("timed out after {WAIT:?} waiting for {what}").into())
}
