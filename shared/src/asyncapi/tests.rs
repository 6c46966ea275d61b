//! The document from a small contract: what each declaration becomes, and the mistakes it
//! refuses to describe.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use schemars::JsonSchema;
use serde::Serialize;

use super::*;
use crate::{EventType, Topology, WorkQueue};

/// Payload of the test events.
#[derive(Serialize, JsonSchema)]
struct Noted {
    /// What was noted.
    text: String,
}

crate::event_types! {
    /// A note was taken. It has a second sentence.
    const NOTED: EventType<Noted> = EventType::new("notes.noted");
    /// A note was kept, numbered per notebook.
    const KEPT: EventType<Noted> = EventType::new("notes.kept").in_sequence("notebook");
}

fn topology() -> Topology {
    Topology::default().with_queue(WorkQueue::new("archive").bind("notes.*"))
}

fn document(publishers: &[(&str, &[&str])]) -> Result<serde_json::Value, AsyncApiError> {
    let topology = topology();
    Document::new("Notes", "1.2.3")
        .server(Server::new("broker", "mq:5672").vhost("notes"))
        .events(ALL)
        .topology(&topology)
        .publishers(publishers)
        .to_value()
}

#[test]
fn the_macro_lists_every_declared_event_type_with_its_doc_comment() {
    let names: Vec<&str> = ALL.iter().map(EventDoc::name).collect();
    assert_eq!(names, ["notes.noted", "notes.kept"]);
    assert_eq!(
        ALL[0].doc(),
        " A note was taken. It has a second sentence.\n"
    );
    assert_eq!(ALL[1].sequence(), Some("notebook"));
    assert_eq!(NOTED.name(), "notes.noted");
}

#[test]
fn declarations_become_channels_messages_and_operations() {
    let document = document(&[("notes", &[NOTED.name(), KEPT.name()])]).unwrap();
    assert_eq!(document["info"]["version"], "1.2.3");
    assert_eq!(document["servers"]["broker"]["pathname"], "/notes");
    let channel = &document["channels"]["notes.noted"];
    assert_eq!(channel["servers"][0]["$ref"], "#/servers/broker");
    assert_eq!(channel["bindings"]["amqp"]["exchange"]["vhost"], "notes");
    let message = &document["components"]["messages"]["notes.noted"];
    assert_eq!(message["summary"], "A note was taken.");
    assert_eq!(
        message["payload"]["schema"]["properties"]["text"]["description"],
        "What was noted."
    );
    let kept = &document["components"]["messages"]["notes.kept"]["headers"]["schema"];
    assert_eq!(kept["properties"]["x-key-sequence"]["const"], "notebook");
    let operations = document["operations"].as_object().unwrap();
    let mut ids: Vec<&str> = operations.keys().map(String::as_str).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [
            "archive.receive.notes.kept",
            "archive.receive.notes.noted",
            "notes.send.notes.kept",
            "notes.send.notes.noted",
        ]
    );
}

#[test]
fn a_publisher_of_an_undeclared_event_type_is_refused() {
    let error = document(&[("notes", &["notes.lost"])]).unwrap_err();
    assert!(
        matches!(error, AsyncApiError::UnknownEvent { ref event, .. } if event == "notes.lost")
    );
}

#[test]
fn two_event_types_of_one_name_are_refused() {
    const TWICE: &[EventDoc] = &[EventDoc::new(&NOTED, ""), EventDoc::new(&NOTED, "")];
    let error = Document::new("Notes", "1")
        .events(TWICE)
        .to_value()
        .unwrap_err();
    assert!(matches!(error, AsyncApiError::DuplicateEvent(ref name) if name == "notes.noted"));
}

#[test]
fn the_same_declarations_give_the_same_yaml() {
    let topology = topology();
    let yaml = || {
        Document::new("Notes", "1")
            .events(ALL)
            .topology(&topology)
            .to_yaml()
            .unwrap()
    };
    assert_eq!(yaml(), yaml());
    assert!(yaml().starts_with("asyncapi: 3.0.0\n"), "{}", yaml());
}
