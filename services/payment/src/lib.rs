//! The payment service: charges each reserved order through a payment gateway (a simulator
//! that lives here) and reports the result; the gateway calls back about each charge, as real
//! gateways do, and the service verifies and publishes those callbacks.
//!
//! - [`handlers`]: `inventory.reserved` -> charge -> `payment.succeeded` / `payment.failed`
//!   (with the amount); `order.cancel_requested` -> refund the charge in full ->
//!   `payment.refunded` (an order never charged is dead-lettered).
//! - [`gateway`]: the simulator's ledger (charges and refunds); each new charge decision is stored with the callback it
//!   owes ([`callbacks`]: delay, jitter, injectable faults), in one statement.
//! - [`callback_sender`]: a task of the service that sends due callbacks, signed
//!   ([`signature`]), retried with backoff until answered 2xx, at least once (no lock is held
//!   over the network; a process killed mid-send sends again after the restart).
//! - [`api`]: `POST /payments/callback` verifies the signature, stores each `callback_id`
//!   once (`payment_callbacks`, with `known_order`) and publishes `payment.callback` through
//!   the outbox in the same transaction.
//! - [`metrics`] counts `payment_gateway_callback_attempts_total{result}`,
//!   `payment_gateway_callbacks_lost_total`, `payment_callbacks_received_total{result}`.
//!
//! Ground truth for tests and chaos runs: `gateway_callbacks` (what the gateway owed, `lost`
//! for those the loss fault dropped, `sent_at` once answered) against `payment_callbacks`
//! (what was received).
#![warn(missing_docs)]

pub mod api;
pub mod callback_sender;
pub mod callbacks;
pub mod gateway;
pub mod handlers;
pub mod metrics;
pub mod signature;
pub mod startup;
