//! An invariant that holds for any system built on msgkit, whatever its business rules: every
//! event published during a run reached each queue its routing key is bound to, and there was
//! either handled by that queue's consumer (an inbox row) or dead-lettered with a reason; no
//! event was unroutable; nothing is left in work queues, delay tiers or outboxes; no timer is
//! overdue or fired twice.
//!
//! Use: [`FirehoseRecorder::start`] before the load, [`FirehoseRecorder::finish`] once the
//! system has drained, then [`verdict`] with the recording and the [`SystemUnderTest`].
//!
//! "Published" is read from the broker's firehose, not from a tap queue bound to the events
//! exchange: a tap would itself be a binding, so an event no service is bound to would look
//! routed.

mod broker_state;
mod expected;
mod firehose;
mod rabbitmqctl;
mod store;
#[cfg(test)]
mod tests;
mod traced;
mod verdict;

use std::time::Duration;

pub use self::firehose::FirehoseRecorder;
#[cfg(test)]
pub use self::traced::TracedPublish;
pub use self::traced::{Gap, PublishKind, Recording};
#[cfg(test)]
pub use self::verdict::ViolationKind;
pub use self::verdict::{Verdict, verdict};

/// Where a service keeps the kit's tables (outbox, inbox, timers).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceStore {
    /// The database, as the service gets it in `DATABASE_URL`.
    pub database_url: String,
    /// The service's schema (`<SERVICE>_DB_SCHEMA`); `None` for the database's default
    /// search path.
    pub schema: Option<String>,
}

/// One work queue and the kit consumer that owns it.
#[derive(Debug, Clone)]
pub struct ConsumerTarget {
    /// The work queue (`inventory`); its dead letters are in `<queue>.dlq`.
    pub queue: String,
    /// The consumer's name, as in its inbox rows (`ConsumerConfig::name`, the service name for
    /// the example services).
    pub consumer: String,
    /// Where that consumer's inbox, outbox and timers are.
    pub store: ServiceStore,
}

/// What the verdict needs to know about the system beyond what the broker tells it.
#[derive(Debug, Clone)]
pub struct SystemUnderTest {
    /// The run's vhost.
    pub vhost: String,
    /// The broker, for reading dead-letter queues and queue depths.
    pub broker: msgkit::BrokerSettings,
    /// The management API (`http://127.0.0.1:15672`), for the events exchange's bindings.
    pub management: ManagementApi,
    /// The exchange events are published to (`msgkit::topology::EVENTS_EXCHANGE`).
    pub events_exchange: String,
    /// Every work queue whose deliveries are checked, with its consumer.
    pub consumers: Vec<ConsumerTarget>,
    /// Services that publish but own no work queue (their outbox is still checked).
    pub publishers: Vec<ServiceStore>,
    /// A timer due longer ago than this after the drain, and still in `msgkit_timers`, is
    /// overdue (it should have fired).
    pub timer_grace: Duration,
    /// Violations listed in full; the rest are only counted.
    pub max_listed: usize,
}

/// The RabbitMQ management API and its credentials.
#[derive(Debug, Clone)]
pub struct ManagementApi {
    /// Base URL, without `/api`.
    pub url: String,
    /// User.
    pub user: String,
    /// Password.
    pub password: String,
}

/// Why the recorder or the verdict could not do its work (not a violation: the invariant
/// could not be checked).
#[derive(Debug, thiserror::Error)]
pub enum GenericError {
    /// `rabbitmqctl trace_on/trace_off` failed or could not be run.
    #[error("`{command}` failed: {reason}")]
    Rabbitmqctl {
        /// The command line.
        command: String,
        /// Its exit status and standard error, or why it did not start.
        reason: String,
    },
    /// An AMQP operation failed.
    #[error("{action}: {source}")]
    Broker {
        /// What was being done.
        action: String,
        /// The broker's or client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The management API refused or could not be reached.
    #[error("management API {url}: {reason}")]
    Management {
        /// The URL called.
        url: String,
        /// Status and body, or the transport error.
        reason: String,
    },
    /// A service's database could not be read.
    #[error("reading {what} of schema {schema}: {source}")]
    Database {
        /// What was being read.
        what: &'static str,
        /// The schema (or `default`).
        schema: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
}

impl GenericError {
    fn broker(
        action: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Broker {
            action: action.into(),
            source: Box::new(source),
        }
    }
}
