//! The contract between the example services: event types, their JSON payloads, and the broker
//! topology that routes them. Every service depends on this crate, the way a MassTransit
//! solution shares a contracts assembly, so a routing key or payload field has one definition.
#![warn(missing_docs)]

mod catalogue;

pub use catalogue::{PUBLISHERS, publishes};

use chrono::{DateTime, Utc};
use msgkit::{Topology, WorkQueue};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Event types: each name (also its routing key on the `events` exchange) bound to its payload
/// type, in saga order. Routes, bindings and publishes name these constants, so a misspelt
/// event or a payload of the wrong type does not compile. [`event_type::ALL`] lists them as
/// data (name, doc comment, payload schema) for the AsyncAPI document.
pub mod event_type {
    use msgkit::EventType;

    use super::{
        InventoryReserved, OrderCancelRequested, OrderConcluded, OrderPlaced, OrderSetback,
        PaymentCallback, PaymentFailed, PaymentRefunded, PaymentSucceeded, Reconciliation,
        RiskAlert, TransactionRecorded,
    };

    msgkit::event_types! {
        /// An order was accepted over HTTP (order -> inventory).
        pub const ORDER_PLACED: EventType<OrderPlaced> = EventType::new("order.placed");
        /// Stock was reserved for every line (inventory -> payment, order).
        pub const INVENTORY_RESERVED: EventType<InventoryReserved> =
            EventType::new("inventory.reserved");
        /// Stock could not be reserved (inventory -> order).
        pub const INVENTORY_REJECTED: EventType<OrderSetback> =
            EventType::new("inventory.rejected");
        /// A reservation was released after a failed payment (inventory -> order).
        pub const INVENTORY_RELEASED: EventType<OrderSetback> =
            EventType::new("inventory.released");
        /// The charge was taken (payment -> order, risk). No payload event time: `occurred_at`
        /// is optional for older messages, so the kit's event time is the outbox row's creation.
        pub const PAYMENT_SUCCEEDED: EventType<PaymentSucceeded> =
            EventType::new("payment.succeeded");
        /// The charge was declined (payment -> inventory, order, reconcile).
        pub const PAYMENT_FAILED: EventType<PaymentFailed> = EventType::new("payment.failed");
        /// The payment gateway called back about a charge or a decline, signed and verified by the
        /// payment service (payment -> reconcile).
        pub const PAYMENT_CALLBACK: EventType<PaymentCallback> = EventType::new("payment.callback");
        /// Both sides of a payment agree (reconcile -> anyone auditing).
        pub const RECONCILE_MATCHED: EventType<Reconciliation> =
            EventType::new("reconcile.matched");
        /// A payment's sides disagree, or one is missing after the window (reconcile -> notify,
        /// which tells operators).
        pub const RECONCILE_MISMATCH: EventType<Reconciliation> =
            EventType::new("reconcile.mismatch");
        /// A mismatch was resolved by a side arriving late (reconcile -> anyone auditing).
        pub const RECONCILE_RESOLVED: EventType<Reconciliation> =
            EventType::new("reconcile.resolved");
        /// The order is confirmed (order -> notify).
        pub const ORDER_CONFIRMED: EventType<OrderConcluded> = EventType::new("order.confirmed");
        /// The order is rejected: out of stock (order -> notify).
        pub const ORDER_REJECTED: EventType<OrderConcluded> = EventType::new("order.rejected");
        /// The order is cancelled: payment declined, or refunded after the customer cancelled it
        /// (order -> notify).
        pub const ORDER_CANCELLED: EventType<OrderConcluded> = EventType::new("order.cancelled");
        /// The customer cancelled a confirmed order (`POST /orders/{id}/cancel`; order -> payment,
        /// which refunds the charge).
        pub const ORDER_CANCEL_REQUESTED: EventType<OrderCancelRequested> =
            EventType::new("order.cancel_requested");
        /// The charge of a cancelled order was refunded through the gateway (payment -> order,
        /// which cancels it, and inventory, which puts the stock back; rebate reads it from the
        /// archive and reverses the order's rebate).
        pub const PAYMENT_REFUNDED: EventType<PaymentRefunded> = EventType::new("payment.refunded");
        /// A user's transaction was recorded (risk's HTTP API -> risk's rule engine). Its event
        /// time is when the transaction happened: the engine's windows are measured on it. Numbered
        /// per user (the aggregate) so that the engine sees a user's transactions in the order
        /// they were recorded: otherwise two posted back to back could be evaluated in reverse by
        /// concurrent handlers, and the first, if minutes older, would count as late.
        pub const TRANSACTION_RECORDED: EventType<TransactionRecorded> =
            EventType::new("transaction.recorded")
                .in_sequence("user")
                .with_event_time(|t: &TransactionRecorded| t.occurred_at);
        /// A risk rule matched a user's transactions (risk -> notify, which tells the user of the
        /// high-severity ones).
        pub const RISK_ALERT: EventType<RiskAlert> = EventType::new("risk.alert");
    }
}

