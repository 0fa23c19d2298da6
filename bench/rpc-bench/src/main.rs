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
mod paired;
mod stats;
mod tarpc_echo;

use std::future::Future;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};

use crate::args::{Args, Harness, Mode};
use crate::ours::OursEcho;
use crate::stats::Summary;
use crate::tarpc_echo::TarpcEcho;

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
            Harness::Ours => alone(&args, OursEcho::start().await?).await,
            Harness::Tarpc => alone(&args, TarpcEcho::start().await?).await,
            Harness::Paired => paired::run(&args).await,
        }
    });
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rpc-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Measures one stack on its own and returns its JSON line.
async fn alone<S: Stack>(args: &Args, stack: S) -> Result<String, BoxError> {
    let summary = measure(args, || stack.call()).await;
    stack.stop().await;
    Ok(summary?.json(args.harness.name(), args.mode.name()))
}

/// An echo stack: both ends started, one call at a time measured, then stopped.
pub(crate) trait Stack {
    /// One echo call, its reply checked.
    fn call(&self) -> impl Future<Output = Result<(), BoxError>>;
    /// Stops both ends.
    fn stop(self) -> impl Future<Output = ()>;
}

impl Stack for OursEcho {
    fn call(&self) -> impl Future<Output = Result<(), BoxError>> {
        OursEcho::call(self)
    }
    fn stop(self) -> impl Future<Output = ()> {
        OursEcho::stop(self)
    }
}

impl Stack for TarpcEcho {
    fn call(&self) -> impl Future<Output = Result<(), BoxError>> {
        TarpcEcho::call(self)
    }
    fn stop(self) -> impl Future<Output = ()> {
        TarpcEcho::stop(self)
    }
}

/// Checks the length of an echo's reply.
pub(crate) fn check_reply(len: usize) -> Result<(), BoxError> {
    if len == PAYLOAD {
        Ok(())
    } else {
        Err(format!("echo returned {len} bytes").into())
    }
}

/// Runs the warm-up and the measured calls of `args.mode`; `call` makes one echo call and
/// checks the reply.
pub(crate) async fn measure<F, Fut>(args: &Args, call: F) -> Result<Summary, BoxError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), BoxError>>,
{
    let in_flight = in_flight(args);
    run_calls(WARM_UP.min(args.calls), in_flight, &call).await?;
    let start = Instant::now();
    let samples = run_calls(args.calls, in_flight, &call).await?;
    Ok(Summary::new(samples, start.elapsed()))
}

/// The calls kept outstanding in `args.mode`.
pub(crate) fn in_flight(args: &Args) -> usize {
    match args.mode {
        Mode::Latency => 1,
        Mode::Throughput => args.in_flight,
    }
}

/// Makes `calls` calls with at most `in_flight` outstanding; returns each call's round trip.
pub(crate) async fn run_calls<F, Fut>(
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
