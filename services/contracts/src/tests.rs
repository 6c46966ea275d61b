//! The contracts' own checks: every queue has its DLQ, every event type reaches a queue,
//! and payloads (old ones too) decode as documented.

use super::*;

#[test]
fn every_consuming_service_has_a_queue_and_a_dlq() {
    let topology = topology();
    for name in [
        "order",
        "inventory",
        "payment",
        "notify",
        "risk",
        "reconcile",
    ] {
        let queue = topology.queue(name).unwrap();
        assert_eq!(queue.dead_letter_queue(), format!("{name}.dlq"));
    }
    assert!(
        topology
            .queue("inventory")
            .unwrap()
            .bindings()
            .contains(&event_type::ORDER_PLACED.name().to_owned())
    );
}

/// The relay publishes with the mandatory flag and keeps a row no queue takes: an event
/// type without a binding could never leave its outbox (as `reconcile.matched` once).
#[test]
fn every_event_type_reaches_a_queue() {
    use event_type::*;
    let topology = topology();
    let routed = |name: &str| {
        topology.queues().iter().any(|queue| {
            queue
                .bindings()
                .iter()
                .any(|binding| match binding.strip_suffix(".*") {
                    Some(prefix) => name
                        .strip_prefix(prefix)
                        .is_some_and(|rest| rest.starts_with('.') && !rest[1..].contains('.')),
                    None => binding == name,
                })
        })
    };
    for name in [
        ORDER_PLACED.name(),
        INVENTORY_RESERVED.name(),
        INVENTORY_REJECTED.name(),
        INVENTORY_RELEASED.name(),
        PAYMENT_SUCCEEDED.name(),
        PAYMENT_FAILED.name(),
        PAYMENT_CALLBACK.name(),
        ORDER_CONFIRMED.name(),
        ORDER_REJECTED.name(),
        ORDER_CANCELLED.name(),
        ORDER_CANCEL_REQUESTED.name(),
        PAYMENT_REFUNDED.name(),
        TRANSACTION_RECORDED.name(),
        RISK_ALERT.name(),
        RECONCILE_MATCHED.name(),
        RECONCILE_MISMATCH.name(),
        RECONCILE_RESOLVED.name(),
    ] {
        assert!(routed(name), "no queue takes {name}");
    }
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
        location: None,
    };
    let json = serde_json::to_value(&event).unwrap();
    assert_eq!(json["items"][0]["sku"], "SKU-1");
    assert_eq!(json["customer_id"], "c-1");
}

#[test]
fn a_payment_succeeded_from_before_the_risk_fields_still_decodes() {
    let old = r#"{"order_id":"00000000-0000-0000-0000-000000000000","charge_id":"ch-1","amount_cents":500}"#;
    let payment: PaymentSucceeded = serde_json::from_str(old).unwrap();
    assert_eq!(payment.amount_cents, 500);
    assert_eq!(payment.customer_id, "");
    assert_eq!(payment.location, None);
    assert_eq!(payment.occurred_at, None);
}

#[test]
fn order_placed_and_inventory_reserved_without_a_location_still_decode() {
    let placed = r#"{"order_id":"00000000-0000-0000-0000-000000000000","customer_id":"c","items":[],"placed_at":"2026-01-01T00:00:00Z"}"#;
    let placed: OrderPlaced = serde_json::from_str(placed).unwrap();
    assert_eq!(placed.location, None);
    let reserved =
        r#"{"order_id":"00000000-0000-0000-0000-000000000000","customer_id":"c","amount_cents":1}"#;
    let reserved: InventoryReserved = serde_json::from_str(reserved).unwrap();
    assert_eq!(reserved.location, None);
}
