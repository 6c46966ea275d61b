//! The JSON Schema of the AMQP headers the kit puts on every event: the message contract of
//! [`crate::message`] (attempt, creation time, CloudEvents attributes), the trace context and
//! [`crate::key_order`]'s sequence numbers. It is the kit's, not a contracts crate's: every
//! document describes the same headers.

use crate::key_order::{KEY_SEQ_HEADER, KEY_SEQUENCE_HEADER};
use crate::message::{ATTEMPT_HEADER, CREATED_AT_HEADER, cloud_events};
use serde_json::{Map, Value, json};

/// The headers of an event of type `event_type`, numbered in `sequence` when it has one.
pub(super) fn schema(event_type: &str, sequence: Option<&str>) -> Value {
    let mut properties = Map::new();
    let mut property = |name: &str, schema: Value| properties.insert(name.to_owned(), schema);
    property(
        ATTEMPT_HEADER,
        json!({
            "type": "integer",
            "minimum": 1,
            "description": "The kit's attempt counter: 1 when first published, one more on \
                each retry, 1 again on a replay (the broker's x-death counts are not used).",
        }),
    );
    property(
        CREATED_AT_HEADER,
        json!({
            "type": "integer",
            "description": "When the event was written to its outbox, in milliseconds since \
                the Unix epoch (the AMQP timestamp has only seconds).",
        }),
    );
    property(
        "traceparent",
        json!({
            "type": "string",
            "description": "W3C trace context of the request or delivery that wrote the event.",
        }),
    );
    property(
        "tracestate",
        json!({ "type": "string", "description": "W3C trace state, when the trace has one." }),
    );
    for (name, schema) in cloud_events(event_type) {
        property(name, schema);
    }
    let mut required = vec![ATTEMPT_HEADER, CREATED_AT_HEADER];
    if let Some(sequence) = sequence {
        property(
            KEY_SEQUENCE_HEADER,
            json!({
                "type": "string",
                "const": sequence,
                "description": "The sequence the event is numbered in, per aggregate: \
                    consumers in key order apply one aggregate's events in this order.",
            }),
        );
        property(
            KEY_SEQ_HEADER,
            json!({
                "type": "string",
                "pattern": "^[1-9][0-9]*$",
                "description": "The event's number in its aggregate's sequence (1, 2, ...).",
            }),
        );
        required.extend([KEY_SEQUENCE_HEADER, KEY_SEQ_HEADER]);
    }
    json!({
        "type": "object",
        "description": "AMQP headers. The AMQP properties carry the rest of the contract: \
            message_id (the outbox row's UUID, kept through retries and replays), type (the \
            event type), app_id (the publishing service), correlation_id (the aggregate), \
            timestamp, content_type application/json and delivery_mode 2. Retries and \
            dead-lettering add headers of their own (docs/architecture.md).",
        "properties": properties,
        "required": required,
    })
}

/// The CloudEvents attributes in the AMQP binding's `cloudEvents_` form, mapped from the
/// message's own properties (optional: messages written before they existed lack them).
fn cloud_events(event_type: &str) -> Vec<(&'static str, Value)> {
    vec![
        (
            cloud_events::SPECVERSION,
            json!({
                "type": "string",
                "const": cloud_events::VERSION,
                "description": "CloudEvents version.",
            }),
        ),
        (
            cloud_events::ID,
            json!({ "type": "string", "description": "The AMQP message_id." }),
        ),
        (
            cloud_events::SOURCE,
            json!({
                "type": "string",
                "format": "uri",
                "pattern": "^urn:msgkit:service:",
                "description": "The publishing service: urn:msgkit:service:<AMQP app_id>.",
            }),
        ),
        (
            cloud_events::TYPE,
            json!({
                "type": "string",
                "const": event_type,
                "description": "The event type (AMQP type).",
            }),
        ),
        (
            cloud_events::TIME,
            json!({
                "type": "string",
                "format": "date-time",
                "description": "When the event was written to its outbox (RFC 3339, UTC, \
                    milliseconds).",
            }),
        ),
        (
            cloud_events::SUBJECT,
            json!({
                "type": "string",
                "description": "The aggregate the event is about (AMQP correlation_id).",
            }),
        ),
    ]
}
