//! A received message, as handlers see it.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use lapin::BasicProperties;
use lapin::types::AMQPValue;
use serde::de::DeserializeOwned;

use super::handler::HandlerError;
use crate::message::{
    ATTEMPT_HEADER, CREATED_AT_HEADER, OutgoingMessage, header_i64, header_str, is_broker_record,
};
use crate::trace_context::{TRACEPARENT, TraceParent};

/// Header: when a delayed retry is due (milliseconds since the Unix epoch).
pub const RETRY_AT_HEADER: &str = "x-retry-at";

/// A delivered message: its AMQP properties, headers and body.
#[derive(Clone, Debug)]
pub struct IncomingMessage {
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    pub(crate) redelivered: bool,
    pub(crate) properties: BasicProperties,
    pub(crate) body: Vec<u8>,
}

/// The body could not be decoded into the expected type.
#[derive(Debug, thiserror::Error)]
#[error("cannot decode {message_type} body: {source}")]
pub struct UndecodableBody {
    message_type: String,
    source: serde_json::Error,
}

impl IncomingMessage {
    /// A message as received (tests build one with `msgkit::testing::TestMessage`).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn new(
        exchange: &str,
        routing_key: &str,
        properties: BasicProperties,
        body: Vec<u8>,
    ) -> Self {
        Self {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            redelivered: false,
            properties,
            body,
        }
    }

    /// `message_id`: stable through retries, dead-lettering and replay.
    pub fn message_id(&self) -> Option<&str> {
        self.properties.message_id().as_ref().map(|v| v.as_str())
    }

    /// `type`, e.g. `order.placed`; `""` when absent.
    pub fn message_type(&self) -> &str {
        self.properties
            .kind()
            .as_ref()
            .map(|v| v.as_str())
            .unwrap_or_default()
    }

    /// `correlation_id`: the aggregate (order) the message is about.
    pub fn correlation_id(&self) -> Option<&str> {
        self.properties
            .correlation_id()
            .as_ref()
            .map(|v| v.as_str())
    }

    /// The kit's attempt counter (`x-attempt`), 1 for a first delivery.
    pub fn attempt(&self) -> u32 {
        header_i64(&self.properties, ATTEMPT_HEADER)
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n >= 1)
            .unwrap_or(1)
    }

    /// The sender's trace context, if valid.
    pub fn trace(&self) -> Option<TraceParent> {
        self.header(TRACEPARENT)?.parse().ok()
    }

    /// A string header.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_str(&self.properties, name)
    }

    /// Whether the broker redelivered it (a consumer died or a channel closed before the ack).
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// The exchange it was delivered through.
    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    /// The routing key it was delivered with.
    pub fn routing_key(&self) -> &str {
        &self.routing_key
    }

    /// The raw body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The JSON body as `T`; a body that does not decode is poison.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        serde_json::from_slice(&self.body).map_err(|source| {
            HandlerError::poison(UndecodableBody {
                message_type: self.message_type().to_owned(),
                source,
            })
        })
    }

    /// When the message was first created (`x-created-at-ms`, else the AMQP timestamp).
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        header_i64(&self.properties, CREATED_AT_HEADER)
            .and_then(|millis| Utc.timestamp_millis_opt(millis).single())
            .or_else(|| {
                self.properties
                    .timestamp()
                    .and_then(|secs| i64::try_from(secs).ok())
                    .and_then(|secs| Utc.timestamp_opt(secs, 0).single())
            })
    }

    /// When a delayed retry of this message is due, if it is one.
    pub(crate) fn retry_due_at(&self) -> Option<DateTime<Utc>> {
        let millis: i64 = self.header(RETRY_AT_HEADER)?.parse().ok()?;
        Utc.timestamp_millis_opt(millis).single()
    }

    /// This message, to publish again: same id, type, correlation, origin, body and string
    /// headers. The caller sets where it goes and what to add.
    pub(crate) fn to_outgoing(&self, exchange: &str, routing_key: &str) -> OutgoingMessage {
        let props = &self.properties;
        let headers: BTreeMap<String, String> = props
            .headers()
            .as_ref()
            .map(|table| {
                table
                    .inner()
                    .iter()
                    // A delay tier's expiry leaves the broker's records of that hop.
                    .filter(|(name, _)| !is_broker_record(name.as_str()))
                    .filter_map(|(name, value)| match value {
                        AMQPValue::LongString(v) => std::str::from_utf8(v.as_bytes())
                            .ok()
                            .map(|v| (name.to_string(), v.to_owned())),
                        AMQPValue::ShortString(v) => Some((name.to_string(), v.to_string())),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let created_at = self.created_at().unwrap_or_else(Utc::now);
        let text = |v: &Option<lapin::types::ShortString>| {
            v.as_ref().map(|v| v.to_string()).unwrap_or_default()
        };
        OutgoingMessage {
            message_id: self.message_id().unwrap_or_default().to_owned(),
            message_type: self.message_type().to_owned(),
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            correlation_id: text(props.correlation_id()),
            app_id: text(props.app_id()),
            created_at,
            body: self.body.clone(),
            headers,
            attempt: self.attempt(),
        }
    }
}
