//! Connecting to RabbitMQ: one connection per role (publishing and consuming never share a
//! connection, because a blocked connection stops acks as well as publishes), retried with
//! exponential backoff, the URL's password kept out of every log line and error.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use lapin::{Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};

use crate::config::{ConfigError, env_millis, env_or, redact_url};
use crate::shutdown::Shutdown;

/// Default broker URL for a local stack.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Where the broker is and how patiently to reach it.
#[derive(Clone, Debug)]
pub struct BrokerSettings {
    url: SecretString,
    /// Shown in the management UI's connection list, e.g. `order/outbox-relay`.
    pub connection_name: String,
    /// First delay between connection attempts.
    pub reconnect_initial: Duration,
    /// Longest delay between connection attempts.
    pub reconnect_max: Duration,
}

/// What can go wrong talking to the broker. Every variant is transient from the kit's point of
/// view: the caller backs off and tries again on a fresh connection.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Could not connect (refused, unreachable, authentication, vhost access).
    #[error("cannot connect to RabbitMQ at {url}: {source}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The client's error.
        source: lapin::Error,
    },
    /// An AMQP operation failed on an open connection.
    #[error("RabbitMQ {operation} failed: {source}")]
    Operation {
        /// What was being done, e.g. `queue.declare inventory`.
        operation: String,
        /// The client's error.
        source: lapin::Error,
    },
    /// The broker did not confirm in time.
    #[error("RabbitMQ did not confirm {pending} publish(es) within {timeout:?}")]
    ConfirmTimeout {
        /// How many confirms were still outstanding.
        pending: usize,
        /// The limit that was exceeded.
        timeout: Duration,
    },
    /// The broker refused a message the kit had to publish (unroutable, nacked).
    #[error("RabbitMQ refused a message for {destination}: {reason}")]
    Refused {
        /// Exchange and routing key.
        destination: String,
        /// Why.
        reason: String,
    },
    /// Gave up because shutdown was requested.
    #[error("shutdown requested")]
    ShuttingDown,
}

impl BrokerError {
    pub(crate) fn operation(operation: impl Into<String>) -> impl FnOnce(lapin::Error) -> Self {
        let operation = operation.into();
        move |source| Self::Operation { operation, source }
    }
}

impl BrokerSettings {
    /// Settings for `url` with the default reconnect backoff (100 ms doubling to 10 s).
    pub fn new(url: impl Into<String>, connection_name: impl Into<String>) -> Self {
        Self {
            url: SecretString::from(url.into()),
            connection_name: connection_name.into(),
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(10),
        }
    }

    /// From `AMQP_URL` (default [`DEFAULT_AMQP_URL`]), `AMQP_RECONNECT_INITIAL_MS` and
    /// `AMQP_RECONNECT_MAX_MS`.
    pub fn from_env(connection_name: impl Into<String>) -> Result<Self, ConfigError> {
        let mut settings = Self::new(env_or("AMQP_URL", DEFAULT_AMQP_URL), connection_name);
        settings.reconnect_initial =
            env_millis("AMQP_RECONNECT_INITIAL_MS", settings.reconnect_initial)?;
        settings.reconnect_max = env_millis("AMQP_RECONNECT_MAX_MS", settings.reconnect_max)?;
        Ok(settings)
    }

    /// The same broker under another connection name (one connection per role).
    pub fn for_role(&self, connection_name: impl Into<String>) -> Self {
        Self {
            connection_name: connection_name.into(),
            ..self.clone()
        }
    }

    /// The URL with its password redacted, for logs.
    pub fn redacted_url(&self) -> String {
        redact_url(self.url.expose_secret())
    }

    /// The URL including credentials. Only for handing to a client library, never to a log.
    pub fn expose_url(&self) -> &str {
        self.url.expose_secret()
    }

    /// The reconnect schedule: exponential with jitter, capped, never giving up.
    pub fn reconnect_backoff(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.reconnect_initial)
            .with_max_delay(self.reconnect_max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// One connection attempt.
    pub async fn connect(&self) -> Result<Connection, BrokerError> {
        let properties = ConnectionProperties::default()
            .with_connection_name(self.connection_name.clone().into());
        Connection::connect(self.url.expose_secret(), properties)
            .await
            .map_err(|source| BrokerError::Connect {
                url: self.redacted_url(),
                source,
            })
    }

    /// Connect, retrying with backoff until it works or `shutdown` is triggered.
    pub async fn connect_with_backoff(
        &self,
        shutdown: &Shutdown,
    ) -> Result<Connection, BrokerError> {
        let mut delays = self.reconnect_backoff();
        loop {
            if shutdown.is_triggered() {
                return Err(BrokerError::ShuttingDown);
            }
            match self.connect().await {
                Ok(connection) => return Ok(connection),
                Err(error) => {
                    let delay = delays.next().unwrap_or(self.reconnect_max);
                    tracing::warn!(%error, retry_in = ?delay, connection = %self.connection_name, "broker connection failed");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {},
                        () = shutdown.triggered() => return Err(BrokerError::ShuttingDown),
                    }
                }
            }
        }
    }
}
