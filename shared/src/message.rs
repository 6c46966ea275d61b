//! The message contract: the AMQP properties and headers every message of the kit carries,
//! whoever publishes it (the outbox relay, a retry, a replay).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};

/// `content_type` of every message: bodies are JSON.
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// `delivery_mode` 2: the broker writes the message to disk.
pub const PERSISTENT: u8 = 2;
/// The kit's own attempt counter (1 on first publish). `x-death` counts are not used: their
/// semantics changed between RabbitMQ versions.
pub const ATTEMPT_HEADER: &str = "x-attempt";
/// When the message was created (the outbox row), in milliseconds since the Unix epoch: the
/// AMQP `timestamp` has only seconds, too coarse for end-to-end latency.
pub const CREATED_AT_HEADER: &str = "x-created-at-ms";

/// The CloudEvents attributes every message carries as headers, in the binary content mode of
/// the CloudEvents AMQP binding (written for AMQP 1.0 application properties; here AMQP 0-9-1
/// headers, as long strings, with the binding's preferred `cloudEvents_` prefix). Each is
/// mapped from a property the contract already fixes, so the two can never disagree:
/// `id` = `message_id` (kept through retries and replays: one event, however often delivered),
/// `source` = `urn:msgkit:service:<app_id>`, `type` = the AMQP `type` (also the routing key),
/// `time` = the creation time in RFC 3339 with milliseconds, `subject` = `correlation_id` (the
/// aggregate). `datacontenttype` is the AMQP `content_type` property, as the binding maps it.
pub mod cloud_events {
    /// The CloudEvents version the attributes follow.
    pub const SPECVERSION: &str = "cloudEvents_specversion";
    /// The event's id: the message id.
    pub const ID: &str = "cloudEvents_id";
    /// The emitting service, as a URI: `urn:msgkit:service:<app_id>`.
    pub const SOURCE: &str = "cloudEvents_source";
    /// The event type: the message type.
    pub const TYPE: &str = "cloudEvents_type";
    /// When the event was created, RFC 3339.
    pub const TIME: &str = "cloudEvents_time";
    /// What the event is about: the correlation id (the aggregate, e.g. the order).
    pub const SUBJECT: &str = "cloudEvents_subject";
    /// The value of [`SPECVERSION`].
    pub const VERSION: &str = "1.0";

    /// The `source` attribute of events emitted by service `app_id`.
    pub fn source(app_id: &str) -> String {
        format!("urn:msgkit:service:{app_id}")
    }
}

/// Whether header `name` is one of the broker's own records of a hop: its dead-lettering
/// (`x-death`, `x-first-death-*`, `x-last-death-*`) or a quorum queue's `x-delivery-count`.
/// They describe where a copy has been, not the message: a retry, a dead letter written by
/// the kit or a replay starts without them.
pub fn is_broker_record(name: &str) -> bool {
    name == "x-death"
        || name == "x-delivery-count"
        || name.starts_with("x-first-death-")
        || name.starts_with("x-last-death-")
}

/// A message ready to publish, with everything the contract requires.
#[derive(Clone, Debug, PartialEq)]
pub struct OutgoingMessage {
    /// Stable id: the outbox row id, kept through retries, dead-lettering and replay.
    pub message_id: String,
    /// Event type, e.g. `order.placed` (AMQP `type`).
    pub message_type: String,
    /// Exchange to publish to.
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// The aggregate the event is about (the order id), sent as `correlation_id`.
    pub correlation_id: String,
    /// The emitting service (`app_id`).
    pub app_id: String,
    /// When the event was created (AMQP `timestamp`, seconds).
    pub created_at: DateTime<Utc>,
    /// The JSON body.
    pub body: Vec<u8>,
    /// String headers (`traceparent`, `tracestate`, ...).
    pub headers: BTreeMap<String, String>,
    /// The kit's attempt counter (`x-attempt`), 1 for the first publish.
    pub attempt: u32,
}

impl OutgoingMessage {
    /// A first-attempt event of type `message_type` (also its routing key) for the `events`
    /// exchange, with a fresh UUIDv7 id. Services publish through the outbox; this is for
    /// tools and tests that publish directly.
    pub fn event(
        message_type: &str,
        correlation_id: &str,
        app_id: &str,
        payload: &impl serde::Serialize,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            message_id: uuid::Uuid::now_v7().to_string(),
            message_type: message_type.to_owned(),
            exchange: crate::topology::EVENTS_EXCHANGE.to_owned(),
            routing_key: message_type.to_owned(),
            correlation_id: correlation_id.to_owned(),
            app_id: app_id.to_owned(),
            created_at: Utc::now(),
            body: serde_json::to_vec(payload)?,
            headers: BTreeMap::new(),
            attempt: 1,
        })
    }

    /// The AMQP properties of this message, as the contract fixes them.
    pub fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        for (name, value) in &self.headers {
            headers.insert(
                name.as_str().into(),
                AMQPValue::LongString(LongString::from(value.as_str())),
            );
        }
        headers.insert(
            ATTEMPT_HEADER.into(),
            AMQPValue::LongLongInt(i64::from(self.attempt)),
        );
        headers.insert(
            CREATED_AT_HEADER.into(),
            AMQPValue::LongLongInt(self.created_at.timestamp_millis()),
        );
        // A retry or replay of a message that already carries them (another CloudEvents
        // producer's included) keeps them: an event's id and source do not change in transit.
        for (name, value) in self.cloud_event_attributes() {
            if !self.headers.contains_key(name) {
                headers.insert(name.into(), AMQPValue::LongString(LongString::from(value)));
            }
        }
        let timestamp = u64::try_from(self.created_at.timestamp()).unwrap_or_default();
        BasicProperties::default()
            .with_message_id(self.message_id.as_str().into())
            .with_type(self.message_type.as_str().into())
            .with_content_type(CONTENT_TYPE_JSON.into())
            .with_delivery_mode(PERSISTENT)
            .with_timestamp(timestamp)
            .with_app_id(self.app_id.as_str().into())
            .with_correlation_id(self.correlation_id.as_str().into())
            .with_headers(headers)
    }
}

