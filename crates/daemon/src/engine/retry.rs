//! Retries within a run and the breaker across runs: which failures are
//! transient, the jittered doubling waits, and the backoff of a failing source.

use super::*;

/// Whether a failed attempt may pass on its own, so that trying again soon
/// is worth it: timeouts, crashed plugin processes, and what plugins report as
/// `upstream` (platform errors, HTTP 5xx, refused connections) or
/// `rate_limited`. Bad settings, refused credentials, unusable data, plugin
/// bugs (panics, `internal`, protocol errors) fail the same way every time.
pub fn is_transient(result: RunResult, kind: Option<ErrorKind>) -> bool {
    match result {
        RunResult::Success | RunResult::Panic => false,
        RunResult::Timeout | RunResult::Crash => true,
        RunResult::Error => matches!(kind, Some(ErrorKind::Upstream | ErrorKind::RateLimited)),
    }
}

/// A seed for a source's retry jitter: FNV-1a of its id, so that sources
/// failing together do not retry in step, and a test knows the delays.
pub fn jitter_seed(source: &str) -> u64 {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    h.write(source.as_bytes());
    h.finish()
}

/// The wait before retry number `retry` (1 for the first): `base`, doubled
/// for each further retry, times a jitter factor in [0.8, 1.2) drawn from
/// `seed` and `retry`.
pub fn retry_delay(base: Duration, retry: u32, seed: u64) -> Duration {
    let doubled = base.saturating_mul(1u32 << retry.saturating_sub(1).min(20));
    let unit =
        fastrand::Rng::with_seed(seed ^ u64::from(retry).wrapping_mul(0x9e37_79b9_7f4a_7c15)).f64();
    doubled.mul_f64(0.8 + 0.4 * unit)
}

/// The longest a failing source backs off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);

/// How long scheduled runs are skipped after the breaker opened `k` times in
/// a row: the schedule's interval doubled `k` times, at most [`MAX_BACKOFF`]
/// (collectd's doubling read interval).
pub fn backoff_delay(interval: Duration, k: u32) -> Duration {
    interval.saturating_mul(1u32 << k.min(20)).min(MAX_BACKOFF)
}

/// A source's circuit breaker: after `breaker_after` consecutive failed runs
/// its scheduled runs are skipped until `backoff_until`; every further
/// failure doubles the backoff; a success closes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Breaker {
    pub consecutive_failures: u32,
    pub backoff_until: Option<DateTime<Utc>>,
}

impl Breaker {
    /// Records a finished run. Returns the backoff when this failure opened
    /// (or extended) it.
    pub fn record(
        &mut self,
        success: bool,
        now: DateTime<Utc>,
        interval: Duration,
        breaker_after: u32,
    ) -> Option<Duration> {
        if success {
            *self = Breaker::default();
            return None;
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if breaker_after == 0 || self.consecutive_failures < breaker_after {
            return None;
        }
        let delay = backoff_delay(interval, self.consecutive_failures - breaker_after + 1);
        self.backoff_until =
            Some(now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::days(1)));
        Some(delay)
    }

    /// Skips scheduled runs until `at` at least (a platform's retry-after),
    /// whether or not the consecutive failures opened the breaker. True
    /// when that moved the end of the backoff.
    pub fn hold_until(&mut self, at: DateTime<Utc>) -> bool {
        if self.backoff_until.is_some_and(|until| until >= at) {
            return false;
        }
        self.backoff_until = Some(at);
        true
    }

    /// True while scheduled runs are to be skipped.
    pub fn holds(&self, now: DateTime<Utc>) -> bool {
        self.backoff_until.is_some_and(|t| t > now)
    }
}
