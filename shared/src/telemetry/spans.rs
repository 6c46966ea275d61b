//! The spans of one message's journey, in one place so that every hop names its attributes
//! the same way (OpenTelemetry messaging and HTTP semantic conventions):
//!
//! - [`http_server`]: a request to a service's HTTP API;
//! - [`create`]: a message written to the outbox, inside the work that caused it;
//! - [`publish`]: the relay sending it to the broker;
//! - [`process`]: a consumer handling it.
//!
//! Each builder only opens the span; the caller continues the trace into it
//! ([`super::context::continue_trace`]), except [`publish`], which also writes the span's
//! context into the message it sends.
//!
//! The spans a request's or a message's log lines hang off are ERROR level, so that a quiet
//! `RUST_LOG` never disables the span that carries their trace ids; the outbox's own steps
//! are INFO. Each span keeps the target of the module that used to open it, so that
//! `RUST_LOG` directives per module (`msgkit::outbox=debug`) still reach it.
//!
//! Integer attributes are recorded as `i64`: tracing-opentelemetry 0.34 has no `u64` case and
//! exports an unsigned value (`u16`, `u32`, `usize`) as its decimal string, which a collector
//! cannot compare or sort as the int the conventions type it as.

use tracing::Span;
use tracing::field::Empty;
use uuid::Uuid;

use crate::consume::IncomingMessage;
use crate::message::OutgoingMessage;
use crate::trace_context::{TRACEPARENT, TraceParent};

/// A `server` span for an HTTP request, named `METHOD /route`; the caller records
/// `http.response.status_code`, and `url.query` when the request has one (redacted first:
/// [`super::http::redact_query`]).
pub fn http_server(method: &str, route: &str) -> Span {
    tracing::error_span!(
        target: "msgkit::telemetry::http",
        "http",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        url.query = Empty,
        http.response.status_code = Empty,
        trace_id = Empty,
        span_id = Empty,
    )
}

/// The message an outbox row will become, as the `create` span describes it.
#[derive(Clone, Copy, Debug)]
pub struct Created<'a> {
    /// The row id, the future `message_id`.
    pub message_id: Uuid,
    /// The event type, e.g. `order.placed`.
    pub message_type: &'a str,
    /// The exchange it will be published to.
    pub exchange: &'a str,
    /// Its routing key.
    pub routing_key: &'a str,
    /// The aggregate it is about (the future `correlation_id`).
    pub aggregate_id: &'a str,
}

/// A `create` span (producer) for a message written to the outbox, named `<type> create`.
pub fn create(message: Created<'_>) -> Span {
    tracing::info_span!(
        target: "msgkit::outbox",
        "create",
        otel.name = format!("{} create", message.message_type),
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "create",
        messaging.destination.name = %message.exchange,
        messaging.rabbitmq.destination.routing_key = %message.routing_key,
        messaging.message.id = %message.message_id,
        messaging.message.conversation_id = %message.aggregate_id,
        trace_id = Empty,
        span_id = Empty,
    )
}

/// A `publish` span (producer) for `message`, named `<type> publish`, continuing the trace of
/// the work that wrote it (its `traceparent` header); the message then carries the span's
/// context, so consumers become its children. A refusal by the broker is recorded in
/// `otel.status_code` / `otel.status_description` by the caller.
pub fn publish(message: &mut OutgoingMessage) -> Span {
    let span = tracing::info_span!(
        target: "msgkit::outbox::relay",
        "publish",
        otel.name = format!("{} publish", message.message_type),
        otel.kind = "producer",
        otel.status_code = Empty,
        otel.status_description = Empty,
        messaging.system = "rabbitmq",
        messaging.operation.type = "send",
        messaging.destination.name = %message.exchange,
        messaging.rabbitmq.destination.routing_key = %message.routing_key,
        messaging.message.id = %message.message_id,
        messaging.message.conversation_id = %message.correlation_id,
        trace_id = Empty,
        span_id = Empty,
    );
    let parent = message
        .headers
        .get(TRACEPARENT)
        .and_then(|value| value.parse::<TraceParent>().ok());
    let trace = super::context::continue_trace(&span, parent);
    message
        .headers
        .insert(TRACEPARENT.to_owned(), trace.to_string());
    span
}

/// The name of a consumer's `process` spans: `<queue> process`. A consumer computes it once,
/// not per message.
pub fn process_name(queue: &str) -> String {
    format!("{queue} process")
}

/// A `process` span (consumer) for `message` taken from `queue`; `name` comes from
/// [`process_name`]. The caller continues the message's trace into it and records
/// `otel.status_code` and `msgkit.outcome` (ack, retry, dead-letter, duplicate).
pub fn process(name: &str, queue: &str, message: &IncomingMessage) -> Span {
    tracing::error_span!(
        target: "msgkit::consume::runtime",
        "process",
        otel.name = name,
        otel.kind = "consumer",
        otel.status_code = Empty,
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.destination.name = %queue,
        messaging.rabbitmq.destination.routing_key = %message.routing_key(),
        messaging.message.id = message.message_id().unwrap_or_default(),
        messaging.message.conversation_id = message.correlation_id().unwrap_or_default(),
        messaging.message.type = message.message_type(),
        msgkit.attempt = i64::from(message.attempt()),
        msgkit.outcome = Empty,
        trace_id = Empty,
        span_id = Empty,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_names(span: &Span) -> Vec<String> {
        span.metadata()
            .map(|metadata| {
                metadata
                    .fields()
                    .iter()
                    .map(|f| f.name().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The consumer is being rewritten to build its spans here: the builder must give it the
    /// fields its `process` spans have always had, which dashboards and the span tree test
    /// read.
    #[test]
    fn a_process_span_has_the_consumers_fields() {
        let message = IncomingMessage::new(
            "events",
            "order.placed",
            lapin::BasicProperties::default()
                .with_message_id("m-1".into())
                .with_type("order.placed".into()),
            b"{}".to_vec(),
        );
        let fields = tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            field_names(&process(&process_name("inventory"), "inventory", &message))
        });
        assert_eq!(
            fields,
            [
                "otel.name",
                "otel.kind",
                "otel.status_code",
                "messaging.system",
                "messaging.operation.type",
                "messaging.destination.name",
                "messaging.rabbitmq.destination.routing_key",
                "messaging.message.id",
                "messaging.message.conversation_id",
                "messaging.message.type",
                "msgkit.attempt",
                "msgkit.outcome",
                "trace_id",
                "span_id",
            ]
        );
    }

    #[test]
    fn a_publish_span_puts_its_context_into_the_message() {
        let mut message =
            OutgoingMessage::event("order.placed", "order-1", "order", &serde_json::json!({}))
                .expect("a JSON body");
        let parent = TraceParent::new_root();
        message
            .headers
            .insert(TRACEPARENT.to_owned(), parent.to_string());
        let _span = publish(&mut message);
        let sent: TraceParent = message.headers[TRACEPARENT].parse().expect("a traceparent");
        assert_eq!(sent.trace_id(), parent.trace_id(), "the trace continues");
    }
}
