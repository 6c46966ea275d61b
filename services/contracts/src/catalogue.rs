//! Who publishes what, as data for the AsyncAPI document (`msgkit asyncapi`, through
//! `msgkit::asyncapi::Document::publishers`). Written next to the constants so that it cannot
//! drift from the services' code: the saga's tests check that every message a service
//! publishes is in [`PUBLISHERS`]. The event types' own list, `event_type::ALL`, is written by
//! `msgkit::event_types!` from their declarations.

use crate::event_type::*;

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
