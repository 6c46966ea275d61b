//! How a relay batches, polls, retries and cleans up.

use std::time::Duration;

use crate::backoff::Backoff;
use crate::config::{ConfigError, Lookup};

/// How the relay batches, polls, retries and cleans up.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// The emitting service, sent as `app_id`.
    pub app_id: String,
    /// Rows claimed, published and marked together.
    pub batch_size: i64,
    /// Fallback poll period when no notification arrives.
    pub poll_interval: Duration,
    /// First delay before retrying a row the broker refused (returned or nacked).
    pub retry_initial: Duration,
    /// Longest delay before retrying a refused row.
    pub retry_max: Duration,
    /// How long published rows are kept (for audit and debugging) before deletion.
    pub retention: Duration,
    /// How often old published rows are deleted.
    pub cleanup_interval: Duration,
    /// Limit on waiting for one batch's confirms.
    pub confirm_timeout: Duration,
    /// Whether the service publishes its consumers' follow-up events itself right after their
    /// transaction commits, the relay only taking over when it cannot (see `direct` dispatch
    /// in docs/architecture.md). Off by default: on the 2-core bench machine it cost more CPU
    /// per order than it saved (docs/performance.md).
    pub direct_dispatch: bool,
    /// How long the relays leave a row written for direct dispatch alone: after a crash, its
    /// event goes out this late. The dispatcher waits for a confirm half as long at most and
    /// then hands the rows to the relays, so a slow broker does not make duplicates.
    pub dispatch_lease: Duration,
}

impl RelayConfig {
    /// Defaults: batches of 100, poll every second, refused rows retried after 1 s doubling
    /// to 60 s, published rows kept 24 h, direct dispatch off (a 10 s lease when on).
    pub fn new(app_id: impl Into<String>) -> Self {
        Self {
            app_id: app_id.into(),
            batch_size: 100,
            poll_interval: Duration::from_secs(1),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            retention: Duration::from_secs(24 * 3600),
            cleanup_interval: Duration::from_secs(60),
            confirm_timeout: crate::publish::DEFAULT_CONFIRM_TIMEOUT,
            direct_dispatch: false,
            dispatch_lease: Duration::from_secs(10),
        }
    }

    /// The defaults overridden by `OUTBOX_BATCH_SIZE`, `OUTBOX_POLL_INTERVAL_MS`,
    /// `OUTBOX_RETRY_INITIAL_MS`, `OUTBOX_RETRY_MAX_MS`, `OUTBOX_RETENTION_MS`,
    /// `OUTBOX_CLEANUP_INTERVAL_MS`, `OUTBOX_CONFIRM_TIMEOUT_MS`, `OUTBOX_DIRECT_DISPATCH`,
    /// `OUTBOX_DISPATCH_LEASE_MS`.
    pub fn from_config(
        config: &impl Lookup,
        app_id: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        let defaults = Self::new(app_id);
        Ok(Self {
            batch_size: config
                .parse("OUTBOX_BATCH_SIZE", defaults.batch_size)?
                .max(1),
            poll_interval: config.millis("OUTBOX_POLL_INTERVAL_MS", defaults.poll_interval)?,
            retry_initial: config.millis("OUTBOX_RETRY_INITIAL_MS", defaults.retry_initial)?,
            retry_max: config.millis("OUTBOX_RETRY_MAX_MS", defaults.retry_max)?,
            retention: config.millis("OUTBOX_RETENTION_MS", defaults.retention)?,
            cleanup_interval: config
                .millis("OUTBOX_CLEANUP_INTERVAL_MS", defaults.cleanup_interval)?,
            confirm_timeout: config
                .millis("OUTBOX_CONFIRM_TIMEOUT_MS", defaults.confirm_timeout)?,
            direct_dispatch: config.parse("OUTBOX_DIRECT_DISPATCH", defaults.direct_dispatch)?,
            dispatch_lease: config.millis("OUTBOX_DISPATCH_LEASE_MS", defaults.dispatch_lease)?,
            ..defaults
        })
    }

    /// How long a row the broker refused waits before its next attempt, given how many
    /// attempts it has had.
    pub(super) fn retry_delay(&self, attempts_so_far: i32) -> Duration {
        let failed_attempt = u32::try_from(attempts_so_far)
            .unwrap_or(0)
            .saturating_add(1);
        // No jitter: a refused row is retried by the one relay that claims it, so there is
        // no crowd to spread out.
        Backoff::new(self.retry_initial, self.retry_max).nominal_delay(failed_attempt)
    }

    /// Rows per batch as a length, to tell a full claim from a short one.
    pub(super) fn batch_len(&self) -> usize {
        usize::try_from(self.batch_size).unwrap_or(usize::MAX)
    }
}
