//! The daemon's clock in tests: wall-clock time that follows tokio's clock.
//! It lives here rather than beside [`Clock`] because the domain knows
//! nothing of tokio.

use chrono::{DateTime, Utc};
use tally_domain::clock::Clock;

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
/// use tally_daemon::clock::TokioClock;
/// use tally_domain::clock::Clock;
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
