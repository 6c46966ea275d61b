//! A dead-lettered message as an operator reads it.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use msgkit::consume::{
    EXCEPTION_MESSAGE, EXCEPTION_TYPE, FAILED_AT, FAILED_SERVICE, FAILURE_REASON, ORIGINAL_QUEUE,
    ORIGINAL_ROUTING_KEY,
};
use serde::Serialize;

/// What an operator needs to know about one dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub queue: String,
    pub message_id: String,
    pub message_type: String,
    pub correlation_id: String,
    pub reason: String,
    pub exception_type: String,
    pub exception_message: String,
    pub failed_service: String,
    pub failed_at: Option<DateTime<Utc>>,
    pub original_queue: String,
    pub original_routing_key: String,
    pub attempt: Option<i64>,
    pub fingerprint: String,
    pub headers: BTreeMap<String, serde_json::Value>,
    pub body: serde_json::Value,
    #[serde(skip)]
    pub properties: BasicProperties,
    #[serde(skip)]
    pub raw_body: Vec<u8>,
}

impl DeadLetter {
    /// Read a message taken from `queue`. Messages dead-lettered by the broker itself (a crash
    /// loop ended by the delivery limit) carry no kit headers: their reason and origin come
    /// from the broker's `x-first-death-*` headers.
    pub fn from_message(queue: &str, properties: BasicProperties, body: Vec<u8>) -> Self {
        let headers = properties
            .headers()
            .as_ref()
            .map(to_json)
            .unwrap_or_default();
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let work_queue = queue.strip_suffix(".dlq").unwrap_or(queue).to_owned();
        let reason = text(FAILURE_REASON)
            .or_else(|| text("x-first-death-reason"))
            .unwrap_or_else(|| "unknown".to_owned());
        let exception_type = text(EXCEPTION_TYPE).unwrap_or_default();
        let failed_service = text(FAILED_SERVICE).unwrap_or_else(|| work_queue.clone());
        let failed_at = text(FAILED_AT)
            .and_then(|at| DateTime::parse_from_rfc3339(&at).ok())
            .map(|at| at.with_timezone(&Utc))
            .or_else(|| {
                properties
                    .timestamp()
                    .and_then(|secs| i64::try_from(secs).ok())
                    .and_then(|secs| Utc.timestamp_opt(secs, 0).single())
            });
        let body_json = serde_json::from_slice(&body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
        });
        let short = |v: &Option<lapin::types::ShortString>| {
            v.as_ref().map(|s| s.to_string()).unwrap_or_default()
        };
        Self {
            queue: queue.to_owned(),
            message_id: short(properties.message_id()),
            message_type: short(properties.kind()),
            correlation_id: short(properties.correlation_id()),
            fingerprint: fingerprint(&reason, &exception_type, &failed_service),
            reason,
            exception_type,
            exception_message: text(EXCEPTION_MESSAGE).unwrap_or_default(),
            failed_service,
            failed_at,
            original_queue: text(ORIGINAL_QUEUE)
                .or_else(|| text("x-first-death-queue"))
                .unwrap_or(work_queue),
            original_routing_key: text(ORIGINAL_ROUTING_KEY).unwrap_or_default(),
            attempt: headers.get("x-attempt").and_then(|v| v.as_i64()),
            headers,
            body: body_json,
            properties,
            raw_body: body,
        }
    }

    /// How long ago it failed.
    pub fn age(&self) -> Option<std::time::Duration> {
        self.failed_at
            .and_then(|at| (Utc::now() - at).to_std().ok())
    }
}

/// The failure fingerprint: reason, exception type and service, e.g.
/// `retries-exhausted/msgkit::faults::InjectedFailure@inventory`.
pub fn fingerprint(reason: &str, exception_type: &str, service: &str) -> String {
    let exception = if exception_type.is_empty() {
        "-"
    } else {
        exception_type
    };
    format!("{reason}/{exception}@{service}")
}

fn to_json(table: &FieldTable) -> BTreeMap<String, serde_json::Value> {
    table
        .inner()
        .iter()
        .map(|(key, value)| (key.to_string(), value_to_json(value)))
        .collect()
}

fn value_to_json(value: &AMQPValue) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        AMQPValue::Boolean(v) => J::Bool(*v),
        AMQPValue::ShortShortInt(v) => J::from(*v),
        AMQPValue::ShortShortUInt(v) => J::from(*v),
        AMQPValue::ShortInt(v) => J::from(*v),
        AMQPValue::ShortUInt(v) => J::from(*v),
        AMQPValue::LongInt(v) => J::from(*v),
        AMQPValue::LongUInt(v) => J::from(*v),
        AMQPValue::LongLongInt(v) => J::from(*v),
        AMQPValue::Float(v) => J::from(*v),
        AMQPValue::Double(v) => J::from(*v),
        AMQPValue::ShortString(v) => J::String(v.to_string()),
        AMQPValue::LongString(v) => J::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
        AMQPValue::Timestamp(v) => J::from(*v),
        AMQPValue::FieldTable(t) => J::Object(to_json(t).into_iter().collect()),
        AMQPValue::FieldArray(a) => J::Array(a.as_slice().iter().map(value_to_json).collect()),
        AMQPValue::ByteArray(b) => J::String(format!("{} bytes", b.as_slice().len())),
        AMQPValue::DecimalValue(d) => J::String(format!("{d:?}")),
        AMQPValue::Void => J::Null,
    }
}
