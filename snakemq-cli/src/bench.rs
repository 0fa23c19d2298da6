//! `snakemq bench`: throughput and latency between two peers, acknowledgements on.
//!
//! By default the receiving peer is a second process (this executable, started with a
//! hidden `--role receiver`), so the figures include what two real processes pay: two
//! runtimes, two sets of threads, a real loopback TCP connection. `--in-process` runs both
//! peers in this process instead.
//!
//! - throughput: the sender queues `--count` messages of `--size` bytes as fast as `send`
//!   accepts them; the clock runs from the first send until the sender has seen `Delivered`
//!   (the receiver's acknowledgement) for every one of them.
//! - latency: ping-pong with one message outstanding; the receiver echoes each ping and the
//!   sender times send to echo received.
//!
//! With `--store PATH` the sender's messages are persistent: each `send` returns after its
//! group commit, and a message leaves the store when its acknowledgement comes back.
//! `--in-flight N` keeps N sends waiting at once (they share commits); `--in-flight 1` is
//! one producer awaiting each durable send.

mod child;
mod measure;
mod memory;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use crate::common::{CliError, StoreArgs};
use crate::transport::TransportArgs;

/// Identity of the peer that sends (and times).
pub(crate) const SENDER: &str = "bench-sender";
/// Identity of the peer that receives (and echoes pings).
pub(crate) const RECEIVER: &str = "bench-receiver";

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mode {
    /// Messages per second, sender to receiver, until every one is acknowledged.
    Throughput,
    /// Round trips with one message outstanding.
    Latency,
    /// Throughput, then latency.
    Both,
    /// Bytes of memory per message queued for a peer that is away (no receiver).
    QueueMemory,
}

/// The part this process plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Role {
    /// Measures (the default).
    Sender,
    /// Receives, echoes pings; prints its bound endpoint on stdout as one line. Started by
    /// the sender; exits when the sender disconnects or closes our stdin.
    Receiver,
}

/// The tokio runtime both peers of a run use (the receiver process gets the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Runtime {
    /// Worker threads as many as CPUs: sends in flight, connections and the application
    /// run in parallel (the default, and what `listen` and `send` use).
    MultiThread,
    /// One thread per peer. A lone producer awaiting each send has nothing to run in
    /// parallel: on one thread its next send, the connection's write and the commit's
    /// completion need no wake-up from one thread to another (measured on 2 CPUs: 10-20 %
    /// more durable sends per second with one in flight; 4x fewer with 1024 in flight).
    CurrentThread,
}

impl Runtime {
    /// A builder for this flavour.
    pub(crate) fn builder(self) -> tokio::runtime::Builder {
        match self {
            Runtime::MultiThread => tokio::runtime::Builder::new_multi_thread(),
            Runtime::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        }
    }

    /// The command-line spelling, for the receiver process.
    pub(crate) fn arg(self) -> &'static str {
        match self {
            Runtime::MultiThread => "multi-thread",
            Runtime::CurrentThread => "current-thread",
        }
    }
}

/// Arguments of `snakemq bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Payload size of each message, in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Messages sent in the throughput run.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Round trips in the latency run (default: the smaller of --count and 10000).
    #[arg(long)]
    round_trips: Option<u64>,
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Throughput)]
    mode: Mode,
    /// Run both peers in this process instead of starting a receiver process.
    #[arg(long)]
    in_process: bool,
    /// Print exactly one JSON line on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Sends awaited at once (each by its own task). Matters for persistent messages,
    /// whose `send` waits for the commit; in-memory sends return at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    in_flight: u64,
    /// The sender's store; the messages are then persistent. PATH must not exist yet (a
    /// queue left in it would be counted); the emptied store is left behind.
    #[command(flatten)]
    store: StoreArgs,
    /// Give up when nothing happens for this many seconds.
    #[arg(long, default_value_t = 30)]
    stall_secs: u64,
    /// The runtime of both peers.
    #[arg(long, value_enum, default_value_t = Runtime::MultiThread)]
    pub(crate) runtime: Runtime,
    /// Internal: the part this process plays.
    #[arg(long, value_enum, default_value_t = Role::Sender, hide = true)]
    role: Role,
    /// Internal: where the receiver listens.
    #[arg(long, default_value = "127.0.0.1:0", hide = true)]
    bind: String,
    /// TLS, QUIC and throttle settings of both peers (the same certificate serves the
    /// receiver as server and the sender as client; `snakemq certs` makes one).
    #[command(flatten)]
    transport: TransportArgs,
}

