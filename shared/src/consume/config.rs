//! How one consumer is configured.

use std::time::Duration;

use super::faults::Faults;
use super::retry::RetryPolicy;
use crate::clock::Clock;
use crate::config::{ConfigError, Lookup};

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
    /// correlations (stock of a product) take those locks in [`super::Handler::before_batch`]; if they
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
    /// The clock the consumer's keyed state (and what else it decides by wall-clock time)
    /// reads; tests advance it instead of waiting.
    pub clock: Clock,
    /// The largest keyed-state entry, in JSON bytes; a larger one is poison.
    pub state_entry_limit: usize,
    /// How often the consumer looks for due timers when nothing wakes it sooner: a timer due
    /// before the next look wakes it when set, so this bounds the lateness of a timer only
    /// when a notification is lost or the clock jumps.
    pub timer_poll_interval: Duration,
    /// How long a key of an ordered consumer waits for an expected message that is not
    /// retrying (it never came) before it goes on with its next parked one
    /// ([`crate::key_order`]).
    pub key_order_gap_timeout: Duration,
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
            key_order_gap_timeout: Duration::from_secs(60),
            faults: Faults::default(),
            clock: Clock::system(),
            state_entry_limit: crate::state::DEFAULT_ENTRY_LIMIT,
            timer_poll_interval: Duration::from_secs(1),
        }
    }

    /// Handle up to `batch` deliveries per transaction (see [`ConsumerConfig::batch`]).
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Retry transient failures with `retry`.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// This configuration with what `config` sets: `CONSUMER_PREFETCH`,
    /// `CONSUMER_CONCURRENCY`, `CONSUMER_BATCH`, `CONSUMER_INBOX_RETENTION_MS`, `STATE_ENTRY_LIMIT`,
    /// `TIMER_POLL_INTERVAL_MS`, `KEY_ORDER_GAP_TIMEOUT_MS`, the `RETRY_*`
    /// settings of [`RetryPolicy::configured`] and the `FAULT_*` ones of
    /// [`Faults::configured`]. A setting left unset keeps this configuration's value, so a
    /// service's own defaults stand until an operator sets something. Services get `config`
    /// scoped to the queue (`<QUEUE>_CONSUMER_BATCH` before `CONSUMER_BATCH`).
    pub fn configured(self, config: &impl Lookup) -> Result<Self, ConfigError> {
        Ok(Self {
            prefetch: config.parse("CONSUMER_PREFETCH", self.prefetch)?.max(1),
            concurrency: config
                .parse("CONSUMER_CONCURRENCY", self.concurrency)?
                .max(1),
            batch: config.parse("CONSUMER_BATCH", self.batch)?.max(1),
            inbox_retention: config.millis("CONSUMER_INBOX_RETENTION_MS", self.inbox_retention)?,
            state_entry_limit: config.parse("STATE_ENTRY_LIMIT", self.state_entry_limit)?,
            timer_poll_interval: config
                .millis("TIMER_POLL_INTERVAL_MS", self.timer_poll_interval)?,
            key_order_gap_timeout: config
                .millis("KEY_ORDER_GAP_TIMEOUT_MS", self.key_order_gap_timeout)?,
            retry: self.retry.configured(config)?,
            faults: self.faults.configured(config)?,
            ..self
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::ConfigSource;

    fn own_defaults() -> ConsumerConfig {
        ConsumerConfig::new("svc", "svc")
            .batch(16)
            .retry(RetryPolicy {
                initial_delay: Duration::from_millis(10),
                multiplier: 3.0,
                max_delay: Duration::from_secs(2),
                max_attempts: 5,
                jitter: 0.0,
            })
    }

    #[test]
    fn a_services_own_defaults_survive_when_nothing_is_set() {
        let configured = own_defaults()
            .configured(&ConfigSource::default().scoped("svc"))
            .unwrap();
        assert_eq!(configured.batch, 16);
        assert_eq!(configured.retry, own_defaults().retry);
        assert_eq!(configured.faults, Faults::default());
    }

    #[test]
    fn a_setting_changes_only_what_it_names() {
        let source = ConfigSource::from_pairs([
            ("RETRY_MAX_ATTEMPTS", "9"),
            ("SVC_FAULT_FAIL_FIRST_ATTEMPTS", "2"),
            ("OTHER_CONSUMER_BATCH", "3"),
        ]);
        let configured = own_defaults().configured(&source.scoped("svc")).unwrap();
        assert_eq!(configured.batch, 16, "another queue's setting");
        assert_eq!(configured.retry.max_attempts, 9);
        assert_eq!(
            configured.retry.multiplier, 3.0,
            "the rest of the policy stands"
        );
        assert_eq!(configured.faults.fail_first_attempts, 2);
        assert_eq!(configured.faults.transient_rate, 0.0);
    }
}
