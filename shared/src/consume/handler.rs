//! What a handler is and what it may answer.

use std::fmt;
use std::future::Future;

use sqlx::PgConnection;

use super::message::IncomingMessage;

/// Handles one message. The kit calls it inside a database transaction that also holds the
/// message's inbox row: whatever the handler writes through `tx` (its state changes and any
/// outgoing messages, with [`crate::outbox::enqueue`]) commits together with the fact that the
/// message was handled, or not at all.
///
/// Implement it with `async fn handle(&self, message: &IncomingMessage, tx: &mut PgConnection)
/// -> Result<(), HandlerError>`.
pub trait Handler: Send + Sync + 'static {
    /// Apply the message's effects in `tx`. `Ok` acknowledges the message after the
    /// transaction commits; an error rolls it back and decides between retry and dead letter.
    fn handle(
        &self,
        message: &IncomingMessage,
        tx: &mut PgConnection,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Called once a batch's transaction has begun, before any of its messages is handled
    /// (consumers whose `batch` is above 1). The runtime handles a batch in correlation order,
    /// which keeps batches from deadlocking over each correlation's own rows; a handler whose
    /// messages also lock rows shared across correlations (the stock of a product) takes every
    /// such lock of the batch here, in one global order, so that concurrent batches cannot
    /// deadlock over those either. An error rolls the batch back, and its messages are handled
    /// one by one. The default does nothing.
    fn before_batch(
        &self,
        messages: &[&IncomingMessage],
        tx: &mut PgConnection,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = (messages, tx);
        async { Ok(()) }
    }

    /// Called once by the consumer that will run this handler, as it starts: [`super::Routes`]
    /// take the consumer's name, clock and state limits for their keyed state here, and the
    /// consumer's metrics for their late events. The default does nothing.
    fn configure(&mut self, setup: &ConsumerSetup<'_>) {
        let _ = setup;
    }

    /// Whether it handles fired timers, so that its consumer must fire them (see
    /// [`crate::timer`]). The default: no.
    fn handles_timers(&self) -> bool {
        false
    }

    /// The event types whose late events it counts (routes with an allowed lateness, see
    /// [`crate::event_time`]), so that their `msgkit_late_events_total` series exist from the
    /// consumer's start. The default: none.
    fn late_event_types(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// Whether sequenced messages are applied in their key's order (see
    /// [`crate::key_order`]). The default: no, messages are handled as they come.
    fn key_order(&self) -> bool {
        false
    }
}

/// What a consumer hands its handler as it starts ([`Handler::configure`]).
pub struct ConsumerSetup<'a> {
    pub(crate) config: &'a super::ConsumerConfig,
    pub(crate) metrics: &'a crate::metrics::QueueMetrics,
}

impl ConsumerSetup<'_> {
    /// The consumer's settings.
    pub fn config(&self) -> &super::ConsumerConfig {
        self.config
    }
}

/// How a failure is treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// May succeed later (a timeout, a database hiccup, a gateway error): retried with
    /// backoff, dead-lettered as `retries-exhausted` after the last attempt.
    Transient,
    /// Will never succeed (undecodable body, unknown type, failed validation, a permanent
    /// business error): dead-lettered at once as `poison`.
    Poison,
}

/// A handler's failure: its kind and what an operator needs to read in the dead-letter
/// headers (`x-exception-type`, `x-exception-message`, `x-exception-detail`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerError {
    kind: FailureKind,
    error_type: String,
    message: String,
    detail: String,
}

impl HandlerError {
    fn from_error<E>(kind: FailureKind, error: &E) -> Self
    where
        E: std::error::Error + ?Sized,
    {
        let mut detail = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            detail.push_str("\ncaused by: ");
            detail.push_str(&cause.to_string());
            source = cause.source();
        }
        Self {
            kind,
            error_type: std::any::type_name::<E>().to_owned(),
            message: error.to_string(),
            detail,
        }
    }

    /// A failure worth retrying.
    pub fn transient<E: std::error::Error>(error: E) -> Self {
        Self::from_error(FailureKind::Transient, &error)
    }

    /// A failure no retry can fix.
    pub fn poison<E: std::error::Error>(error: E) -> Self {
        Self::from_error(FailureKind::Poison, &error)
    }

    /// A failure described by hand: `error_type` names the class of problem
    /// (e.g. `inventory::UnknownSku`).
    pub fn new(
        kind: FailureKind,
        error_type: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let message = message.into();
        Self {
            kind,
            error_type: error_type.into(),
            detail: message.clone(),
            message,
        }
    }

    /// The kind.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    /// Whether it is poison.
    pub fn is_poison(&self) -> bool {
        self.kind == FailureKind::Poison
    }

    /// The error's type (`x-exception-type`).
    pub fn error_type(&self) -> &str {
        &self.error_type
    }

    /// The error's message (`x-exception-message`).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error with its causes (`x-exception-detail`).
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} failure ({}): {}",
            self.kind, self.error_type, self.message
        )
    }
}

impl std::error::Error for HandlerError {}

/// Database errors are transient: the transaction rolled back and a later attempt may work.
impl From<sqlx::Error> for HandlerError {
    fn from(error: sqlx::Error) -> Self {
        Self::transient(error)
    }
}

/// Writing a follow-up message failed: on the database (transient) or serialising (poison,
/// the same payload will never serialise).
impl From<crate::outbox::OutboxError> for HandlerError {
    fn from(error: crate::outbox::OutboxError) -> Self {
        match error {
            crate::outbox::OutboxError::Serialize(_) => Self::poison(error),
            crate::outbox::OutboxError::Database(_) => Self::transient(error),
        }
    }
}