/// What a run measured.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// Throughput run: seconds from the first send to the last acknowledgement.
    pub(crate) seconds: Option<f64>,
    /// Latency run: round-trip times, sorted, in microseconds.
    pub(crate) round_trips_us: Vec<f64>,
}

pub(crate) async fn run(args: BenchArgs) -> Result<ExitCode, CliError> {
    if args.role == Role::Receiver {
        child::receiver_main(&args.bind, &args.transport).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.mode == Mode::QueueMemory {
        return queue_memory(&args).await;
    }
    if args.count == 0 && args.mode != Mode::Latency {
        return Err("--count must be at least 1".into());
    }
    let round_trips = match args.mode {
        Mode::Throughput | Mode::QueueMemory => 0,
        Mode::Latency | Mode::Both => args.round_trips.unwrap_or(args.count.min(10_000)),
    };
    if round_trips == 0 && args.mode != Mode::Throughput {
        return Err("--round-trips must be at least 1".into());
    }
    if let Some(path) = &args.store.store {
        if path.exists() {
            return Err(format!(
                "{} exists; the benchmark needs a new store (its queue would be counted)",
                path.display()
            )
            .into());
        }
    }
    let plan = measure::Plan {
        store: args.store.clone(),
        transport: args.transport.clone(),
        in_flight: args.in_flight,
        size: args.size,
        count: if args.mode == Mode::Latency {
            0
        } else {
            args.count
        },
        round_trips,
        stall: Duration::from_secs(args.stall_secs.max(1)),
        progress: !args.json && std::io::stderr().is_terminal(),
    };

    let report = if args.in_process {
        let receiver = child::ReceiverThread::spawn(&args.transport, args.runtime).await?;
        let outcome = measure::run_sender(receiver.endpoint(), &plan).await;
        let served = receiver.finish().await;
        let report = outcome?;
        served?;
        report
    } else {
        let receiver =
            child::ReceiverProcess::spawn(&args.bind, &args.transport, args.runtime).await?;
        let outcome = measure::run_sender(receiver.endpoint(), &plan).await;
        let exited = receiver.finish().await;
        let report = outcome?;
        exited?;
        report
    };

    if args.json {
        println!("{}", json_line(&plan, &report));
    } else {
        print_table(&plan, &report, args.in_process);
    }
    Ok(ExitCode::SUCCESS)
}

async fn queue_memory(args: &BenchArgs) -> Result<ExitCode, CliError> {
    if args.count == 0 {
        return Err("--count must be at least 1".into());
    }
    let measured = memory::measure(args.size, args.count).await?;
    if args.json {
        let line = serde_json::json!({
            "mode": "queue-memory",
            "size": args.size,
            "count": measured.queued,
            "bytes_per_message": round(Some(measured.bytes_per_message), 1),
        });
        println!("{line}");
    } else {
        println!("snakemq bench: messages queued in memory for a peer that is away");
        println!("  {:<12} {} B", "size", group(args.size as f64));
        println!("  {:<12} {}", "messages", group(measured.queued as f64));
        println!(
            "  {:<12} {:.1} B per message (resident memory, payload included)",
            "memory", measured.bytes_per_message
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Derived figures of a report.
struct Figures {
    seconds: Option<f64>,
    msgs_per_sec: Option<f64>,
    mib_per_sec: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
}

fn figures(plan: &measure::Plan, report: &Report) -> Figures {
    let seconds = report.seconds;
    let rate = seconds.filter(|s| *s > 0.0).map(|s| plan.count as f64 / s);
    Figures {
        seconds,
        msgs_per_sec: rate,
        mib_per_sec: rate.map(|r| r * plan.size as f64 / (1024.0 * 1024.0)),
        p50: percentile(&report.round_trips_us, 0.50),
        p99: percentile(&report.round_trips_us, 0.99),
        max: report.round_trips_us.last().copied(),
    }
}

/// Rounds to `digits` decimals for output (the measurement is not more precise).
fn round(value: Option<f64>, digits: i32) -> Option<f64> {
    let scale = 10f64.powi(digits);
    value.map(|v| (v * scale).round() / scale)
}

fn json_line(plan: &measure::Plan, report: &Report) -> String {
    let f = figures(plan, report);
    serde_json::json!({
        "size": plan.size,
        "count": plan.count,
        "seconds": round(f.seconds, 6),
        "msgs_per_sec": round(f.msgs_per_sec, 1),
        "mib_per_sec": round(f.mib_per_sec, 2),
        "latency_p50_us": round(f.p50, 1),
        "latency_p99_us": round(f.p99, 1),
        "latency_max_us": round(f.max, 1),
        "round_trips": report.round_trips_us.len(),
        "persistent": plan.store.store.is_some(),
        "in_flight": plan.in_flight,
    })
    .to_string()
}

fn print_table(plan: &measure::Plan, report: &Report, in_process: bool) {
    let f = figures(plan, report);
    let setup = if in_process {
        "both peers in this process"
    } else {
        "two processes"
    };
    println!(
        "snakemq bench: {setup}, {} loopback, acknowledgements on",
        plan.transport.describe()
    );
    if let Some(path) = &plan.store.store {
        println!(
            "  {:<12} persistent, {} store {} ({:?}), {} in flight",
            "messages",
            plan.store.store_backend,
            path.display(),
            plan.store.durability,
            plan.in_flight
        );
    }
    println!("  {:<12} {} B", "size", group(plan.size as f64));
    if let (Some(seconds), Some(rate), Some(mib)) = (f.seconds, f.msgs_per_sec, f.mib_per_sec) {
        println!("  {:<12} {}", "messages", group(plan.count as f64));
        println!("  {:<12} {seconds:.3} s", "time");
        println!(
            "  {:<12} {} msg/s   {mib:.1} MiB/s",
            "throughput",
            group(rate)
        );
    }
    if let (Some(p50), Some(p99), Some(max)) = (f.p50, f.p99, f.max) {
        println!(
            "  {:<12} {} (one outstanding)",
            "round trips",
            group(report.round_trips_us.len() as f64)
        );
        println!(
            "  {:<12} p50 {p50:.0} µs   p99 {p99:.0} µs   max {max:.0} µs",
            "latency"
        );
    }
}

/// A whole number with thousands separators.
fn group(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), Some(50.0));
        assert_eq!(percentile(&values, 0.99), Some(99.0));
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn json_has_the_fields_xtask_reads() {
        let plan = measure::Plan {
            store: StoreArgs {
                store: None,
                store_backend: crate::common::StoreBackend::Sqlite,
                durability: crate::common::DurabilityArg::Full,
            },
            transport: TransportArgs::default(),
            in_flight: 1,
            size: 64,
            count: 1000,
            round_trips: 0,
            stall: Duration::from_secs(1),
            progress: false,
        };
        let report = Report {
            seconds: Some(0.5),
            round_trips_us: Vec::new(),
        };
        let line = json_line(&plan, &report);
        assert!(!line.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        assert_eq!(value.get("msgs_per_sec"), Some(&serde_json::json!(2000.0)));
        assert_eq!(value.get("size"), Some(&serde_json::json!(64)));
        assert_eq!(value.get("latency_p50_us"), Some(&serde_json::Value::Null));
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(group(1234567.4), "1,234,567");
        assert_eq!(group(999.0), "999");
    }
}
