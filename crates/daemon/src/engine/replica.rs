//! This daemon as one of several replicas sharing a PostgreSQL store: who
//! it is to the database and how long it holds what it claims. The
//! scheduler of a replica is `crate::claims`.

use std::sync::Arc;
use std::time::Duration;

use tally_store::Coordination;

/// This daemon as one replica of several: who it is to the database, and
/// how long it holds what it claims.
pub struct Replica {
    /// `host-pid-random`: unique among replicas, also of one host and
    /// across restarts; shown in `/api/v1/sources` and in the logs.
    pub owner: String,
    pub coordination: Arc<dyn Coordination>,
    /// `[store] lease`.
    pub lease: Duration,
}

impl Replica {
    pub fn new(coordination: Arc<dyn Coordination>, lease: Duration) -> Replica {
        Replica {
            owner: owner_id(),
            coordination,
            lease,
        }
    }

    /// Leases are renewed every third of their length: two renewals may
    /// fail (a slow database, a stall) before one expires.
    pub fn renew_every(&self) -> Duration {
        self.lease / 3
    }
}

/// `host-pid-random`.
pub fn owner_id() -> String {
    #[cfg(unix)]
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    #[cfg(not(unix))]
    let host = "host".to_owned();
    format!(
        "{host}-{}-{:06x}",
        std::process::id(),
        fastrand::u32(..0x100_0000)
    )
}
