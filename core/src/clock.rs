//! The only way the daemon reads the wall clock, so that tests can fix time.

use chrono::{DateTime, Utc};

/// Wall-clock time for scheduling, windows and run records.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until moved; for tests.
#[derive(Debug)]
pub struct FixedClock(std::sync::Mutex<DateTime<Utc>>);

impl FixedClock {
    pub fn new(at: DateTime<Utc>) -> FixedClock {
        FixedClock(std::sync::Mutex::new(at))
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Wall-clock time that follows tokio's clock: a fixed start plus the
/// [`tokio::time::Instant`] time elapsed since the clock was made. On a
/// runtime with paused time (`#[tokio::test(start_paused = true)]`), it
/// moves only with `tokio::time::advance` or auto-advance, together with
/// every `tokio::time::sleep` of the daemon: scheduled ticks, retry backoff
/// and breaker cool-downs then pass in virtual time, in milliseconds.
///
/// The runtime's clock is read through the handle given at creation, so
/// plugin calls on blocking-pool threads see the same time as the
/// scheduler.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use tally::clock::{Clock, TokioClock};
///
/// #[tokio::main(flavor = "current_thread", start_paused = true)]
/// async fn main() {
///     let start = Utc.with_ymd_and_hms(2026, 11, 27, 8, 0, 0).unwrap();
///     let clock = TokioClock::new(start);
///     tokio::time::sleep(std::time::Duration::from_secs(90)).await;
///     assert_eq!(clock.now(), start + chrono::Duration::seconds(90));
/// }
/// ```
#[derive(Debug, Clone)]
pub struct TokioClock {
    start: DateTime<Utc>,
    origin: tokio::time::Instant,
    runtime: tokio::runtime::Handle,
}

impl TokioClock {
    /// A clock reading `start` now. Call it inside the runtime it follows.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn new(start: DateTime<Utc>) -> TokioClock {
        TokioClock {
            start,
            origin: tokio::time::Instant::now(),
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let _runtime = self.runtime.enter();
        let elapsed = self.origin.elapsed();
        self.start + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::MAX)
    }
}
