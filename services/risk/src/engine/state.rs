//! The per-key state the engine reads and updates: small, serde-serialisable, bounded.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::decisions::{RuleId, RuleVersion};
use super::event::Event;

/// Everything the engine remembers about one key (one user), to be stored as the kit's keyed
/// state between events. Start with `KeyState::default()`.
///
/// Bounded: events are kept for the longest sequence or absence window plus the allowed
/// lateness, and at most `max_events_per_key`; partial matches at most
/// `max_pending_per_rule` per rule; threshold windows at most
/// [`MAX_THRESHOLD_EVENTS`](super::MAX_THRESHOLD_EVENTS) events per rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    /// The newest event time seen: lateness is measured from it.
    pub(crate) watermark: Option<DateTime<Utc>>,
    /// Arrival counter, to order events with equal event times.
    pub(crate) next_seq: u64,
    /// Recent events, ordered by (event time, arrival).
    pub(crate) events: Vec<Seen>,
    /// Partial matches of sequence and absence rules.
    pub(crate) pending: Vec<Pending>,
    /// Matching events of threshold rules.
    pub(crate) thresholds: Vec<ThresholdWindow>,
}

/// An event with its arrival number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Seen {
    pub(crate) seq: u64,
    pub(crate) event: Event,
}

impl Seen {
    /// The order events are matched in: event time, then arrival.
    pub(crate) fn order(&self) -> (DateTime<Utc>, u64) {
        (self.event.occurred_at, self.seq)
    }
}

/// A first event waiting for its second, pinned to the rule version it started under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pending {
    pub(crate) kind: PendingKind,
    pub(crate) rule_id: RuleId,
    pub(crate) version: RuleVersion,
    pub(crate) first: Seen,
}

/// Which kind of rule a partial match belongs to: an absence wait has a timer to cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum PendingKind {
    Sequence,
    Absence,
}

/// The matching events of one threshold rule version, and whether it is above its threshold
/// (so it alerts once per crossing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ThresholdWindow {
    pub(crate) rule_id: RuleId,
    pub(crate) version: RuleVersion,
    pub(crate) counted: Vec<Counted>,
    pub(crate) above: bool,
}

/// One event counted by a threshold rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counted {
    pub(crate) at: DateTime<Utc>,
    pub(crate) amount_cents: i64,
    pub(crate) transaction_id: String,
}

impl KeyState {
    /// The newest event time seen for this key, if any.
    pub fn watermark(&self) -> Option<DateTime<Utc>> {
        self.watermark
    }

    /// How many events, partial matches and counted threshold events the state holds: what
    /// its size grows with.
    pub fn len(&self) -> usize {
        let counted: usize = self
            .thresholds
            .iter()
            .map(|window| window.counted.len())
            .sum();
        self.events.len() + self.pending.len() + counted
    }

    /// True for a key nothing is remembered about.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.watermark.is_none()
    }

    pub(crate) fn has_seen(&self, transaction_id: &str) -> bool {
        self.events
            .iter()
            .any(|seen| seen.event.transaction_id == transaction_id)
    }

    /// Records `event` in event-time order and moves the watermark; returns it with its
    /// arrival number.
    pub(crate) fn record(&mut self, event: &Event) -> Seen {
        let seen = Seen {
            seq: self.next_seq,
            event: event.clone(),
        };
        self.next_seq += 1;
        let at = self
            .events
            .partition_point(|other| other.order() <= seen.order());
        self.events.insert(at, seen.clone());
        self.watermark = Some(
            self.watermark
                .map_or(event.occurred_at, |w| w.max(event.occurred_at)),
        );
        seen
    }

    /// True when some recorded event lies strictly between `first` and `second` in event
    /// order: `second` is then not `first`'s very next event.
    pub(crate) fn any_between(&self, first: &Seen, second: &Seen) -> bool {
        let (low, high) = (first.order(), second.order());
        self.events
            .iter()
            .any(|seen| seen.order() > low && seen.order() < high)
    }

    /// Recorded events after `first` and less than `within` after it, in event order.
    pub(crate) fn after<'s>(
        &'s self,
        first: &Seen,
        within: TimeDelta,
    ) -> impl Iterator<Item = &'s Seen> {
        let low = first.order();
        let end = first.event.occurred_at + within;
        self.events
            .iter()
            .filter(move |seen| seen.order() > low && seen.event.occurred_at < end)
    }

    /// Forgets events no rule can use any more: older than `retention` before the watermark,
    /// and the oldest beyond `max_events`.
    pub(crate) fn trim_events(&mut self, retention: TimeDelta, max_events: usize) {
        if let Some(watermark) = self.watermark {
            let horizon = watermark - retention;
            self.events.retain(|seen| seen.event.occurred_at >= horizon);
        }
        let excess = self.events.len().saturating_sub(max_events);
        self.events.drain(..excess);
    }
}
