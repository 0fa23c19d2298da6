//! The figures of a run and its JSON line.

use std::time::Duration;

/// The measured calls of one run.
#[derive(Debug)]
pub(crate) struct Summary {
    /// Round trips, sorted.
    samples: Vec<Duration>,
    /// Wall time of the measured calls.
    elapsed: Duration,
}

impl Summary {
    /// Sorts `samples` for the percentiles.
    pub(crate) fn new(mut samples: Vec<Duration>, elapsed: Duration) -> Summary {
        samples.sort_unstable();
        Summary { samples, elapsed }
    }

    /// The `p`-th percentile (nearest rank), zero when there are no samples.
    pub(crate) fn percentile(&self, p: f64) -> Duration {
        let n = self.samples.len();
        if n == 0 {
            return Duration::ZERO;
        }
        // Nearest rank: the smallest sample with at least p% of the samples at or below it.
        let rank = ((p / 100.0) * n as f64).ceil().max(1.0) as usize;
        self.samples
            .get(rank.min(n) - 1)
            .copied()
            .unwrap_or(Duration::ZERO)
    }

    /// Calls per second over the measured time, zero when none was measured.
    fn rate(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.samples.len() as f64 / seconds
        } else {
            0.0
        }
    }

    /// The JSON line printed for the run.
    pub(crate) fn json(&self, harness: &str, mode: &str) -> String {
        format!(
            "{{\"harness\":\"{harness}\",\"mode\":\"{mode}\",\"calls\":{},\
             \"seconds\":{:.6},\"calls_per_sec\":{:.1},\"p50_us\":{:.1},\"p99_us\":{:.1}}}",
            self.samples.len(),
            self.elapsed.as_secs_f64(),
            self.rate(),
            micros(self.percentile(50.0)),
            micros(self.percentile(99.0)),
        )
    }

    /// The JSON line of a paired run: `self` is ours, `tarpc` the baseline, each figure
    /// with its ratio ours/tarpc.
    pub(crate) fn paired_json(&self, tarpc: &Summary, mode: &str) -> String {
        let ratio = |ours: f64, baseline: f64| {
            if baseline > 0.0 { ours / baseline } else { 0.0 }
        };
        let (p50, tarpc_p50) = (
            micros(self.percentile(50.0)),
            micros(tarpc.percentile(50.0)),
        );
        let (p99, tarpc_p99) = (
            micros(self.percentile(99.0)),
            micros(tarpc.percentile(99.0)),
        );
        let (rate, tarpc_rate) = (self.rate(), tarpc.rate());
        format!(
            "{{\"harness\":\"paired\",\"mode\":\"{mode}\",\"calls\":{},\
             \"ours_p50_us\":{p50:.1},\"tarpc_p50_us\":{tarpc_p50:.1},\"p50_ratio\":{:.3},\
             \"ours_p99_us\":{p99:.1},\"tarpc_p99_us\":{tarpc_p99:.1},\"p99_ratio\":{:.3},\
             \"ours_calls_per_sec\":{rate:.1},\"tarpc_calls_per_sec\":{tarpc_rate:.1},\
             \"rate_ratio\":{:.3}}}",
            self.samples.len(),
            ratio(p50, tarpc_p50),
            ratio(p99, tarpc_p99),
            ratio(rate, tarpc_rate),
        )
    }
}

/// A duration in microseconds.
fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples = (1..=100).rev().map(Duration::from_micros).collect();
        let summary = Summary::new(samples, Duration::from_secs(2));
        assert_eq!(summary.percentile(50.0), Duration::from_micros(50));
        assert_eq!(summary.percentile(99.0), Duration::from_micros(99));
        assert_eq!(summary.percentile(100.0), Duration::from_micros(100));
        assert_eq!(summary.percentile(0.0), Duration::from_micros(1));
    }

    #[test]
    fn empty_run_has_zero_percentiles() {
        let summary = Summary::new(Vec::new(), Duration::ZERO);
        assert_eq!(summary.percentile(99.0), Duration::ZERO);
        assert!(summary.json("tarpc", "latency").contains("\"calls\":0"));
    }

    #[test]
    fn json_has_the_fields() {
        let summary = Summary::new(vec![Duration::from_micros(10); 4], Duration::from_secs(1));
        assert_eq!(
            summary.json("tarpc", "throughput"),
            "{\"harness\":\"tarpc\",\"mode\":\"throughput\",\"calls\":4,\"seconds\":1.000000,\
             \"calls_per_sec\":4.0,\"p50_us\":10.0,\"p99_us\":10.0}"
        );
    }
}
