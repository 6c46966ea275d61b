//! The risk service's rule engine: rules as data (CEL expressions) evaluated on each user's
//! transaction stream, independently of one another. Pure: no I/O and no clock; the service
//! loads a key's [`KeyState`], calls [`Engine::on_event`] or [`Engine::on_timer`], then stores
//! the state, the alerts and the timers it gets back.
//!
//! # Rules
//! A [`RuleSpec`] is validated once by [`compile`]: the key (only `user_id`), the windows
//! (more than 0, at most a day), and every expression: at most [`MAX_EXPRESSION_CHARS`]
//! characters, brackets nested at most [`MAX_NESTING`] deep (counted before parsing), parsed on
//! a thread with an 8 MiB stack (the parser recurses), a tree at most [`MAX_TREE_DEPTH`] deep
//! (evaluation recurses on the caller's thread), only known variables (from the parsed
//! program's references, named in the error), and a dry run on two sample events that must
//! give a bool (the crate has no type checker: this catches `amount_cents > "x"`). A
//! [`RuleError`] names the field and, for a syntax error or nesting, the line and column.
//!
//! Variables: `amount_cents` (int), `currency`, `location`, `user_id` (strings) and
//! `occurred_at` (a CEL timestamp, so `b.occurred_at - a.occurred_at < duration('1m')` works).
//! A condition, a threshold's `when` and a sequence's or absence's `first` see them bare. A
//! `then` sees the first event as `a.*`, the second as `b.*`, and the bare names are the second
//! event. Comprehension variables (`[..].exists(x, ...)`) count as unknown: events have no lists.
//!
//! # Semantics
//! - **Event time.** Windows and order use `occurred_at`, not arrival. Every window is
//!   exclusive at its far end: a second event exactly `within` after the first does not match;
//!   a threshold counts the events in `(t - over, t]`.
//! - **Lateness.** The key's watermark is the newest event time seen. An event older than the
//!   watermark minus the allowed lateness (5 s by default) is [`Outcome::Late`] and not used.
//!   One within it is placed in event-time order and matched both ways: as a second event for
//!   earlier partial matches and as a first event against later events already seen, so two
//!   events arriving in reverse order match as if they had not.
//! - **Strict and relaxed.** A strict sequence needs the second event to be the key's very next
//!   event in event time (any event, matching or not); a relaxed one takes any later event within
//!   the window. A first event completes at most once (the earliest second event to arrive wins).
//! - **No retraction.** An alert stands once emitted. A late event that would have broken a
//!   strict pair (it falls between them in event time) forms no new match with the consumed
//!   first event and withdraws nothing.
//! - **Duplicates.** A `transaction_id` already seen for the key is [`Outcome::Duplicate`] and
//!   not used again (it is remembered while its event is kept, at least the lateness, beyond
//!   which a copy would be late anyway).
//! - **Absence.** A first event with no matching second event already seen asks for a timer due
//!   at its time + `within` + the lateness (so a second event late within the lateness still
//!   cancels). A matching second event strictly inside the window cancels it; a fired timer
//!   whose wait is still pending alerts, with `at` = the window's end.
//! - **Thresholds** alert once per crossing: when the aggregate over the window ending at the
//!   watermark becomes greater than `above`; it re-arms when it drops back to `above` or below.
//! - **Independence.** Every listed rule decides on every event. An expression failing at run
//!   time goes to [`Decisions::errors`] for that rule and counts as no match; the others decide
//!   as usual, and the event is not failed.
//! - **Versions.** The highest version of each rule id in the list passed in is current: it
//!   starts matches and evaluates conditions and thresholds. A partial match keeps the version
//!   it started under and finishes under it while the caller still lists that version. An
//!   edited threshold counts afresh from the edit. A rule absent from the list (disabled or
//!   deleted) raises nothing, and its partial matches are dropped (their timers cancelled).
//!
//! # Bounded state
//! A [`KeyState`] keeps the events of the longest sequence or absence window plus the lateness
//! (capped by [`EngineConfig::max_events_per_key`]), at most
//! [`EngineConfig::max_pending_per_rule`] partial matches per rule (the oldest gives way), and at
//! most [`MAX_THRESHOLD_EVENTS`] counted events per threshold rule. Sequence partial matches are
//! forgotten when no event still accepted could complete them.
//!
//! # The service
//! [`startup::build`] wires the engine into a kit service (HTTP 127.0.0.1:8084, schema and
//! queue `risk`): `POST /transactions` records a transaction and publishes
//! `transaction.recorded` through the outbox; the consumer of the `risk` queue runs every
//! enabled rule on it with the user's [`KeyState`] from the kit's keyed state, stores each
//! alert once and publishes it as `risk.alert`; `GET /alerts` reads them back. `/rules` lists,
//! creates (`POST`), edits (`PUT /rules/{id}`: a new version), disables (`DELETE /rules/{id}`
//! or `POST /rules/{id}/disable`) and enables rules; each write compiles the rule first.
#![warn(missing_docs)]

mod engine;
pub mod feed;
pub mod handlers;
pub mod http;
pub mod metrics;
pub mod rule_store;
pub mod startup;

pub use engine::*;
