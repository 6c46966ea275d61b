//! The order service: takes orders over HTTP and publishes `order.placed` through its
//! transactional outbox. An example of the kit: the library does the messaging work.

pub mod configuration;
pub mod domain;
pub mod error;
pub mod idempotency;
pub mod routes;
pub mod startup;
pub mod storage;
