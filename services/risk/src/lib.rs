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
//! `transaction.recorded` through the outbox (numbered per user, so the consumer applies a
//! user's transactions in the order they were recorded, through retries: the kit's key order);
//! the consumer of the `risk` queue runs every
//! enabled rule on it with the user's [`KeyState`] from the kit's keyed state, stores each
//! alert once and publishes it as `risk.alert`; `GET /alerts` reads them back. `/rules` lists,
//! creates (`POST`), edits (`PUT /rules/{id}`: a new version), disables (`DELETE /rules/{id}`
//! or `POST /rules/{id}/disable`) and enables rules; each write compiles the rule first.
//! `GET /rules` gives each version with the alerts raised under it. `GET /` is the operator's
//! page ([`http::PAGE`]): the live alert feed over `GET /alerts/stream`, the rules with their
//! counts, an editor that shows a refused rule's error under its field, and the reconcile
//! service's results (open mismatches, resolved ones, the summary), polled every 2 s through
//! `GET /reconciliation` and `GET /reconciliation/summary`, which risk proxies to reconcile
//! (`RISK_RECONCILE_URL`, default `http://127.0.0.1:8085`) so that the page stays same-origin
//! (503 `reconcile_unavailable` when reconcile cannot be reached).
//!
//! # The live stream
//! `GET /alerts/stream` pushes alerts as Server-Sent Events (`id: <seq>`, `event: alert`,
//! `data:` the [`feed::FeedAlert`] as JSON; a keep-alive comment every 15 s).
//!
//! - **Tokens.** A [`msgkit::auth`] token as `Authorization: Bearer <t>` or `?access_token=<t>`
//!   (a browser's `EventSource` cannot send headers): 401 in the API's error shape when missing,
//!   malformed, wrongly signed or expired. A user's token shows that user's alerts (asking for
//!   another's with `?user=` is 403); an operator's shows everyone's, or one user's with
//!   `?user=`. The key comes from `RISK_TOKEN_SECRET`, else `TOKEN_SECRET` (at least 32 bytes;
//!   shorter refuses to start). Without either the stream, and every endpoint that needs a
//!   token (alerts, rules, tokens, reconciliation), answers 503 `no_token_secret`, while
//!   `POST /transactions` works: an alert feed nobody can authenticate to is better closed than
//!   open.
//! - **The rest of the API** takes tokens from `Authorization: Bearer` only (a token in a URL
//!   ends up in histories): rules and the reconciliation section need an operator's, alerts a
//!   user's (their own) or an operator's; `POST /tokens` lets an operator issue a token without
//!   handing out the secret. `msgkit token --user U | --operator NAME [--ttl 15m]` prints a token signed with the
//!   same variable. The kit's HTTP span records the query with `access_token` redacted, and
//!   nothing here logs a token.
//! - **Order.** Each alert gets a feed number (`seq`) as the last statement of the consumer's
//!   transaction, from a one-row table whose row lock is held until commit: numbers follow
//!   commit order and a rollback gives its number back. (A serial column would not: a
//!   transaction could commit 8 while 7 is still open, and a client resuming after 8 would
//!   never see 7.) `pg_notify('risk_alerts')` in the same transaction is delivered at commit.
//! - **Fan-out.** Each replica runs one [`feed::listen`] task (owned by the service, stopped
//!   with it): `LISTEN risk_alerts` on a connection of its own, and on each notification it
//!   reads the alerts after the last number it saw and broadcasts them to its streams. After a
//!   reconnect it listens first, then reads what it missed. An alert decided on one replica
//!   reaches the streams on every replica. A stream opened before the listener first listened
//!   (the service is starting) waits for it, up to 10 s, then answers 503.
//! - **Resume.** `Last-Event-ID` (what `EventSource` sends when it reconnects) or
//!   `?last_event_id=N` (for a new `EventSource`, e.g. after a token refresh; the header wins):
//!   the stream subscribes to the broadcast, then reads the table after N, then follows the
//!   broadcast skipping ids it already sent, so it loses and repeats nothing. Without an id it
//!   starts with the next alert committed. A stream that falls more than the broadcast's buffer
//!   (`RISK_STREAM_BUFFER`, 1024 alerts) behind reads the table from its last id instead of
//!   dropping alerts.
//! - **Ending.** A stream ends when the service starts to stop
//!   (`msgkit::service::Service::shutdown_signal`: the server's graceful shutdown waits for
//!   open connections, so SIGTERM is not held up) and when its token expires: the client
//!   reconnects with a fresh token and its last id.
//! - **Metrics.** `risk_decision_seconds`: the triggering message's creation (its outbox row)
//!   to the listener seeing the alert committed, recorded once, by the replica that decided it
//!   (for an absence alert the message is the timer's firing, so it measures the firing).
//!   `risk_push_seconds`: the alert's commit (the numbering statement's clock, a few
//!   milliseconds before the commit) to the frame handed to the connection, for live alerts
//!   only (history sent on a resume measures the client's absence, not the push); one sample
//!   per stream that sends it. `risk_streams_connected`: streams open on this replica.
//! - **Traces.** The alert row keeps the deciding handler's `traceparent`; each push is a span
//!   (`risk.alert push`) continuing it, so a trace runs from the transaction's request through
//!   the consumer to every stream that sent the alert.
#![warn(missing_docs)]

mod engine;
pub mod feed;
pub mod handlers;
pub mod http;
pub mod metrics;
pub mod rule_store;
pub mod startup;

pub use engine::*;