/// One line of an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderLine {
    /// Stock keeping unit.
    pub sku: String,
    /// How many, at least 1.
    pub quantity: u32,
}

/// Payload of `order.placed`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderPlaced {
    /// The order (also the message's `correlation_id`).
    pub order_id: Uuid,
    /// Who placed it.
    pub customer_id: String,
    /// What was ordered.
    pub items: Vec<OrderLine>,
    /// When the order was accepted.
    pub placed_at: DateTime<Utc>,
    /// Where it was placed (e.g. a city), if the client said; risk rules compare it.
    /// Defaulted so that messages from before the field existed still decode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// Payload of `inventory.reserved`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InventoryReserved {
    /// The order.
    pub order_id: Uuid,
    /// Who to charge.
    pub customer_id: String,
    /// The total to charge, in cents.
    pub amount_cents: i64,
    /// Where the order was placed, carried from `order.placed` for payment to pass on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// Payload of `inventory.rejected` and `inventory.released`: an order and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderSetback {
    /// The order.
    pub order_id: Uuid,
    /// Why, for people.
    pub reason: String,
}

/// Payload of `payment.failed`: an order, why, and what the declined charge was for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentFailed {
    /// The order.
    pub order_id: Uuid,
    /// Why, for people.
    pub reason: String,
    /// What the declined charge was for, in cents. `None` in a message from before the field
    /// existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_cents: Option<i64>,
}

/// What the gateway says happened to a charge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GatewayOutcome {
    /// The charge was taken (our side: `payment.succeeded`).
    Success,
    /// The charge was declined (our side: `payment.failed`).
    Declined,
}

/// Payload of `payment.callback`: a gateway callback as the payment service received and
/// verified it. The gateway may send one callback twice: `callback_id` is the same then.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentCallback {
    /// The gateway's id of this callback (the same on a duplicate).
    pub callback_id: String,
    /// The order the gateway says the charge was for.
    pub order_id: Uuid,
    /// The gateway's charge id, when it took one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge_id: Option<String>,
    /// Charged or declined.
    pub outcome: GatewayOutcome,
    /// The amount the gateway reports, in cents.
    pub amount_cents: i64,
    /// Whether the payment service knew the order when the callback came (an unknown order is
    /// recorded and published, not dropped: reconciliation decides what it means).
    pub known_order: bool,
    /// When the payment service received it.
    pub received_at: DateTime<Utc>,
}

/// Payload of `reconcile.matched`, `reconcile.mismatch` and `reconcile.resolved`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Reconciliation {
    /// The order.
    pub order_id: Uuid,
    /// `matched`, `third-party-missing`, `app-missing`, `amount-mismatch`,
    /// `status-mismatch` or `late-match`.
    pub outcome: String,
    /// Our side's amount, when we have it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_amount_cents: Option<i64>,
    /// The gateway's amount, when it called back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_amount_cents: Option<i64>,
    /// When reconcile decided.
    pub decided_at: DateTime<Utc>,
}

/// Payload of `payment.succeeded`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentSucceeded {
    /// The order.
    pub order_id: Uuid,
    /// The gateway's charge id.
    pub charge_id: String,
    /// What was charged, in cents.
    pub amount_cents: i64,
    /// Who was charged. Empty in a message from before the field existed: no customer to
    /// evaluate it for.
    #[serde(default)]
    pub customer_id: String,
    /// Where the order was placed, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// When the charge was taken. `None` in a message from before the field existed: there is
    /// no honest value to invent, so a reader falls back to the message's own event time
    /// (its outbox row's creation time, within milliseconds of the charge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<DateTime<Utc>>,
}