impl OutgoingMessage {
    /// The CloudEvents attributes of this message (see [`cloud_events`]), mapped from its
    /// properties.
    fn cloud_event_attributes(&self) -> [(&'static str, String); 6] {
        [
            (cloud_events::SPECVERSION, cloud_events::VERSION.to_owned()),
            (cloud_events::ID, self.message_id.clone()),
            (cloud_events::SOURCE, cloud_events::source(&self.app_id)),
            (cloud_events::TYPE, self.message_type.clone()),
            (
                cloud_events::TIME,
                self.created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ),
            (cloud_events::SUBJECT, self.correlation_id.clone()),
        ]
    }
}

/// A string header of a received message, if present and textual.
pub fn header_str<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a str> {
    let headers = properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(value) => std::str::from_utf8(value.as_bytes()).ok(),
        AMQPValue::ShortString(value) => Some(value.as_str()),
        _ => None,
    }
}

/// An integer header of a received message, whatever integer width the sender chose.
pub fn header_i64(properties: &BasicProperties, name: &str) -> Option<i64> {
    let headers = properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn properties_carry_the_whole_contract() {
        let message = OutgoingMessage {
            message_id: Uuid::now_v7().to_string(),
            message_type: "order.placed".into(),
            exchange: "events".into(),
            routing_key: "order.placed".into(),
            correlation_id: "order-1".into(),
            app_id: "order".into(),
            created_at: Utc::now(),
            body: b"{}".to_vec(),
            headers: BTreeMap::from([("traceparent".into(), "00-abc".into())]),
            attempt: 1,
        };
        let props = message.properties();
        assert_eq!(
            props.message_id().as_ref().map(|v| v.as_str()),
            Some(message.message_id.as_str())
        );
        assert_eq!(
            props.kind().as_ref().map(|v| v.as_str()),
            Some("order.placed")
        );
        assert_eq!(*props.delivery_mode(), Some(2));
        assert_eq!(
            props.content_type().as_ref().map(|v| v.as_str()),
            Some("application/json")
        );
        assert_eq!(props.app_id().as_ref().map(|v| v.as_str()), Some("order"));
        assert_eq!(
            props.correlation_id().as_ref().map(|v| v.as_str()),
            Some("order-1")
        );
        assert!(props.timestamp().is_some());
        assert_eq!(header_str(&props, "traceparent"), Some("00-abc"));
        assert_eq!(header_i64(&props, ATTEMPT_HEADER), Some(1));
    }

    #[test]
    fn cloud_events_attributes_are_mapped_from_the_properties() {
        let created_at = DateTime::parse_from_rfc3339("2026-11-30T19:40:05.123456Z")
            .expect("a time")
            .with_timezone(&Utc);
        let message = OutgoingMessage {
            message_id: "0193a1b2-0000-7000-8000-000000000001".into(),
            message_type: "order.placed".into(),
            exchange: "events".into(),
            routing_key: "order.placed".into(),
            correlation_id: "order-1".into(),
            app_id: "order".into(),
            created_at,
            body: b"{}".to_vec(),
            headers: BTreeMap::new(),
            attempt: 3,
        };
        let props = message.properties();
        let attribute = |name| header_str(&props, name);
        assert_eq!(attribute(cloud_events::SPECVERSION), Some("1.0"));
        assert_eq!(
            attribute(cloud_events::ID),
            Some("0193a1b2-0000-7000-8000-000000000001")
        );
        assert_eq!(
            attribute(cloud_events::SOURCE),
            Some("urn:msgkit:service:order")
        );
        assert_eq!(attribute(cloud_events::TYPE), Some("order.placed"));
        assert_eq!(
            attribute(cloud_events::TIME),
            Some("2026-11-30T19:40:05.123Z")
        );
        assert_eq!(attribute(cloud_events::SUBJECT), Some("order-1"));
    }

    #[test]
    fn cloud_events_attributes_already_carried_are_kept() {
        let mut message =
            OutgoingMessage::event("order.placed", "order-1", "", &serde_json::json!({}))
                .expect("a JSON body");
        message.headers.insert(
            cloud_events::SOURCE.into(),
            "https://shop.example/orders".into(),
        );
        let props = message.properties();
        assert_eq!(
            header_str(&props, cloud_events::SOURCE),
            Some("https://shop.example/orders")
        );
        assert_eq!(
            header_str(&props, cloud_events::ID),
            Some(message.message_id.as_str())
        );
    }
}
