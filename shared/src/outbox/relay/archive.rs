//! The archive copy of each event: the relay publishes it on the same confirmed channel, just
//! before the event itself, and a row counts as published only when both are confirmed. A row
//! whose copy was confirmed and whose event was refused is not copied again on its retries
//! (`archived_at`), so an event type no queue takes for a day does not fill the archive.
//!
//! The copy goes first so that the archive holds an event before any consumer can react to
//! it: a projection reading the archive then sees causes before their effects, whichever
//! services published them. A row whose copy is confirmed and whose event is refused (no work
//! queue bound) stays in the outbox and is published again later, copy included: the archive
//! is at-least-once, as a relay that dies between a confirm and its mark makes it anyway, so
//! projections apply idempotently (see [`crate::projection`]).

use crate::message::OutgoingMessage;
use crate::publish::PublishOutcome;
use crate::topology::Archive;

/// What goes on the wire for a batch: `messages` with an archive copy before each one
/// addressed to `events_exchange` and not `already` archived, and for each message whether it
/// has one.
pub(super) fn with_copies(
    archive: Option<&Archive>,
    events_exchange: &str,
    messages: Vec<OutgoingMessage>,
    already: &[bool],
) -> (Vec<OutgoingMessage>, Vec<bool>) {
    let Some(archive) = archive else {
        let copied = vec![false; messages.len()];
        return (messages, copied);
    };
    let mut wire = Vec::with_capacity(messages.len() * 2);
    let mut copied = Vec::with_capacity(messages.len());
    for (index, message) in messages.into_iter().enumerate() {
        // Only events: a parked message released to one queue (key order) was archived when
        // it was first published.
        let archived =
            message.exchange == events_exchange && !already.get(index).copied().unwrap_or(false);
        if archived {
            wire.push(OutgoingMessage {
                exchange: String::new(),
                routing_key: archive.name.clone(),
                ..message.clone()
            });
        }
        wire.push(message);
        copied.push(archived);
    }
    (wire, copied)
}

/// One outcome per message from the wire's outcomes: a refused archive copy fails its row
/// (with the reason saying so) even when the event itself was confirmed.
pub(super) fn per_message(outcomes: Vec<PublishOutcome>, copied: &[bool]) -> Vec<RowOutcome> {
    let mut outcomes = outcomes.into_iter();
    copied
        .iter()
        .map(|&copied| {
            let copy = if copied { outcomes.next() } else { None };
            let event = outcomes.next().unwrap_or(PublishOutcome::NotConfirmed);
            match copy {
                Some(copy) if !copy.is_confirmed() => RowOutcome {
                    failure: copy
                        .failure_reason()
                        .map(|reason| format!("archive copy: {reason}")),
                    nacked: matches!(copy, PublishOutcome::Nacked),
                    archived: false,
                },
                copy => RowOutcome {
                    failure: event.failure_reason(),
                    nacked: matches!(event, PublishOutcome::Nacked),
                    archived: copy.is_some(),
                },
            }
        })
        .collect()
}

/// What the broker said about one outbox row, all of its copies together.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct RowOutcome {
    /// Why the row is not published, if it is not.
    pub(super) failure: Option<String>,
    /// Whether a copy was nacked (the relay then opens a new channel).
    pub(super) nacked: bool,
    /// Whether the archive confirmed its copy now.
    pub(super) archived: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(exchange: &str) -> OutgoingMessage {
        let mut message = OutgoingMessage::event("t.happened", "agg", "test", &1).unwrap();
        message.exchange = exchange.to_owned();
        message
    }

    #[test]
    fn each_event_gets_a_copy_before_it_and_other_messages_none() {
        let archive = Archive::default();
        let (wire, copied) = with_copies(
            Some(&archive),
            "events",
            vec![event("events"), event(""), event("events"), event("events")],
            &[false, false, false, true],
        );
        assert_eq!(
            copied,
            vec![true, false, true, false],
            "the last one was archived before"
        );
        let routes: Vec<(&str, &str)> = wire
            .iter()
            .map(|m| (m.exchange.as_str(), m.routing_key.as_str()))
            .collect();
        assert_eq!(
            routes,
            vec![
                ("", "events.archive"),
                ("events", "t.happened"),
                ("", "t.happened"),
                ("", "events.archive"),
                ("events", "t.happened"),
                ("events", "t.happened"),
            ]
        );
        assert_eq!(wire[0].message_id, wire[1].message_id);
        let (plain, copied) = with_copies(None, "events", vec![event("events")], &[false]);
        assert_eq!((plain.len(), copied), (1, vec![false]));
    }

    #[test]
    fn a_row_is_published_only_when_its_copy_and_its_event_are() {
        let returned = PublishOutcome::Returned {
            reply_code: 312,
            reply_text: "NO_ROUTE".into(),
        };
        let outcomes = vec![
            PublishOutcome::Confirmed, // copy
            PublishOutcome::Confirmed, // event
            PublishOutcome::Confirmed, // copy
            returned,                  // event: no work queue
            PublishOutcome::Nacked,    // copy
            PublishOutcome::Confirmed, // event
            PublishOutcome::Confirmed, // a message without a copy
        ];
        let rows = per_message(outcomes, &[true, true, true, false]);
        assert_eq!(rows[0].failure, None);
        assert!(
            rows[1]
                .failure
                .as_deref()
                .unwrap()
                .starts_with("unroutable")
        );
        assert_eq!(
            rows[2].failure.as_deref(),
            Some("archive copy: nacked by the broker")
        );
        assert!(rows[2].nacked);
        assert!(!rows[2].archived);
        assert_eq!(rows[3].failure, None);
    }
}
