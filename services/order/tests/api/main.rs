//! The order service against the real PostgreSQL and RabbitMQ; every test gets its own
//! database and vhost.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod broker_outage;
mod cancel;
mod crash_recovery;
mod database_outage;
mod helpers;
mod idempotency;
mod logs;
mod overload;
mod place_order;
mod rate_limit;
mod validation;
