//! The transactional outbox: a message is written as a row in the same database transaction
//! as the state change that caused it, and a relay publishes it afterwards. Either both the
//! state change and the message exist, or neither does; the broker being away only delays
//! publishing.
//!
//! ```no_run
//! # async fn example(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! use msgkit::outbox::{self, OutboxMessage};
//! let mut tx = pool.begin().await?;
//! // ... the state change, e.g. INSERT INTO orders ...
//! let message = OutboxMessage::event("order.placed", "order-42", &serde_json::json!({"order_id": "order-42"}))?;
//! outbox::enqueue(&mut tx, &message).await?;
//! tx.commit().await?;
//! # Ok(()) }
//! ```

pub(crate) mod deferred;
mod relay;
mod store;

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::PgConnection;
use tracing::Instrument;
use uuid::Uuid;

use crate::telemetry::spans;
use crate::topology::EVENTS_EXCHANGE;
use crate::trace_context::{TRACEPARENT, TraceParent};

pub(crate) use relay::{Dispatch, DispatchSlot};
pub use relay::{OutboxRelay, RelayConfig, RelayError, RelayStats};
pub(crate) use store::PendingRow;
pub use store::{Backlog, backlog};

/// What can go wrong writing to or reading the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The database refused or could not be reached.
    #[error("outbox database operation failed: {0}")]
    Database(#[from] sqlx::Error),
    /// The payload could not be serialised to JSON.
    #[error("outbox payload is not serialisable: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// A message to be written to the outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxMessage {
    id: Uuid,
    aggregate_id: String,
    exchange: String,
    routing_key: String,
    message_type: String,
    payload: serde_json::Value,
    headers: BTreeMap<String, String>,
    /// Numbered per aggregate in this sequence when written ([`crate::key_order`]).
    key_sequence: Option<String>,
}

impl OutboxMessage {
    /// An event of type `message_type` (e.g. `order.placed`) about `aggregate_id`, for the
    /// `events` exchange with the type as routing key. The id is a fresh UUIDv7, which becomes
    /// the AMQP `message_id`.
    pub fn event(
        message_type: impl Into<String>,
        aggregate_id: impl Into<String>,
        payload: &impl Serialize,
    ) -> Result<Self, serde_json::Error> {
        let message_type = message_type.into();
        Ok(Self {
            id: Uuid::now_v7(),
            aggregate_id: aggregate_id.into(),
            exchange: EVENTS_EXCHANGE.to_owned(),
            routing_key: message_type.clone(),
            message_type,
            payload: serde_json::to_value(payload)?,
            headers: BTreeMap::new(),
            key_sequence: None,
        })
    }

    /// A typed event: `payload` as `event`, about `aggregate_id` (see [`OutboxMessage::event`]).
    pub fn of<P: Serialize>(
        event: crate::EventType<P>,
        aggregate_id: impl Into<String>,
        payload: &P,
    ) -> Result<Self, serde_json::Error> {
        let message = Self::event(event.name(), aggregate_id, payload)?;
        Ok(match event.sequence() {
            Some(sequence) => message.in_sequence(sequence),
            None => message,
        })
    }

    /// Number this message per aggregate in `sequence` when it is written (headers
    /// `x-key-sequence` and `x-key-seq`, see [`crate::key_order`]); typed events declared
    /// with [`crate::EventType::in_sequence`] get it from [`OutboxMessage::of`].
    pub fn in_sequence(mut self, sequence: impl Into<String>) -> Self {
        self.key_sequence = Some(sequence.into());
        self
    }

    /// Publish to another exchange.
    pub fn with_exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = exchange.into();
        self
    }

    /// Publish with another routing key than the type.
    pub fn with_routing_key(mut self, routing_key: impl Into<String>) -> Self {
        self.routing_key = routing_key.into();
        self
    }

    /// Continue this trace instead of the current one (by default [`enqueue`] continues the
    /// trace of the request or message being handled).
    pub fn with_trace(self, trace: &TraceParent) -> Self {
        self.with_header(TRACEPARENT, trace.to_string())
    }

    /// Add a string header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// The message id (the row's primary key and the AMQP `message_id`).
    pub fn id(&self) -> Uuid {
        self.id
    }
}

/// Write `message` to the outbox inside the caller's transaction. Call it after the state
/// change it reports (which locks the aggregate's row), so that events of one aggregate are
/// numbered in commit order.
///
/// The message carries the trace of the work that writes it (the HTTP request, the message
/// being handled) through a `create` span, unless [`OutboxMessage::with_trace`] named a
/// parent explicitly.
pub async fn enqueue(
    conn: &mut PgConnection,
    message: &OutboxMessage,
) -> Result<Uuid, OutboxError> {
    let (message, span) = traced(message);
    store::insert(conn, &message).instrument(span).await?;
    Ok(message.id)
}

/// [`enqueue`], except inside a consumer batch, which writes the batch's messages together
/// before it commits ([`deferred`]).
pub(crate) async fn enqueue_or_defer(
    conn: &mut PgConnection,
    message: &OutboxMessage,
) -> Result<Uuid, OutboxError> {
    let (message, span) = traced(message);
    let id = message.id;
    if let Some(message) = deferred::defer(message) {
        store::insert(conn, &message).instrument(span).await?;
    }
    Ok(id)
}

/// `message` continuing the current trace (or the one it names) through a `create` span.
fn traced(message: &OutboxMessage) -> (OutboxMessage, tracing::Span) {
    let span = spans::create(spans::Created {
        message_id: message.id,
        message_type: &message.message_type,
        exchange: &message.exchange,
        routing_key: &message.routing_key,
        aggregate_id: &message.aggregate_id,
    });
    let parent = message
        .headers
        .get(TRACEPARENT)
        .and_then(|value| value.parse::<TraceParent>().ok())
        .or_else(crate::telemetry::context::current);
    let trace = crate::telemetry::context::continue_trace(&span, parent);
    let mut message = message.clone();
    message
        .headers
        .insert(TRACEPARENT.to_owned(), trace.to_string());
    (message, span)
}
