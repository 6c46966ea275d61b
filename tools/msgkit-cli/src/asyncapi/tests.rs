//! The AsyncAPI document: current with the committed copy, built from the topology and the
//! publishers' table, self-contained (every `$ref` resolves inside it).

use serde_json::Value;

use super::*;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/asyncapi.yaml");

/// `cargo nextest` alone catches a contract change without a regenerated document.
#[test]
fn the_committed_document_is_the_one_the_code_describes() {
    let committed = std::fs::read_to_string(COMMITTED).unwrap();
    if let Err(difference) = check(&committed, &render().unwrap(), "docs/asyncapi.yaml") {
        panic!("{difference}");
    }
}

#[test]
fn check_names_the_first_difference_and_the_command_that_regenerates() {
    let current = render().unwrap();
    let edited = current.replacen("order.placed", "order.shipped", 1);
    let error = check(&edited, &current, "docs/asyncapi.yaml").unwrap_err();
    assert!(error.contains(REGENERATE), "{error}");
    assert!(error.contains("order.placed"), "{error}");
    assert!(check(&current, &current, "x").is_ok());
}

#[test]
fn rendering_twice_gives_the_same_text() {
    assert_eq!(render().unwrap(), render().unwrap());
}

fn operations() -> serde_json::Map<String, Value> {
    document(&contracts::topology()).to_value().unwrap()["operations"]
        .as_object()
        .unwrap()
        .clone()
}

/// A binding with a wildcard (`inventory.*` on the order queue) is one receive operation per
/// event type it delivers, and nothing else is received.
#[test]
fn receive_operations_are_the_topologys_bindings_expanded_to_event_types() {
    let operations = operations();
    for event in [
        "inventory.reserved",
        "inventory.rejected",
        "inventory.released",
    ] {
        let id = format!("order.receive.{event}");
        let operation = &operations[&id];
        assert_eq!(operation["action"], "receive", "{id}");
        assert!(
            operation["summary"]
                .as_str()
                .unwrap()
                .contains("`inventory.*`"),
            "{operation}"
        );
    }
    let received: usize = contracts::topology()
        .queues()
        .iter()
        .map(|queue| {
            contracts::event_type::ALL
                .iter()
                .filter(|event| {
                    queue
                        .bindings()
                        .iter()
                        .any(|pattern| msgkit::bindings::topic_matches(pattern, event.name()))
                })
                .count()
        })
        .sum();
    let receives = operations
        .values()
        .filter(|op| op["action"] == "receive")
        .count();
    assert_eq!(receives, received);
    assert!(!operations.contains_key("inventory.receive.order.confirmed"));
}

#[test]
fn every_event_type_is_sent_by_its_declared_publisher_only() {
    let operations = operations();
    let sends: Vec<&String> = operations
        .iter()
        .filter(|(_, op)| op["action"] == "send")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(sends.len(), contracts::event_type::ALL.len(), "{sends:?}");
    assert_eq!(
        operations["payment.send.payment.callback"]["channel"]["$ref"],
        "#/channels/payment.callback"
    );
}

fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(target)) => found.push(target),
                    _ => refs(value, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| refs(item, found)),
        _ => {}
    }
}

/// Payload schemas are inlined (schemars writes no `definitions`), so every reference is to
/// the document's own servers, channels and messages, and resolves.
#[test]
fn every_reference_resolves_inside_the_document() {
    let document = document(&contracts::topology()).to_value().unwrap();
    let mut found = Vec::new();
    refs(&document, &mut found);
    assert!(found.len() > 50, "{}", found.len());
    for target in found {
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{target}"));
        assert!(document.pointer(pointer).is_some(), "{target} resolves");
    }
    let text = serde_json::to_string(&document).unwrap();
    assert!(!text.contains("\"definitions\""));
    assert!(!text.contains("\"$defs\""));
}

#[test]
fn messages_declare_draft_07_schemas_and_the_kits_headers() {
    let document = document(&contracts::topology()).to_value().unwrap();
    let message = &document["components"]["messages"]["transaction.recorded"];
    for part in ["headers", "payload"] {
        assert_eq!(
            message[part]["schemaFormat"],
            "application/schema+json;version=draft-07"
        );
    }
    let headers = &message["headers"]["schema"];
    for header in [
        "x-attempt",
        "x-created-at-ms",
        "traceparent",
        "cloudEvents_specversion",
        "cloudEvents_id",
        "cloudEvents_source",
        "cloudEvents_type",
        "cloudEvents_time",
        "cloudEvents_subject",
        "x-key-sequence",
    ] {
        assert!(headers["properties"][header].is_object(), "{header}");
    }
    assert_eq!(
        headers["properties"]["cloudEvents_type"]["const"],
        "transaction.recorded"
    );
    assert_eq!(headers["properties"]["x-key-sequence"]["const"], "user");
    assert_eq!(
        message["bindings"]["amqp"]["messageType"],
        "transaction.recorded"
    );
    let payload = &message["payload"]["schema"];
    assert_eq!(
        payload["$schema"],
        "http://json-schema.org/draft-07/schema#"
    );
    assert_eq!(payload["properties"]["occurred_at"]["format"], "date-time");
    let placed = &document["components"]["messages"]["order.placed"]["headers"]["schema"];
    assert!(placed["properties"]["x-key-sequence"].is_null());
}
