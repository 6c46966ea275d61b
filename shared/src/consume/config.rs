//! How one consumer is configured.

use std::time::Duration;

use super::faults::Faults;
use super::retry::RetryPolicy;
use crate::config::{ConfigError, env_millis, env_parse};

/// How one consumer consumes.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// The consumer's name in the inbox (and the management UI); usually the service name.
    pub name: String,
    /// The work queue it consumes.
    pub queue: String,
    /// The emitting service, recorded in `x-failed-service`.
    pub service: String,
    /// Unacked deliveries the broker may push ahead (`basic.qos`).
    pub prefetch: u16,
    /// Deliveries (or batches of them) handled at the same time.
    pub concurrency: usize,
    /// At most this many deliveries that have already arrived are handled in one database
    /// transaction (1, the default: each in its own). Batches save a BEGIN, a COMMIT and its
    /// log flush per message; a batch never waits to fill. If any message of a batch fails,
    /// or the commit does, nothing of it is applied and each message is handled again in its
    /// own transaction, so only the failing one is retried or dead-lettered: handlers must
    /// tolerate running again after a rollback (they must already: any message may be
    /// redelivered). A batch is handled in order of correlation id (one correlation's messages
    /// in delivery order), so batches whose handlers lock only their own correlation's rows
    /// (the saga's order row) never deadlock. Handlers that lock rows shared across
    /// correlations (stock of a product) take those locks in [`Handler::before_batch`]; if they
    /// do not, concurrent batches can deadlock (PostgreSQL aborts one after
    /// `deadlock_timeout` and its messages are handled one by one). `prefetch` bounds what is
    /// in flight: with 32, at most two full batches of 16 run at once, whatever `concurrency`.
    pub batch: usize,
    /// Retry policy for transient failures.
    pub retry: RetryPolicy,
    /// Deduplicate through the inbox (on unless the handler is idempotent by itself).
    pub inbox: bool,
    /// How long inbox rows are kept: a duplicate arriving later than this is no longer
    /// recognised, so keep it well above the longest retry and replay window.
    pub inbox_retention: Duration,
    /// How often old inbox rows are deleted.
    pub inbox_cleanup_interval: Duration,
    /// Faults to inject before the handler (tests and chaos runs; none by default).
    pub faults: Faults,
}

impl ConsumerConfig {
    /// Defaults: prefetch 32, concurrency 8, batches of 1, the default retry policy, inbox on.
    pub fn new(service: impl Into<String>, queue: impl Into<String>) -> Self {
        let service = service.into();
        Self {
            name: service.clone(),
            queue: queue.into(),
            service,
            prefetch: 32,
            concurrency: 8,
            batch: 1,
            retry: RetryPolicy::default(),
            inbox: true,
            inbox_retention: Duration::from_secs(7 * 24 * 3600),
            inbox_cleanup_interval: Duration::from_secs(3600),
            faults: Faults::default(),
        }
    }

    /// The defaults overridden by `CONSUMER_PREFETCH`, `CONSUMER_CONCURRENCY`, `CONSUMER_BATCH`,
    /// `CONSUMER_INBOX_RETENTION_MS`, the `RETRY_*` variables of [`RetryPolicy::from_env`] and
    /// the `FAULT_*` ones of [`Faults::from_env`].
    pub fn from_env(
        service: impl Into<String>,
        queue: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        Self::new(service, queue).with_env_overrides()
    }

    /// This configuration overridden by the variables of [`ConsumerConfig::from_env`]: a
    /// service sets defaults that suit its handler, and operators still have the last word.
    pub fn with_env_overrides(self) -> Result<Self, ConfigError> {
        Ok(Self {
            prefetch: env_parse("CONSUMER_PREFETCH", self.prefetch)?.max(1),
            concurrency: env_parse("CONSUMER_CONCURRENCY", self.concurrency)?.max(1),
            batch: env_parse("CONSUMER_BATCH", self.batch)?.max(1),
            retry: RetryPolicy::from_env()?,
            inbox_retention: env_millis("CONSUMER_INBOX_RETENTION_MS", self.inbox_retention)?,
            faults: Faults::from_env()?,
            ..self
        })
    }
}
