//! RPC benchmark harnesses for `cargo xtask bench`: a 64-byte echo served and called over
//! 127.0.0.1 by snakemq's typed RPC (`#[snakemq::service]`) or by tarpc, in one process.
//!
//! Usage: `rpc-bench ours|tarpc latency|throughput --calls N [--in-flight K]`
//!
//! `latency` keeps one call outstanding and reports the percentiles of the round trips;
//! `throughput` keeps K calls (default 64) outstanding and reports calls per second. Both
//! run a short warm-up first (connection set-up and first allocations are not measured) and
//! print one JSON line.
#![forbid(unsafe_code)]

mod args;
mod ours;
mod stats;
mod tarpc_echo;

use std::future::Future;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};

use crate::args::{Args, Harness, Mode};
use crate::stats::Summary;

/// The size of the echoed payload.
pub(crate) const PAYLOAD: usize = 64;
/// Calls made before the clock starts.
const WARM_UP: usize = 1000;

/// A boxed error for the harness's own failures (set-up, a failed call).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("rpc-bench: {e}\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    // A current-thread runtime: both ends share one core, as two single-threaded peers
    // would, and neither side pays for work stealing.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("rpc-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match args.harness {
            Harness::Ours => ours::run(&args).await,
            Harness::Tarpc => tarpc_echo::run(&args).await,
        }
    });
    match result {
        Ok(summary) => {
            println!("{}", summary.json(args.harness.name(), args.mode.name()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rpc-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the warm-up and the measured calls of `args.mode`; `call` makes one echo call and
/// checks the reply.
pub(crate) async fn measure<F, Fut>(args: &Args, call: F) -> Result<Summary, BoxError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), BoxError>>,
{
    let in_flight = match args.mode {
        Mode::Latency => 1,
        Mode::Throughput => args.in_flight,
    };
    run_calls(WARM_UP.min(args.calls), in_flight, &call).await?;
    let start = Instant::now();
    let samples = run_calls(args.calls, in_flight, &call).await?;
    Ok(Summary::new(samples, start.elapsed()))
}

/// Makes `calls` calls with at most `in_flight` outstanding; returns each call's round trip.
async fn run_calls<F, Fut>(
    calls: usize,
    in_flight: usize,
    call: &F,
) -> Result<Vec<Duration>, BoxError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), BoxError>>,
{
    let timed = || async {
        let start = Instant::now();
        call().await.map(|()| start.elapsed())
    };
    let mut samples = Vec::with_capacity(calls);
    let mut pending = FuturesUnordered::new();
    let mut started = 0;
    while samples.len() < calls {
        while started < calls && pending.len() < in_flight.max(1) {
            pending.push(timed());
            started += 1;
        }
        match pending.next().await {
            Some(result) => samples.push(result?),
            None => break,
        }
    }
    Ok(samples)
}
