//! # msgkit: reliable messaging on RabbitMQ
//!
//! The kit that example services (and your own) build on when a message must not be lost:
//!
//! - [`topology`]: the exchange and quorum work queues every service declares idempotently;
//! - [`message`]: the message contract (AMQP properties and headers) shared by every hop;
//! - [`trace_context`]: the W3C `traceparent` carried in outbox rows and AMQP headers;
//! - [`backoff`]: exponential backoff with jitter, and waits that give way to shutdown;
//! - [`broker`]: connecting to RabbitMQ with backoff, credentials kept out of logs;
//! - [`publish`]: publishing with publisher confirms and the mandatory flag, where anything
//!   but a broker ack of a routed message is a failure;
//! - [`replay`]: the headers of a dead letter sent back to its work queue;
//! - [`outbox`]: enqueue a message inside the caller's database transaction, and the relay
//!   that publishes it;
//! - [`consume`]: the consumer runtime (ack, retry with backoff, dead-letter, inbox);
//! - [`service`]: a service's database, relay, consumers and HTTP endpoints run as one;
//! - [`shutdown`]: the cancellation and task tracking every background task hangs off;
//! - `testing` (feature `testing`): the harness used by every crate's integration tests.
#![warn(missing_docs)]

pub mod backoff;
pub mod bindings;
pub mod broker;
pub mod config;
pub mod consume;
pub mod database;
pub mod event;
pub mod inbox;
pub mod message;
pub mod metrics;
pub mod ops;
pub mod outbox;
pub mod publish;
pub mod replay;
pub mod schema;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod topology;
pub mod trace_context;

#[cfg(feature = "testing")]
pub mod testing;

pub use broker::{BrokerError, BrokerSettings};
pub use event::EventType;
pub use message::OutgoingMessage;
pub use outbox::{OutboxMessage, OutboxRelay, RelayConfig};
pub use publish::{ConfirmedPublisher, PublishOutcome};
pub use shutdown::Shutdown;
pub use topology::{Topology, WorkQueue};
pub use trace_context::TraceParent;
