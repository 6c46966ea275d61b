//! Rules as data: what an operator writes, before it is compiled.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::event::Event;

/// A rule as stored and edited: the key it partitions events by, what it looks for, and how
/// serious an alert is. [`compile`](super::compile) validates it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSpec {
    /// The event field the rule partitions by; only `"user_id"` is supported.
    pub key: String,
    /// What the rule looks for.
    pub kind: Kind,
    /// The severity of the alerts it raises.
    pub severity: Severity,
}

/// The four kinds of pattern. Windows are in event time and exclusive: an event exactly
/// `within` (or `over`) after the start is outside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Kind {
    /// One event matches `when` (bare fields).
    Condition {
        /// A CEL expression over the event's bare fields.
        when: String,
    },
    /// An event matching `first` (bare fields) followed within `within` by one matching
    /// `then` (which sees `a.*` for the first event, `b.*` and the bare fields for the second).
    Sequence {
        /// Starts a partial match.
        first: String,
        /// Completes it.
        then: String,
        /// Exclusive window from the first event's time.
        #[serde(rename = "within_ms", with = "millis")]
        within: Duration,
        /// `true`: the second event must be the key's very next event; `false`: any later one.
        strict: bool,
    },
    /// An event matching `first` NOT followed by one matching `then` within `within`:
    /// decided by a timer.
    Absence {
        /// Starts the wait.
        first: String,
        /// Cancels it (sees `a.*`, `b.*` and the bare fields of the second event).
        then: String,
        /// Exclusive window from the first event's time.
        #[serde(rename = "within_ms", with = "millis")]
        within: Duration,
    },
    /// The count or sum of events matching `when` in the sliding window `(t - over, t]` goes
    /// above `above`.
    Threshold {
        /// Which events count.
        when: String,
        /// What is added up.
        aggregate: Aggregate,
        /// The window length.
        #[serde(rename = "over_ms", with = "millis")]
        over: Duration,
        /// The alert fires when the aggregate becomes strictly greater than this.
        above: i64,
    },
}

/// What a threshold rule adds up over its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// The number of matching events.
    Count,
    /// The sum of their `amount_cents`.
    SumAmountCents,
}

/// How serious an alert is; notify tells the user about `High` ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look.
    Low,
    /// Worth a look soon.
    Medium,
    /// Tell the user now.
    High,
}

/// The event field a rule partitions by, once validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyField {
    /// `Event::user_id`.
    UserId,
}

impl KeyField {
    /// Parses the stored key name; `None` for a key the engine does not support.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "user_id" => Some(Self::UserId),
            _ => None,
        }
    }

    /// The value of this key in `event`: the state to load for it.
    pub fn of<'e>(&self, event: &'e Event) -> &'e str {
        match self {
            Self::UserId => &event.user_id,
        }
    }
}

/// The rule the migration installs: a transaction over 10,000.00 followed by the user's very
/// next transaction from another location within 5 minutes.
pub fn default_rule() -> RuleSpec {
    RuleSpec {
        key: "user_id".to_owned(),
        kind: Kind::Sequence {
            first: "amount_cents > 1000000".to_owned(),
            then: "b.location != a.location".to_owned(),
            within: Duration::from_secs(5 * 60),
            strict: true,
        },
        severity: Severity::High,
    }
}

/// Durations as whole milliseconds in JSON, which is what an HTTP client writes naturally.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        let millis = u64::try_from(value.as_millis()).unwrap_or(u64::MAX);
        serializer.serialize_u64(millis)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}
