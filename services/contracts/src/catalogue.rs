//! The contract as data, for tools that describe it (`msgkit asyncapi`): every event type with
//! its doc comment and payload schema, and which service publishes it. Written next to the
//! constants and the services' code so that a description cannot drift from them: the event
//! types' list is generated from their declarations, and the saga's tests check that every
//! message a service publishes is in [`PUBLISHERS`].

use schemars::{JsonSchema, Schema, SchemaGenerator};

use crate::event_type::*;

/// One event type as a document describes it.
#[derive(Clone, Copy, Debug)]
pub struct EventDoc {
    /// The name: the AMQP `type` and the routing key on the events exchange.
    pub name: &'static str,
    /// The doc comment of its constant in [`crate::event_type`], one line per source line.
    pub doc: &'static str,
    /// The payload's Rust type (`OrderPlaced`).
    pub payload: &'static str,
    /// The sequence its events are numbered in (`msgkit::EventType::sequence`), if any.
    pub sequence: Option<&'static str>,
    schema: fn(&mut SchemaGenerator) -> Schema,
}

impl EventDoc {
    /// An entry of [`crate::event_type::ALL`]; written by the `event_types!` declaration.
    pub const fn new(
        name: &'static str,
        doc: &'static str,
        payload: &'static str,
        sequence: Option<&'static str>,
        schema: fn(&mut SchemaGenerator) -> Schema,
    ) -> Self {
        Self {
            name,
            doc,
            payload,
            sequence,
            schema,
        }
    }

    /// The payload's JSON Schema, in the dialect `generator` was set up for (the AsyncAPI
    /// document asks for draft-07), with the payload type's doc comments as descriptions.
    pub fn payload_schema(&self, generator: &mut SchemaGenerator) -> Schema {
        (self.schema)(generator)
    }
}

/// The root schema of payload `P` (a function pointer per event type, since the constants'
/// payload types differ).
pub fn root_schema_of<P: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.root_schema_for::<P>()
}

/// Declares the event type constants as written, plus `ALL`, the same list as data: a new
/// constant cannot be left out of the AsyncAPI document.
macro_rules! event_types {
    ($(
        $(#[doc = $doc:literal])*
        pub const $name:ident: EventType<$payload:ident> = $value:expr;
    )*) => {
        $(
            $(#[doc = $doc])*
            pub const $name: EventType<$payload> = $value;
        )*

        /// Every event type above, in declaration (saga) order, as data: name, doc comment and
        /// payload schema.
        pub const ALL: &[$crate::EventDoc] = &[$(
            $crate::EventDoc::new(
                $name.name(),
                concat!($($doc, "\n"),*),
                stringify!($payload),
                $name.sequence(),
                $crate::catalogue::root_schema_of::<$payload>,
            ),
        )*];
    };
}

/// Which service publishes which event types: the `app_id` of their messages, and the services'
/// `publish` and outbox calls as data. The saga's and the services' tests check every message
/// they see published against it (`publishes`), and the contract's tests that every event type
/// has a publisher.
pub const PUBLISHERS: &[(&str, &[&str])] = &[
    (
        "order",
        &[
            ORDER_PLACED.name(),
            ORDER_CONFIRMED.name(),
            ORDER_REJECTED.name(),
            ORDER_CANCELLED.name(),
            ORDER_CANCEL_REQUESTED.name(),
        ],
    ),
    (
        "inventory",
        &[
            INVENTORY_RESERVED.name(),
            INVENTORY_REJECTED.name(),
            INVENTORY_RELEASED.name(),
        ],
    ),
    (
        "payment",
        &[
            PAYMENT_SUCCEEDED.name(),
            PAYMENT_FAILED.name(),
            PAYMENT_CALLBACK.name(),
            PAYMENT_REFUNDED.name(),
        ],
    ),
    (
        "reconcile",
        &[
            RECONCILE_MATCHED.name(),
            RECONCILE_MISMATCH.name(),
            RECONCILE_RESOLVED.name(),
        ],
    ),
    ("risk", &[TRANSACTION_RECORDED.name(), RISK_ALERT.name()]),
];

/// Whether [`PUBLISHERS`] says that `service` publishes `event_type`.
pub fn publishes(service: &str, event_type: &str) -> bool {
    PUBLISHERS
        .iter()
        .any(|(name, events)| *name == service && events.contains(&event_type))
}
