//! Messages for handler tests, built without a broker and without AMQP types.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::consume::IncomingMessage;
use crate::event::EventType;
use crate::message::OutgoingMessage;
use crate::topology::EVENTS_EXCHANGE;
use crate::trace_context::TRACEPARENT;

/// A message as a consumer would receive it, for calling a [`crate::consume::Routes`] (or any
/// [`crate::consume::Handler`]) directly in a test:
///
/// ```
/// # #[derive(serde::Serialize)] struct Placed { order_id: u32 }
/// use msgkit::testing::TestMessage;
/// const PLACED: msgkit::EventType<Placed> = msgkit::EventType::new("order.placed");
/// let message = TestMessage::event(PLACED, &Placed { order_id: 7 }).correlation_id("7").attempt(2).build();
/// assert_eq!(message.message_type(), "order.placed");
/// assert_eq!(message.attempt(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct TestMessage {
    outgoing: OutgoingMessage,
    redelivered: bool,
}

impl TestMessage {
    /// `payload` as `event`, with a fresh message id, attempt 1, created now.
    pub fn event<P: Serialize>(event: EventType<P>, payload: &P) -> Self {
        let body = serde_json::to_vec(payload).unwrap_or_default();
        Self::raw(event.name(), body)
    }

    /// A message of type `message_type` with this exact body (e.g. one that does not decode).
    pub fn raw(message_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            outgoing: OutgoingMessage {
                message_id: uuid::Uuid::now_v7().to_string(),
                message_type: message_type.to_owned(),
                exchange: EVENTS_EXCHANGE.to_owned(),
                routing_key: message_type.to_owned(),
                correlation_id: String::new(),
                app_id: "test".to_owned(),
                created_at: Utc::now(),
                body: body.into(),
                headers: BTreeMap::new(),
                attempt: 1,
            },
            redelivered: false,
        }
    }

    /// The aggregate it is about.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.outgoing.correlation_id = id.into();
        self
    }

    /// Its message id (e.g. the same for two deliveries of one message).
    pub fn message_id(mut self, id: impl Into<String>) -> Self {
        self.outgoing.message_id = id.into();
        self
    }

    /// The kit's attempt counter.
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.outgoing.attempt = attempt;
        self
    }

    /// When it was created (its event time).
    pub fn created_at(mut self, at: DateTime<Utc>) -> Self {
        self.outgoing.created_at = at;
        self
    }

    /// A string header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.outgoing.headers.insert(name.into(), value.into());
        self
    }

    /// A `traceparent` header.
    pub fn trace(self, traceparent: &str) -> Self {
        self.header(TRACEPARENT, traceparent)
    }

    /// Marked as redelivered by the broker.
    pub fn redelivered(mut self) -> Self {
        self.redelivered = true;
        self
    }

    /// The message, with the properties and headers the kit's contract puts on the wire.
    pub fn build(self) -> IncomingMessage {
        let mut message = IncomingMessage::new(
            &self.outgoing.exchange,
            &self.outgoing.routing_key,
            self.outgoing.properties(),
            self.outgoing.body,
        );
        message.redelivered = self.redelivered;
        message
    }
}
