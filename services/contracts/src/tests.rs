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
    for name in event_type::ALL.iter().map(|event| event.name()) {
        assert!(routed(name), "no queue takes {name}");
    }
}

#[test]
fn the_catalogue_lists_every_event_type_once_with_its_doc_comment() {
    let names: Vec<&str> = event_type::ALL.iter().map(|event| event.name()).collect();
    assert_eq!(names.len(), 17);
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "{names:?}");
    let placed = &event_type::ALL[0];
    assert_eq!(placed.name(), event_type::ORDER_PLACED.name());
    assert_eq!(
        placed.doc(),
        " An order was accepted over HTTP (order -> inventory).\n"
    );
}

/// `msgkit asyncapi` takes the publishers from this table: an event type without one would be
/// described as sent by nobody, and one published by two services is not expected.
#[test]
fn every_event_type_has_exactly_one_publisher_and_publishers_name_only_event_types() {
    for event in event_type::ALL {
        let publishers: Vec<&str> = PUBLISHERS
            .iter()
            .filter(|(_, events)| events.contains(&event.name()))
            .map(|(service, _)| *service)
            .collect();
        assert_eq!(publishers.len(), 1, "{}: {publishers:?}", event.name());
    }
    for (service, events) in PUBLISHERS {
        for name in *events {
            assert!(
                event_type::ALL.iter().any(|event| event.name() == *name),
                "{service} publishes {name}, which is not an event type"
            );
        }
    }
    assert!(publishes("order", "order.placed"));
    assert!(!publishes("inventory", "order.placed"));
}

#[test]
fn payload_schemas_are_draft_07_with_the_doc_comments_as_descriptions() {
    let mut generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let schema = event_type::ALL[0].payload_schema(&mut generator).to_value();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    assert_eq!(schema["title"], "OrderPlaced");
    assert_eq!(schema["description"], "Payload of `order.placed`.");
    assert_eq!(schema["properties"]["placed_at"]["format"], "date-time");
    assert_eq!(schema["properties"]["order_id"]["format"], "uuid");
    assert!(
        schema["required"]
            .as_array()
            .unwrap()
            .contains(&"order_id".into())
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
