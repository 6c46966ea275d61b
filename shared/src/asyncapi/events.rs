//! Event types as data: what a document says about each one (name, doc comment, payload
//! schema, sequence), listed by the [`event_types!`](crate::event_types) declaration so that a
//! new event type cannot be left out.

use schemars::{JsonSchema, Schema, SchemaGenerator};

use crate::EventType;

/// One event type as a document describes it: an entry of the `ALL` list that
/// [`event_types!`](crate::event_types) writes.
#[derive(Clone, Copy, Debug)]
pub struct EventDoc {
    name: &'static str,
    doc: &'static str,
    sequence: Option<&'static str>,
    // A function pointer per event type: the payload types of one list differ.
    schema: fn(&mut SchemaGenerator) -> Schema,
}

impl EventDoc {
    /// `event`, documented by `doc` (its doc comment, one line per source line), with the
    /// schema of its payload type `P`.
    pub const fn new<P: JsonSchema>(event: &EventType<P>, doc: &'static str) -> Self {
        Self {
            name: event.name(),
            doc,
            sequence: event.sequence(),
            schema: root_schema_of::<P>,
        }
    }

    /// The name: the AMQP `type` and the routing key on the events exchange.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The doc comment, one line per source line (each with the space after `///`).
    pub const fn doc(&self) -> &'static str {
        self.doc
    }

    /// The sequence its events are numbered in ([`EventType::in_sequence`]), if any.
    pub const fn sequence(&self) -> Option<&'static str> {
        self.sequence
    }

    /// The payload's JSON Schema in the dialect `generator` was set up for (a document asks
    /// for draft-07), the payload type's doc comments as descriptions.
    pub fn payload_schema(&self, generator: &mut SchemaGenerator) -> Schema {
        (self.schema)(generator)
    }
}

fn root_schema_of<P: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.root_schema_for::<P>()
}

/// Declares event type constants as written, plus `pub const ALL: &[EventDoc]`, the same list
/// as data (name, doc comment, payload schema) for [`Document::events`](super::Document::events):
/// a constant declared here cannot be missing from the document. Each payload type derives
/// `schemars::JsonSchema`; its doc comments and the constants' become the descriptions.
///
/// ```
/// use msgkit::EventType;
/// use schemars::JsonSchema;
/// use serde::{Deserialize, Serialize};
///
/// /// A ticket was opened.
/// #[derive(Serialize, Deserialize, JsonSchema)]
/// pub struct TicketOpened {
///     /// Its title.
///     pub title: String,
/// }
///
/// msgkit::event_types! {
///     /// A ticket was opened (helpdesk -> triage).
///     pub const TICKET_OPENED: EventType<TicketOpened> = EventType::new("helpdesk.ticket.opened");
/// }
///
/// assert_eq!(TICKET_OPENED.name(), "helpdesk.ticket.opened");
/// assert_eq!(ALL[0].name(), "helpdesk.ticket.opened");
/// assert_eq!(ALL[0].doc(), " A ticket was opened (helpdesk -> triage).\n");
/// ```
#[macro_export]
macro_rules! event_types {
    ($(
        $(#[doc = $doc:literal])*
        $vis:vis const $name:ident: EventType<$payload:ty> = $value:expr;
    )*) => {
        $(
            $(#[doc = $doc])*
            $vis const $name: $crate::EventType<$payload> = $value;
        )*

        /// Every event type declared with it, in declaration order, as data for the AsyncAPI
        /// document (`msgkit::asyncapi::Document::events`).
        pub const ALL: &[$crate::asyncapi::EventDoc] = &[$(
            $crate::asyncapi::EventDoc::new(&$name, concat!($($doc, "\n"),*)),
        )*];
    };
}
