//! Event types: a name (also the routing key on the events exchange) bound to its payload's
//! Rust type, so that a route, a binding and a publish of the same event cannot disagree on
//! either, and a misspelt event does not compile.
//!
//! A contracts crate declares each event once:
//!
//! ```
//! use msgkit::EventType;
//! #[derive(serde::Serialize, serde::Deserialize)]
//! pub struct OrderPlaced { pub order_id: String }
//! pub const ORDER_PLACED: EventType<OrderPlaced> = EventType::new("order.placed");
//! assert_eq!(ORDER_PLACED.name(), "order.placed");
//! ```

use std::fmt;
use std::marker::PhantomData;

use chrono::{DateTime, Utc};

/// An event's type name and, as a type parameter, its JSON payload. Several event types may
/// share one payload type (`payment.failed` and `inventory.rejected` both carry an order and a
/// reason); one event type has exactly one payload type.
pub struct EventType<P> {
    name: &'static str,
    // `fn() -> P`: the marker owns no `P`, so an event type is `Send`, `Sync` and `Copy` for any
    // payload.
    payload: PhantomData<fn() -> P>,
    event_time: Option<fn(&P) -> DateTime<Utc>>,
    sequence: Option<&'static str>,
}

impl<P> EventType<P> {
    /// The event type named `name` (`<service>.<event>`, e.g. `order.placed`).
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            payload: PhantomData,
            event_time: None,
            sequence: None,
        }
    }

    /// The event's own time is in its payload: consumers see it as the event time (watermarks
    /// and lateness are judged by it). Without it, the event time is when the event was
    /// written to the outbox (`x-created-at-ms`).
    ///
    /// ```
    /// # use chrono::{DateTime, Utc};
    /// # #[derive(serde::Deserialize)] pub struct Tx { occurred_at: DateTime<Utc> }
    /// use msgkit::EventType;
    /// pub const RECORDED: EventType<Tx> =
    ///     EventType::new("transaction.recorded").with_event_time(|tx| tx.occurred_at);
    /// ```
    pub const fn with_event_time(mut self, time: fn(&P) -> DateTime<Utc>) -> Self {
        self.event_time = Some(time);
        self
    }

    /// Events of this type are numbered per key (aggregate id) in the sequence `sequence`, which
    /// other event types of the same aggregate may share, so that consumers asking for it
    /// apply one key's events in the order they were written, through retries (see
    /// [`crate::key_order`]).
    ///
    /// ```
    /// # #[derive(serde::Deserialize)] pub struct Credited { amount_cents: i64 }
    /// # #[derive(serde::Deserialize)] pub struct Debited { amount_cents: i64 }
    /// use msgkit::EventType;
    /// pub const CREDITED: EventType<Credited> = EventType::new("account.credited").in_sequence("account");
    /// pub const DEBITED: EventType<Debited> = EventType::new("account.debited").in_sequence("account");
    /// assert_eq!(CREDITED.sequence(), Some("account"));
    /// ```
    pub const fn in_sequence(mut self, sequence: &'static str) -> Self {
        self.sequence = Some(sequence);
        self
    }

    /// The sequence its events are numbered in, if any.
    pub const fn sequence(&self) -> Option<&'static str> {
        self.sequence
    }

    /// The name: the AMQP `type` and the routing key on the events exchange.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The event time of `payload`, when the event type reads it from the payload.
    pub fn event_time_of(&self, payload: &P) -> Option<DateTime<Utc>> {
        self.event_time.map(|time| time(payload))
    }
}

impl<P> Clone for EventType<P> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P> Copy for EventType<P> {}

impl<P> PartialEq for EventType<P> {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl<P> Eq for EventType<P> {}

impl<P> fmt::Debug for EventType<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventType({:?})", self.name)
    }
}

impl<P> fmt::Display for EventType<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// A queue bound to an event receives it: `WorkQueue::new("inventory").bind(ORDER_PLACED)`.
impl<P> From<EventType<P>> for String {
    fn from(event: EventType<P>) -> Self {
        event.name.to_owned()
    }
}
