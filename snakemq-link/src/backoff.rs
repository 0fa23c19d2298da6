//! Reconnect delays: exponential growth with jitter, reset after a successful connection.

use std::time::Duration;

use rand::Rng;

/// How a connector waits between attempts.
///
/// The first retry comes after `initial` (tens of milliseconds by default, so a peer that
/// restarts is found again almost at once); each further failure multiplies the delay by
/// `multiplier` up to `max`. Every delay is spread by `±jitter` (a fraction) so that many
/// connectors do not retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Upper bound of the delay.
    pub max: Duration,
    /// Growth factor per failed attempt.
    pub multiplier: f64,
    /// Random spread, as a fraction of the delay (0.0 to 1.0).
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_secs(3),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The delay before attempt number `failures + 1`, jitter included.
    pub fn delay(&self, failures: u32) -> Duration {
        let base = self.base_delay(failures);
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 {
            return base;
        }
        let factor = rand::rng().random_range((1.0 - jitter)..=(1.0 + jitter));
        base.mul_f64(factor).min(self.max.mul_f64(1.0 + jitter))
    }

    /// The delay without jitter.
    pub fn base_delay(&self, failures: u32) -> Duration {
        let growth = self.multiplier.max(1.0).powi(failures.min(64) as i32);
        let secs = (self.initial.as_secs_f64() * growth).min(self.max.as_secs_f64());
        Duration::from_secs_f64(secs.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap() {
        let b = Backoff {
            jitter: 0.0,
            ..Backoff::default()
        };
        assert_eq!(b.delay(0), Duration::from_millis(20));
        assert_eq!(b.delay(1), Duration::from_millis(40));
        assert_eq!(b.delay(20), Duration::from_secs(3));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(3));
    }

    #[test]
    fn jitter_stays_in_range() {
        let b = Backoff::default();
        for failures in 0..10 {
            let base = b.base_delay(failures).as_secs_f64();
            let d = b.delay(failures).as_secs_f64();
            assert!(d >= base * 0.79 && d <= base * 1.21, "{d} vs {base}");
        }
    }
}
