//! The rebate service (HTTP 127.0.0.1:8086, schema `rebate`): each customer's rebate balance,
//! a projection of the event archive ([`msgkit::projection`]) updated in real time from
//! payments, read over HTTP and pushed live. See docs/rebate.md for the operator's view.
//!
//! # Rules
//! - **Rate.** A payment (`payment.succeeded`) earns the rate of the tiers in force at the
//!   payment's time (its `occurred_at`, else the event's creation), at the highest threshold
//!   the customer's spend in that calendar month (UTC) had reached *before* this payment
//!   ([`rates::rate_for`]). The tiers are the table `rebate_tiers`, versioned by
//!   `effective_from`; seeded with 1 % (100 bp) from 0, 1.5 % from 1,000.00 and 2 % from
//!   5,000.00 of monthly spend. A version is added with a future `effective_from` and never
//!   edited once in force (a trigger refuses), so a rebuild replays every payment at the rate
//!   the live run gave it.
//! - **Rounding.** Rebate cents = floor(amount × bp / 10 000), per line ([`rates::rebate_cents`]);
//!   a balance is the exact sum of its lines.
//! - **Refunds.** `payment.refunded` reverses the order's payment line exactly (a `refund` line
//!   of the same cents and rate, negated, once) and takes the payment out of its month's
//!   spend, which later payments of that month are tiered on. A refund whose payment line is
//!   not there (the archive holds a payment before its refund, so this should not happen)
//!   records a refund line of 0 cents, and the order's payment, if it comes later, earns 0
//!   and adds no spend: deterministic, and the net is the same as in order.
//! - **Exactly once.** One line per order and kind (`ON CONFLICT DO NOTHING`), and the
//!   balance and spend change only when the line was inserted: a duplicated event, or a second
//!   payment event for the same order, changes nothing. A payment or refund without a
//!   customer (messages from before the field existed) is passed over.
//!
//! # API
//! `GET /rebates/{customer}` ([`http::Rebates`]): the balance, its version (the number of
//! lines), and the newest lines; a customer with nothing is 200 with balance 0, version 0.
//! `GET /rebates/{customer}/stream`: the balance as Server-Sent Events (see [`http`]'s stream
//! module docs), with [`msgkit::auth`] tokens (`REBATE_TOKEN_SECRET`, else `TOKEN_SECRET`):
//! a user's token for its own customer id, an operator's for anyone.
//!
//! # Live
//! A trigger on `rebate_balances` (created with the projection's tables, so a rebuild's
//! tables carry it) notifies `rebate_balances` in the applying transaction; each replica's
//! [`feed::listen`] task fans the changes out to its streams.
#![warn(missing_docs)]

pub mod balances;
pub mod feed;
pub mod http;
pub mod metrics;
pub mod projection;
pub mod rates;
pub mod startup;
