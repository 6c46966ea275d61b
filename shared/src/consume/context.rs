//! What a route's handler receives beside the payload: the transaction, the message's facts,
//! an outbox for follow-up events, and the service's state.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::handler::HandlerError;
use super::message::IncomingMessage;
use crate::event::EventType;
use crate::outbox::{self, OutboxMessage};
use crate::state::{KeyedState, StateScope};
use crate::timer::Timers;
use crate::trace_context::TraceParent;

/// One message being handled, inside the kit's transaction. Everything written through
/// [`Context::tx`] and [`Context::publish`] commits together with the message's inbox row, or
/// not at all.
pub struct Context<'a, S = ()> {
    pub(crate) message: &'a IncomingMessage,
    pub(crate) tx: &'a mut PgConnection,
    pub(crate) state: &'a S,
    pub(crate) scope: &'a StateScope,
    pub(crate) event_time: DateTime<Utc>,
}

impl<'a, S> Context<'a, S> {
    /// The transaction: the handler's reads and writes.
    pub fn tx(&mut self) -> &mut PgConnection {
        self.tx
    }

    /// The state given to [`super::Routes::with_state`] (a client, a cache, settings).
    pub fn state(&self) -> &'a S {
        self.state
    }

    /// The consumer's keyed state, in this transaction (see [`crate::state`]).
    pub fn keyed_state(&mut self) -> KeyedState<'_> {
        KeyedState {
            tx: self.tx,
            scope: self.scope,
            locked: Vec::new(),
        }
    }

    /// The consumer's timers, in this transaction (see [`crate::timer`]).
    pub fn timers(&mut self) -> Timers<'_> {
        Timers {
            tx: self.tx,
            scope: self.scope,
        }
    }

    /// Now, by the consumer's clock (the one tests move).
    pub fn now(&self) -> DateTime<Utc> {
        self.scope.clock.now()
    }

    /// `message_id`: the same through retries, dead-lettering and replay (the kit refuses a
    /// message without one before any handler runs).
    pub fn message_id(&self) -> &'a str {
        self.message.message_id().unwrap_or_default()
    }

    /// `message_id` as a UUID, when it is one (the kit's own messages always are).
    pub fn message_uuid(&self) -> Option<Uuid> {
        self.message_id().parse().ok()
    }

    /// `correlation_id`: the aggregate (order) the message is about; `""` when absent.
    pub fn correlation_id(&self) -> &'a str {
        self.message.correlation_id().unwrap_or_default()
    }

    /// The event type, e.g. `order.placed` (useful when one function serves several routes).
    pub fn message_type(&self) -> &'a str {
        self.message.message_type()
    }

    /// The kit's attempt counter: 1 on the first delivery, one more per retry.
    pub fn attempt(&self) -> u32 {
        self.message.attempt()
    }

    /// When the event happened: from its payload when its [`EventType`] says so
    /// (`with_event_time`), else the millisecond creation time of its outbox row
    /// (`x-created-at-ms`), else the AMQP timestamp, else now by the consumer's clock.
    pub fn event_time(&self) -> DateTime<Utc> {
        self.event_time
    }

    /// The trace the message belongs to (its `traceparent`), if it carries a valid one.
    pub fn trace(&self) -> Option<TraceParent> {
        self.message.trace()
    }

    /// A string header of the message.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.message.header(name)
    }

    /// The whole message, for what the accessors above do not cover.
    pub fn message(&self) -> &'a IncomingMessage {
        self.message
    }

    /// Publish `payload` as `event` about the same aggregate (correlation id), through the
    /// outbox in this transaction: it is sent once the handler's transaction commits, and
    /// continues this message's trace. Returns the new message's id.
    pub async fn publish<P: Serialize>(
        &mut self,
        event: EventType<P>,
        payload: &P,
    ) -> Result<Uuid, HandlerError> {
        let message = OutboxMessage::of(event, self.correlation_id(), payload)
            .map_err(|error| HandlerError::poison(crate::outbox::OutboxError::Serialize(error)))?;
        self.enqueue(&message).await
    }

    /// Write a hand-built outbox message (another aggregate, exchange or routing key) in this
    /// transaction. In a batch, the batch's messages are written together just before it
    /// commits (one statement instead of one each).
    pub async fn enqueue(&mut self, message: &OutboxMessage) -> Result<Uuid, HandlerError> {
        Ok(outbox::enqueue_or_defer(self.tx, message).await?)
    }
}

/// The messages of a batch, before any of them is handled (see [`super::Routes::before_batch`]).
pub struct Batch<'a, S = ()> {
    pub(crate) messages: &'a [&'a IncomingMessage],
    pub(crate) tx: &'a mut PgConnection,
    pub(crate) state: &'a S,
    pub(crate) scope: &'a StateScope,
}

impl<'a, S> Batch<'a, S> {
    /// The batch's transaction.
    pub fn tx(&mut self) -> &mut PgConnection {
        self.tx
    }

    /// The state given to [`super::Routes::with_state`].
    pub fn state(&self) -> &'a S {
        self.state
    }

    /// Lock these keys of the consumer's keyed state for the batch's transaction, in one
    /// global order (sorted), so that concurrent batches whose messages share keys cannot
    /// deadlock. Needed only when the keys are not the messages' correlation ids (the batch
    /// runs in correlation order already).
    pub async fn lock_state(&mut self, keys: &[&str]) -> Result<(), HandlerError> {
        let mut keys = keys.to_vec();
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            crate::state::lock_key(self.tx, &self.scope.consumer, key).await?;
        }
        Ok(())
    }

    /// The messages, in the order they will be handled.
    pub fn messages(&self) -> &'a [&'a IncomingMessage] {
        self.messages
    }

    /// The decoded payloads of the batch's `event` messages. A body that does not decode is
    /// skipped here: its route dead-letters it when it runs.
    pub fn payloads<P>(&self, event: EventType<P>) -> impl Iterator<Item = P> + 'a
    where
        P: serde::de::DeserializeOwned + 'a,
    {
        self.messages
            .iter()
            .filter(move |message| message.message_type() == event.name())
            .filter_map(|message| message.decode::<P>().ok())
    }
}
