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

    /// The JSON line printed for the run.
    pub(crate) fn json(&self, harness: &str, mode: &str) -> String {
        let seconds = self.elapsed.as_secs_f64();
        let calls = self.samples.len();
        let rate = if seconds > 0.0 {
            calls as f64 / seconds
        } else {
            0.0
        };
        let micros = |d: Duration| d.as_secs_f64() * 1e6;
        format!(
            "{{\"harness\":\"{harness}\",\"mode\":\"{mode}\",\"calls\":{calls},\
             \"seconds\":{seconds:.6},\"calls_per_sec\":{rate:.1},\"p50_us\":{:.1},\"p99_us\":{:.1}}}",
            micros(self.percentile(50.0)),
            micros(self.percentile(99.0)),
        )
    }
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
