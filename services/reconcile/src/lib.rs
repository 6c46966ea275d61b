//! The reconcile service: what we believe happened to each payment (`payment.succeeded`,
//! `payment.failed`) against what the payment gateway reports (`payment.callback`), joined by
//! order id with the kit's keyed state and timers (HTTP 127.0.0.1:8085, schema and queue
//! `reconcile`).
//!
//! # The join
//! - **The window** starts when an order's first side is handled, by the consumer's clock
//!   (`ctx.now()`), and lasts `RECONCILE_WINDOW_MS` (5 s). The first side sets the order's one
//!   timer ([`handlers::WINDOW_TIMER`], keyed by the order id) for the window's end; a second
//!   side never sets or moves it, it cancels it.
//! - **Both sides in the window:** the outcomes are compared first (succeeded with success,
//!   failed with declined), then the amounts (when ours is known: a `payment.failed` from
//!   before it carried one compares outcomes only): `matched`, `status-mismatch` or
//!   `amount-mismatch`, decided when the second side is handled.
//! - **The window ends with one side:** `third-party-missing` (only ours) or `app-missing`
//!   (only the gateway's). The sides are kept: firing does not clear the state, so a side
//!   arriving later resolves the mismatch as `late-match` (published as
//!   `reconcile.resolved`, no new mismatch) or, if it disagrees, turns it into that
//!   disagreement (`amount-mismatch` or `status-mismatch`, published as a mismatch: a new
//!   fact for the operator, still open). A timer firing after its order was decided (a cancel that came after the
//!   timer was fired) finds the decision in the state and does nothing.
//! - **Duplicates** change nothing: the same message is the kit's inbox's business, and the
//!   same side again (a callback with the same or another `callback_id`, our side twice)
//!   leaves the first one standing.
//! - **Retention:** an order's sides are kept in keyed state without expiry while its window
//!   is open (its timer fires however long the service was down, and must find them), then
//!   for `RECONCILE_RETENTION_MS` (1 h) after its last change (`put_for`: the kit's sweep
//!   deletes them). A side arriving
//!   for an order decided longer ago only adds an `after-retention` row to its history: a new
//!   window would raise a second, false alarm.
//!
//! The decision logic is pure ([`join`]); [`handlers`] load and store the order's
//! [`join::Pair`] in the message's transaction (the key's lock is held until commit, so two
//! sides of one order never interleave on any replica), and [`results`] records decisions.
//!
//! # Results
//! `reconciliations` holds one row per order (its latest outcome and `status`: `matched`,
//! `open` or `resolved`); `reconciliation_history` every transition. Each decision is
//! published through the outbox: `reconcile.matched`, `reconcile.mismatch` or
//! `reconcile.resolved` (payload [`contracts::Reconciliation`]). `GET /reconciliation?status=&since=`
//! lists rows with their history; `GET /reconciliation/summary` counts by outcome, gives the
//! match rate and the time to match (p50, p99) of orders matched in the window.
//!
//! # Metrics
//! `reconcile_outcomes_total{outcome}`, `reconcile_time_to_match_seconds` (matches in the
//! window), `reconcile_open_mismatches` (read from the table every 5 s).
#![warn(missing_docs)]

pub mod handlers;
pub mod http;
pub mod join;
pub mod metrics;
pub mod results;
pub mod startup;
