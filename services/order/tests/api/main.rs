//! The order service against the real PostgreSQL and RabbitMQ; every test gets its own
//! database and vhost.

mod broker_outage;
mod crash_recovery;
mod helpers;
mod idempotency;
mod place_order;
mod validation;
