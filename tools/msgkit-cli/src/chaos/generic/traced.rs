//! What the firehose says of one publish, and what it is from the kit's point of view.
//!
//! A copy on `amq.rabbitmq.trace` carries, in its headers, `exchange_name`, `routing_keys` (the
//! key plus CC/BCC), the original `properties` as a table (`message_id`, `type`, `headers`, ...)
//! and, on RabbitMQ 3.10 (seen on the real broker; not in the documented table of
//! <https://www.rabbitmq.com/docs/firehose>), `routed_queues`: where the broker routed it.

use chrono::{DateTime, Utc};
use lapin::message::Delivery;
use lapin::types::AMQPValue;

/// One message as it entered the broker.
#[derive(Debug, Clone)]
pub struct TracedPublish {
    /// The exchange it was published to (`""` for the default exchange).
    pub exchange: String,
    /// Its routing key, then any CC/BCC keys.
    pub routing_keys: Vec<String>,
    /// Its `message_id` property.
    pub message_id: Option<String>,
    /// Its `type` property.
    pub message_type: Option<String>,
    /// The queues the broker routed it to, when the broker says (3.10 does).
    pub routed_queues: Option<Vec<String>>,
    /// When the recorder received the copy (the broker stamps no time on it).
    pub seen_at: DateTime<Utc>,
}

/// What a publish is, from the kit's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishKind {
    /// An event, published to the events exchange: what the invariant counts.
    Event,
    /// A retry on its way through a delay tier (`msgkit.delay.<ms>ms`).
    Retry,
    /// A dead letter sent by a consumer to `<queue>.dlq` through the default exchange.
    DeadLetter,
    /// A fired timer, sent by the outbox relay to its consumer's queue (default exchange).
    TimerFired,
    /// Anything else (another tool's publish, a replay, ...).
    Other,
}

impl TracedPublish {
    /// The routing key it was published with.
    pub fn routing_key(&self) -> &str {
        self.routing_keys.first().map_or("", String::as_str)
    }

    /// Classify against the system's events exchange, by the exchange names the kit uses
    /// (`msgkit::topology`, `msgkit::consume` republishing, `msgkit::timer` firing).
    pub fn kind(&self, events_exchange: &str) -> PublishKind {
        if self.exchange == events_exchange {
            PublishKind::Event
        } else if self.exchange.starts_with("msgkit.delay.") {
            PublishKind::Retry
        } else if self.exchange.is_empty() && self.routing_key().ends_with(".dlq") {
            PublishKind::DeadLetter
        } else if self.exchange.is_empty()
            && self
                .message_type
                .as_deref()
                .is_some_and(|t| t.starts_with(msgkit::timer::MESSAGE_TYPE_PREFIX))
        {
            PublishKind::TimerFired
        } else {
            PublishKind::Other
        }
    }
}

/// Everything the recorder saw.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    /// Every publish, in the order the copies arrived.
    pub publishes: Vec<TracedPublish>,
    /// Times the recorder was not listening (its connection lost, the broker restarted):
    /// events published then are not in [`Recording::publishes`] and go unchecked.
    pub gaps: Vec<Gap>,
    /// Why the recording ended before its end marker arrived: publishes after that were not
    /// seen either.
    pub interrupted: Option<String>,
}

/// A time the recorder was not listening.
#[derive(Debug, Clone)]
pub struct Gap {
    /// When its subscription failed.
    pub from: DateTime<Utc>,
    /// When it was subscribed again, with the firehose back on.
    pub to: DateTime<Utc>,
    /// Why it failed.
    pub reason: String,
}

/// The publish a trace copy describes, or `None` if it carries no `exchange_name`.
pub(super) fn parse(delivery: &Delivery, seen_at: DateTime<Utc>) -> Option<TracedPublish> {
    let headers = delivery.properties.headers().as_ref()?.inner();
    let exchange = text(headers.get("exchange_name")?)?;
    let properties = match headers.get("properties") {
        Some(AMQPValue::FieldTable(table)) => Some(table.inner()),
        _ => None,
    };
    let property = |name: &str| properties.and_then(|p| p.get(name)).and_then(text);
    Some(TracedPublish {
        exchange,
        routing_keys: headers.get("routing_keys").map(texts).unwrap_or_default(),
        message_id: property("message_id"),
        message_type: property("type"),
        routed_queues: headers.get("routed_queues").map(texts),
        seen_at,
    })
}

fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn texts(value: &AMQPValue) -> Vec<String> {
    match value {
        AMQPValue::FieldArray(array) => array.as_slice().iter().filter_map(text).collect(),
        other => text(other).into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(exchange: &str, key: &str, message_type: &str) -> TracedPublish {
        TracedPublish {
            exchange: exchange.to_owned(),
            routing_keys: vec![key.to_owned()],
            message_id: Some("m".to_owned()),
            message_type: Some(message_type.to_owned()),
            routed_queues: None,
            seen_at: Utc::now(),
        }
    }

    #[test]
    fn the_kits_own_republishes_are_not_counted_as_events() {
        let kind = |p: TracedPublish| p.kind("events");
        assert_eq!(
            kind(publish("events", "order.placed", "order.placed")),
            PublishKind::Event
        );
        assert_eq!(
            kind(publish("msgkit.delay.100ms", "inventory", "order.placed")),
            PublishKind::Retry
        );
        assert_eq!(
            kind(publish("", "inventory.dlq", "order.placed")),
            PublishKind::DeadLetter
        );
        assert_eq!(
            kind(publish("", "reconcile", "msgkit.timer.callback-due")),
            PublishKind::TimerFired
        );
        assert_eq!(
            kind(publish("", "inventory", "order.placed")),
            PublishKind::Other
        );
    }
}
