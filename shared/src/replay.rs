//! Replaying a dead letter: the message goes back to its work queue as the consumer first
//! saw it, with the same id, type, correlation and trace, so that the consumer's inbox still
//! recognises it; only the record of its failure is removed and the replay itself recorded.

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};

use crate::consume::{
    EXCEPTION_DETAIL, EXCEPTION_MESSAGE, EXCEPTION_TYPE, FAILED_AT, FAILED_SERVICE, FAILURE_REASON,
    RETRY_AT_HEADER,
};
use crate::message::{ATTEMPT_HEADER, is_broker_record};

/// How many times the message was replayed.
pub const REPLAY_COUNT_HEADER: &str = "x-replay-count";
/// When it was last replayed (RFC 3339).
pub const REPLAYED_AT_HEADER: &str = "x-replayed-at";

/// The kit's record of a failure: a replayed message starts clean of it (and of the broker's
/// own records, [`is_broker_record`]).
pub const FAILURE_HEADERS: [&str; 7] = [
    FAILURE_REASON,
    EXCEPTION_TYPE,
    EXCEPTION_MESSAGE,
    EXCEPTION_DETAIL,
    FAILED_SERVICE,
    FAILED_AT,
    RETRY_AT_HEADER,
];

/// The headers of a replay of a dead letter whose headers are `original`: failure headers
/// removed, the attempt counter reset to 1, the replay counted and stamped `replayed_at`.
/// Every other header (trace context, origin, the service's own) is kept as it was.
pub fn replay_headers(original: Option<&FieldTable>, replayed_at: DateTime<Utc>) -> FieldTable {
    let mut headers = FieldTable::default();
    let mut replays = 0i64;
    for (name, value) in original.into_iter().flat_map(FieldTable::inner) {
        let key = name.as_str();
        if key == REPLAY_COUNT_HEADER {
            if let AMQPValue::LongLongInt(n) = value {
                replays = *n;
            }
            continue;
        }
        if FAILURE_HEADERS.contains(&key) || is_broker_record(key) {
            continue;
        }
        headers.insert(name.clone(), value.clone());
    }
    headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(1));
    headers.insert(
        REPLAY_COUNT_HEADER.into(),
        AMQPValue::LongLongInt(replays + 1),
    );
    headers.insert(
        REPLAYED_AT_HEADER.into(),
        AMQPValue::LongString(LongString::from(replayed_at.to_rfc3339())),
    );
    headers
}

/// A dead letter's properties for its replay now: every property kept, the headers those of
/// [`replay_headers`].
pub fn replay_properties(original: &BasicProperties) -> BasicProperties {
    let headers = replay_headers(original.headers().as_ref(), Utc::now());
    original.clone().with_headers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{header_i64, header_str};

    fn dead_letter() -> BasicProperties {
        let mut headers = FieldTable::default();
        let text = |value: &str| AMQPValue::LongString(LongString::from(value));
        headers.insert("traceparent".into(), text("00-abc-def-01"));
        headers.insert(FAILURE_REASON.into(), text("retries-exhausted"));
        headers.insert(EXCEPTION_TYPE.into(), text("test::Boom"));
        headers.insert("x-original-queue".into(), text("inventory"));
        headers.insert("x-first-death-reason".into(), text("delivery_limit"));
        headers.insert("x-last-death-queue".into(), text("inventory"));
        headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(5));
        headers.insert(REPLAY_COUNT_HEADER.into(), AMQPValue::LongLongInt(2));
        BasicProperties::default()
            .with_message_id("m-1".into())
            .with_headers(headers)
    }

    #[test]
    fn a_replay_drops_the_failure_keeps_the_rest_and_counts_itself() {
        let replay = replay_properties(&dead_letter());
        assert_eq!(
            replay.message_id().as_ref().map(|id| id.as_str()),
            Some("m-1")
        );
        assert_eq!(header_str(&replay, "traceparent"), Some("00-abc-def-01"));
        assert_eq!(header_str(&replay, "x-original-queue"), Some("inventory"));
        for gone in [
            FAILURE_REASON,
            EXCEPTION_TYPE,
            "x-first-death-reason",
            "x-last-death-queue",
        ] {
            assert_eq!(header_str(&replay, gone), None, "{gone} is kept");
        }
        assert_eq!(header_i64(&replay, ATTEMPT_HEADER), Some(1));
        assert_eq!(header_i64(&replay, REPLAY_COUNT_HEADER), Some(3));
        assert!(header_str(&replay, REPLAYED_AT_HEADER).is_some());
    }

    #[test]
    fn a_message_without_headers_is_replayed_as_the_first_replay() {
        let headers = replay_headers(None, Utc::now());
        assert_eq!(
            headers.inner().get(REPLAY_COUNT_HEADER),
            Some(&AMQPValue::LongLongInt(1))
        );
        assert_eq!(
            headers.inner().get(ATTEMPT_HEADER),
            Some(&AMQPValue::LongLongInt(1))
        );
    }
}
