//! `rpc-bench paired`: both stacks in one process, measured in alternating batches.
//!
//! Why: on the benchmark machine the same binary runs a round trip in about 22 µs in one
//! process and about 35 µs in the next, and the speed also drifts over minutes, whichever
//! stack runs. Runs in separate processes therefore compare two draws of the machine's
//! state as much as two stacks. Here both stacks live in the same process, on the same
//! runtime thread, and take turns every `--batch` calls (ABBA order, so that a drift within
//! a pair of batches falls on both), which leaves the code as the main difference.

use std::time::{Duration, Instant};

use crate::args::Args;
use crate::ours::OursEcho;
use crate::stats::Summary;
use crate::tarpc_echo::TarpcEcho;
use crate::{BoxError, Stack, WARM_UP, in_flight, run_calls};

/// The samples and measured time of one stack across its batches.
#[derive(Default)]
struct Tally {
    samples: Vec<Duration>,
    elapsed: Duration,
}

impl Tally {
    async fn batch<S: Stack>(
        &mut self,
        stack: &S,
        calls: usize,
        in_flight: usize,
    ) -> Result<(), BoxError> {
        let start = Instant::now();
        let samples = run_calls(calls, in_flight, &|| stack.call()).await?;
        self.elapsed += start.elapsed();
        self.samples.extend(samples);
        Ok(())
    }
}

/// Runs both stacks, `args.calls` measured calls each, and returns the JSON line.
pub(crate) async fn run(args: &Args) -> Result<String, BoxError> {
    let ours = OursEcho::start().await?;
    let tarpc = TarpcEcho::start().await?;
    let in_flight = in_flight(args);
    run_calls(WARM_UP.min(args.calls), in_flight, &|| ours.call()).await?;
    run_calls(WARM_UP.min(args.calls), in_flight, &|| tarpc.call()).await?;

    let (mut ours_tally, mut tarpc_tally) = (Tally::default(), Tally::default());
    let mut left = args.calls;
    let mut turn = 0usize;
    while left > 0 {
        let calls = left.min(args.batch);
        // ABBA: ours first in even turns, tarpc first in odd ones.
        if turn % 2 == 0 {
            ours_tally.batch(&ours, calls, in_flight).await?;
            tarpc_tally.batch(&tarpc, calls, in_flight).await?;
        } else {
            tarpc_tally.batch(&tarpc, calls, in_flight).await?;
            ours_tally.batch(&ours, calls, in_flight).await?;
        }
        if std::env::var_os("RPC_BENCH_BATCHES").is_some() {
            let tail = |t: &Tally| {
                let from = t.samples.len().saturating_sub(calls);
                let batch = Summary::new(
                    t.samples.get(from..).unwrap_or_default().to_vec(),
                    Duration::ZERO,
                );
                batch.percentile(50.0).as_secs_f64() * 1e6
            };
            eprintln!(
                "batch {turn}: ours {:.1} tarpc {:.1}",
                tail(&ours_tally),
                tail(&tarpc_tally)
            );
        }
        left -= calls;
        turn += 1;
    }
    tarpc.stop().await;
    ours.stop().await;

    let ours = Summary::new(ours_tally.samples, ours_tally.elapsed);
    let tarpc = Summary::new(tarpc_tally.samples, tarpc_tally.elapsed);
    Ok(ours.paired_json(&tarpc, args.mode.name()))
}
