//! The contract between the example services: event types, their JSON payloads, and the broker
//! topology that routes them. Every service depends on this crate, the way a MassTransit
//! solution shares a contracts assembly, so a routing key or payload field has one definition.
#![warn(missing_docs)]

use chrono::{DateTime, Utc};
use msgkit::{Topology, WorkQueue};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Event types (also the routing keys on the `events` exchange).
pub mod event_type {
    /// An order was accepted over HTTP.
    pub const ORDER_PLACED: &str = "order.placed";
}

/// One line of an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// Stock keeping unit.
    pub sku: String,
    /// How many, at least 1.
    pub quantity: u32,
}

/// Payload of `order.placed`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    /// The order (also the message's `correlation_id`).
    pub order_id: Uuid,
    /// Who placed it.
    pub customer_id: String,
    /// What was ordered.
    pub items: Vec<OrderLine>,
    /// When the order was accepted.
    pub placed_at: DateTime<Utc>,
}

/// The saga's topology: every service declares all of it, so each work queue exists (and
/// buffers its events) before its consumer first starts.
pub fn topology() -> Topology {
    Topology::default()
        .with_queue(
            WorkQueue::new("order")
                .bind("inventory.*")
                .bind("payment.*"),
        )
        .with_queue(
            WorkQueue::new("inventory")
                .bind("order.placed")
                .bind("payment.failed"),
        )
        .with_queue(WorkQueue::new("payment").bind("inventory.reserved"))
        .with_queue(
            WorkQueue::new("notify")
                .bind("order.confirmed")
                .bind("order.rejected")
                .bind("order.cancelled"),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_consuming_service_has_a_queue_and_a_dlq() {
        let topology = topology();
        for name in ["order", "inventory", "payment", "notify"] {
            let queue = topology.queue(name).unwrap();
            assert_eq!(queue.dead_letter_queue(), format!("{name}.dlq"));
        }
        assert!(
            topology
                .queue("inventory")
                .unwrap()
                .bindings()
                .contains(&event_type::ORDER_PLACED.to_owned())
        );
    }

    #[test]
    fn order_placed_serialises_as_documented() {
        let event = OrderPlaced {
            order_id: Uuid::nil(),
            customer_id: "c-1".into(),
            items: vec![OrderLine {
                sku: "SKU-1".into(),
                quantity: 2,
            }],
            placed_at: DateTime::UNIX_EPOCH,
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["items"][0]["sku"], "SKU-1");
        assert_eq!(json["customer_id"], "c-1");
    }
}
