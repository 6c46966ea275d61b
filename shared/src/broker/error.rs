//! What can go wrong talking to the broker.

use std::time::Duration;

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
    /// The broker answered something the kit cannot use (a queue of the wrong type).
    #[error("RabbitMQ {operation}: {reason}")]
    Protocol {
        /// What was being done.
        operation: String,
        /// What was wrong.
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
