//! The examples' contracts: their event types and who receives which. In your own system this
//! is a crate every service depends on (as `services/contracts` is for the demo saga), so that
//! a publisher and its consumers cannot disagree on a name or a payload.
//!
//! Every example declares the whole [`topology`] at start-up: whichever starts first, each
//! queue and its bindings exist before anything is published, so nothing is unroutable.
// Each example uses its part of the contracts.
#![allow(dead_code)]

use msgkit::{EventType, Topology, WorkQueue};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A ticket was opened (by `publisher`, `POST /tickets`).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct TicketOpened {
    pub ticket_id: Uuid,
    pub title: String,
}

/// A ticket was closed (by `publisher`, `POST /tickets/{id}/close`).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct TicketClosed {
    pub ticket_id: Uuid,
}

/// The consumer saw a ticket opened and closed (its follow-up event).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct TicketResolved {
    pub ticket_id: Uuid,
    pub open_for_ms: i64,
}

// The name is also the routing key on the `events` exchange: `<service>.<event>`. The macro
// also writes `ALL`, these declarations as data for the AsyncAPI document (asyncapi.yaml).
msgkit::event_types! {
    /// A ticket was opened (publisher -> consumer, stateful).
    pub const TICKET_OPENED: EventType<TicketOpened> = EventType::new("example.ticket.opened");
    /// A ticket was closed (publisher -> consumer).
    pub const TICKET_CLOSED: EventType<TicketClosed> = EventType::new("example.ticket.closed");
    /// A ticket seen opened was closed (consumer -> stateful).
    pub const TICKET_RESOLVED: EventType<TicketResolved> = EventType::new("example.ticket.resolved");
}

/// The service of `publisher`.
pub const PUBLISHER: &str = "example_publisher";

/// The work queue of `consumer` (also its service name, schema and settings prefix).
pub const CONSUMER: &str = "example_consumer";
/// The work queue of `stateful`.
pub const STATEFUL: &str = "example_stateful";

/// Who publishes what (their messages' `app_id`), for the AsyncAPI document.
pub const PUBLISHERS: &[(&str, &[&str])] = &[
    (PUBLISHER, &[TICKET_OPENED.name(), TICKET_CLOSED.name()]),
    (CONSUMER, &[TICKET_RESOLVED.name()]),
];

/// Who receives what: one work queue per consuming service, bound to the events it routes
/// (the kit refuses to start a consumer whose routes and bindings disagree).
pub fn topology() -> Topology {
    Topology::default()
        .with_queue(
            WorkQueue::new(CONSUMER)
                .bind(TICKET_OPENED)
                .bind(TICKET_CLOSED),
        )
        .with_queue(
            WorkQueue::new(STATEFUL)
                .bind(TICKET_OPENED)
                .bind(TICKET_RESOLVED),
        )
}