/// Payload of `order.confirmed`, `order.rejected` and `order.cancelled`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderConcluded {
    /// The order.
    pub order_id: Uuid,
    /// Whom to notify.
    pub customer_id: String,
    /// `confirmed`, `rejected` or `cancelled`.
    pub status: String,
    /// Why, when it did not go through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Payload of `order.cancel_requested`: a customer cancelled a confirmed order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderCancelRequested {
    /// The order.
    pub order_id: Uuid,
    /// Whose order.
    pub customer_id: String,
    /// Why, if the customer said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the cancellation was accepted.
    pub requested_at: DateTime<Utc>,
}

/// Payload of `payment.refunded`: the gateway refunded an order's charge in full.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentRefunded {
    /// The order.
    pub order_id: Uuid,
    /// Whose money it was.
    pub customer_id: String,
    /// The charge refunded (`payment.succeeded`'s `charge_id`).
    pub charge_id: String,
    /// The gateway's id of the refund.
    pub refund_id: String,
    /// What was refunded, in cents (the whole charge).
    pub amount_cents: i64,
    /// When the gateway refunded it.
    pub occurred_at: DateTime<Utc>,
}

/// Payload of `transaction.recorded`: one transaction of a user, as an app records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TransactionRecorded {
    /// Unique per transaction: a repeated id is the same transaction.
    pub transaction_id: String,
    /// Whose transaction (the key the risk rules partition by).
    pub user_id: String,
    /// The amount in minor units (cents).
    pub amount_cents: i64,
    /// ISO 4217 code, e.g. `CNY`.
    pub currency: String,
    /// Where it happened, e.g. a city.
    pub location: String,
    /// When it happened (the event time), not when it was recorded.
    pub occurred_at: DateTime<Utc>,
}

/// Payload of `risk.alert`: a rule version matched some of a user's transactions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RiskAlert {
    /// The stored alert's id.
    pub alert_id: Uuid,
    /// Whose transactions matched.
    pub user_id: String,
    /// The rule that matched.
    pub rule_id: i64,
    /// The version it matched under.
    pub rule_version: i32,
    /// `low`, `medium` or `high`.
    pub severity: String,
    /// The triggering transactions, in event-time order.
    pub transaction_ids: Vec<String>,
    /// Event time of the match.
    pub at: DateTime<Utc>,
}

/// The saga's topology, the one table of bindings: every service declares all of it, so each
/// work queue exists (and buffers its events) before its consumer first starts, and each
/// service's routes are checked against its queue's bindings before it starts
/// (`msgkit::bindings`). The order queue takes every result of inventory and payment's
/// outcomes, refunds included (not the gateway's callbacks); the inventory queue takes new
/// orders and what puts stock back (a declined payment, a refund); the payment queue takes
/// reservations to charge and cancellations to refund; the notify queue takes the orders' final states,
/// risk's alerts and reconciliation's decisions (matches are acked: the relay refuses an
/// event no queue takes, so every event type needs a queue); the risk queue takes the transactions its own API records and the saga's
/// payments; the reconcile queue takes our payments' outcomes and the gateway's callbacks.
pub fn topology() -> Topology {
    use event_type::*;
    Topology::default()
        .with_queue(
            WorkQueue::new("order")
                .bind("inventory.*")
                .bind(PAYMENT_SUCCEEDED)
                .bind(PAYMENT_FAILED)
                .bind(PAYMENT_REFUNDED),
        )
        .with_queue(
            WorkQueue::new("inventory")
                .bind(ORDER_PLACED)
                .bind(PAYMENT_FAILED)
                .bind(PAYMENT_REFUNDED),
        )
        .with_queue(
            WorkQueue::new("payment")
                .bind(INVENTORY_RESERVED)
                .bind(ORDER_CANCEL_REQUESTED),
        )
        .with_queue(
            WorkQueue::new("notify")
                .bind(ORDER_CONFIRMED)
                .bind(ORDER_REJECTED)
                .bind(ORDER_CANCELLED)
                .bind(RISK_ALERT)
                .bind(RECONCILE_MATCHED)
                .bind(RECONCILE_MISMATCH)
                .bind(RECONCILE_RESOLVED),
        )
        .with_queue(
            WorkQueue::new("risk")
                .bind(TRANSACTION_RECORDED)
                .bind(PAYMENT_SUCCEEDED),
        )
        .with_queue(
            WorkQueue::new("reconcile")
                .bind(PAYMENT_SUCCEEDED)
                .bind(PAYMENT_FAILED)
                .bind(PAYMENT_CALLBACK),
        )
}

#[cfg(test)]
mod tests;
