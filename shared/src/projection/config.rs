//! How a projection reads, batches and takes over.

use std::time::Duration;

use crate::config::{ConfigError, Lookup};

/// How a projection reads the archive, batches its transactions and takes over.
#[derive(Clone, Debug)]
pub struct ProjectionConfig {
    /// Most events applied in one transaction (with one checkpoint write).
    pub batch_size: usize,
    /// Deliveries the broker may send ahead (the stream consumer's `basic.qos`).
    pub prefetch: u16,
    /// How often a standby replica tries to take the lead.
    pub takeover_poll: Duration,
    /// How often the active replica checks its lead, looks for rebuild requests and, when
    /// idle, refreshes its checkpoint row's `updated_at` (what `status` shows).
    pub heartbeat: Duration,
}

impl Default for ProjectionConfig {
    fn default() -> Self {
        Self {
            // Catching up, batches are full, and bigger ones were faster up to about 5,000
            // (docs/performance.md, issue 18: +9 % from 500 to 2,000, +16 % from 2,000 to
            // 5,000, nothing more at 10,000); following live, a batch is what has arrived.
            batch_size: 5000,
            prefetch: 20000,
            takeover_poll: Duration::from_secs(1),
            heartbeat: Duration::from_secs(2),
        }
    }
}

impl ProjectionConfig {
    /// The defaults overridden by `PROJECTION_BATCH`, `PROJECTION_PREFETCH`,
    /// `PROJECTION_TAKEOVER_POLL_MS` and `PROJECTION_HEARTBEAT_MS`.
    pub fn from_config(config: &impl Lookup) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        Ok(Self {
            batch_size: config
                .parse("PROJECTION_BATCH", defaults.batch_size)?
                .max(1),
            prefetch: config
                .parse("PROJECTION_PREFETCH", defaults.prefetch)?
                .max(1),
            takeover_poll: config.millis("PROJECTION_TAKEOVER_POLL_MS", defaults.takeover_poll)?,
            heartbeat: config.millis("PROJECTION_HEARTBEAT_MS", defaults.heartbeat)?,
        })
    }
}
