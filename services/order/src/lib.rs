//! The order service: takes orders over HTTP, publishes `order.placed` through its
//! transactional outbox, and moves each order to its final state as the saga's results come
//! back. An example of the kit: the library does the messaging work.

pub mod domain;
pub mod error;
pub mod handlers;
pub mod idempotency;
pub mod routes;
pub mod startup;
pub mod storage;
