//! The examples' AsyncAPI document, `shared/examples/asyncapi.yaml`, is the one their
//! contracts describe now: the test a team's contracts crate keeps for its own document
//! (docs/guide.md, section 10). `MSGKIT_UPDATE_ASYNCAPI=1` rewrites the file instead.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

#[path = "../examples/contracts/mod.rs"]
mod contracts;

use msgkit::asyncapi::Document;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/asyncapi.yaml");
const REGENERATE: &str = "MSGKIT_UPDATE_ASYNCAPI=1 cargo nextest run -p msgkit --test asyncapi";

/// The document as the examples' contracts describe it, with a header saying how to rewrite it.
fn current() -> String {
    let topology = contracts::topology();
    let yaml = Document::new("msgkit examples: a ticket desk", "0.1.0")
        .description(
            "The events of the guide's examples (shared/examples), built from their contracts.",
        )
        .events(contracts::ALL)
        .topology(&topology)
        .publishers(contracts::PUBLISHERS)
        .to_yaml()
        .unwrap();
    format!(
        "# Generated from shared/examples/contracts: do not edit. Regenerate with\n# {REGENERATE}\n{yaml}"
    )
}

#[test]
fn the_committed_examples_document_is_the_one_their_contracts_describe() {
    let current = current();
    if std::env::var_os("MSGKIT_UPDATE_ASYNCAPI").is_some() {
        std::fs::write(COMMITTED, &current).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    if let Err(outdated) = msgkit::asyncapi::compare(&committed, &current) {
        panic!(
            "shared/examples/asyncapi.yaml is not what the contracts describe ({outdated}); \
             regenerate it with\n  {REGENERATE}"
        );
    }
}

#[test]
fn every_example_event_type_has_a_channel_a_sender_and_a_receiver() {
    let topology = contracts::topology();
    let document = Document::new("examples", "0")
        .events(contracts::ALL)
        .topology(&topology)
        .publishers(contracts::PUBLISHERS)
        .to_value()
        .unwrap();
    let operations = document["operations"].as_object().unwrap();
    for event in contracts::ALL {
        let name = event.name();
        assert!(document["channels"][name].is_object(), "{name}");
        let has = |action: &str| {
            operations
                .iter()
                .any(|(id, op)| op["action"] == action && id.ends_with(&format!(".{name}")))
        };
        assert!(has("send") && has("receive"), "{name}");
    }
    assert!(operations.contains_key("example_consumer.send.example.ticket.resolved"));
    assert!(operations.contains_key("example_stateful.receive.example.ticket.resolved"));
}
