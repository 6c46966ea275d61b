//! # msgkit: reliable messaging on RabbitMQ
//!
//! The kit a team builds its event-driven services on when a message must not be lost: every
//! accepted change publishes its events, every event reaches every consumer bound to it, no
//! effect is applied twice, and a message that cannot be handled is visible and replayable.
//!
//! ## The concepts
//!
//! - **Event types** ([`EventType`]): a name (`order.placed`, also the routing key on the
//!   `events` topic exchange) bound to its payload type, declared once in a contracts crate.
//! - **Topology** ([`Topology`], [`WorkQueue`]): one durable quorum work queue per consuming
//!   service with its bindings and `<queue>.dlq`, declared idempotently by every process: the
//!   one table of who receives what.
//! - **Outbox** ([`outbox`]): an event is a row written in the same transaction as the state
//!   change; a relay publishes it with publisher confirms and the mandatory flag, and marks it
//!   published only then.
//! - **Routes** ([`consume::Routes`]): a consumer's handlers, one async function per event
//!   type, called with a [`consume::Context`] (the transaction, the message's facts, an outbox
//!   for follow-up events) and the decoded payload, inside a transaction that also writes the
//!   message's inbox row (a redelivery is applied once). A handler answers done, retry later
//!   (transient: durable delayed retry through the broker with exponential backoff) or
//!   dead-letter now (poison). Routes are checked against the queue's bindings at start.
//! - **Service** ([`service::Service`]): a service's schema, relay, consumers and HTTP
//!   endpoints (`/healthz`, `/readyz`, `/metrics`) run and stopped as one, from settings read
//!   once ([`service::ServiceSettings`], [`config`]).
//! - **Testing** (`testing`, feature `testing`): a fresh database and vhost per test, a
//!   cuttable TCP proxy, test messages, and waits with deadlines instead of sleeps.
//!
//! ## A complete service
//!
//! ```no_run
//! use msgkit::consume::{Context, HandlerError, Routes};
//! use msgkit::service::{Service, ServiceError, ServiceSettings};
//! use msgkit::{EventType, Topology, WorkQueue};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct OrderPlaced { order_id: String, amount_cents: i64 }
//! #[derive(Serialize, Deserialize)]
//! struct Invoiced { order_id: String }
//!
//! const ORDER_PLACED: EventType<OrderPlaced> = EventType::new("order.placed");
//! const INVOICED: EventType<Invoiced> = EventType::new("billing.invoiced");
//!
//! /// Every queue and its bindings: declared by every service, so nothing published is lost
//! /// whichever service starts first.
//! fn topology() -> Topology {
//!     Topology::default().with_queue(WorkQueue::new("billing").bind(ORDER_PLACED))
//! }
//!
//! async fn invoice(mut ctx: Context<'_>, order: OrderPlaced) -> Result<(), HandlerError> {
//!     sqlx::query("INSERT INTO invoices (order_id, amount_cents) VALUES ($1, $2)")
//!         .bind(&order.order_id)
//!         .bind(order.amount_cents)
//!         .execute(ctx.tx())
//!         .await?; // a database error rolls back and retries later
//!     // Published once this transaction commits, continuing the order's trace.
//!     ctx.publish(INVOICED, &Invoiced { order_id: order.order_id }).await?;
//!     Ok(())
//! }
//!
//! async fn build(settings: ServiceSettings) -> Result<Service, ServiceError> {
//!     let migrations = sqlx::migrate::Migrator::DEFAULT; // sqlx::migrate!() in a real crate
//!     Service::start(settings, topology(), migrations)
//!         .await?
//!         .with_relay() // publishes what the handlers enqueue
//!         .consume(Routes::new().route(ORDER_PLACED, invoice))
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), ServiceError> {
//!     // Settings from the environment (or a TOML file): AMQP_URL, DATABASE_URL,
//!     // BILLING_HTTP_ADDR, BILLING_CONSUMER_BATCH, RETRY_MAX_ATTEMPTS, ...
//!     msgkit::service::run("billing", 8090, "billing", build).await
//! }
//! ```
//!
//! ## The modules
//!
//! - [`topology`], [`bindings`]: the broker's exchange, queues, delay tiers, and the check of
//!   routes against bindings;
//! - [`message`], [`trace_context`]: the message contract (AMQP properties and headers) and
//!   the W3C `traceparent` carried in outbox rows and headers;
//! - [`broker`], [`publish`]: connecting with backoff (credentials kept out of logs), and
//!   publishing where anything but a broker ack of a routed message is a failure;
//! - [`outbox`], [`consume`], [`state`], [`timer`]: the outbox and its relay, the consumer
//!   runtime with its inbox, a consumer's keyed state and durable timers;
//! - [`replay`]: the headers of a dead letter sent back to its work queue;
//! - `asyncapi` (feature `asyncapi`): the AsyncAPI document of a contracts crate, built from
//!   its event types, topology and publishers;
//! - [`admission`]: shedding an API's new work with 503 + `Retry-After` while the work it
//!   accepted is too far behind;
//! - [`service`], [`config`], [`shutdown`], [`backoff`], [`clock`]: running a service, its
//!   settings, the cancellation every background task hangs off, retry schedules, and the
//!   clock tests move.
#![warn(missing_docs)]
// Small functions, one job each (threshold in clippy.toml).
#![warn(clippy::too_many_lines)]

pub mod admission;
#[cfg(feature = "asyncapi")]
pub mod asyncapi;
pub mod auth;
pub mod backoff;
pub mod bindings;
pub mod broker;
pub mod clock;
pub mod config;
pub mod consume;
pub mod database;
pub mod event;
pub mod event_time;
pub mod http;
pub(crate) mod inbox;
pub mod key_order;
pub mod message;
pub mod metrics;
pub(crate) mod ops;
pub mod outbox;
pub mod projection;
pub mod publish;
pub mod rate_limit;
pub mod replay;
pub mod schema;
pub mod service;
pub mod shutdown;
pub mod state;
pub mod telemetry;
pub mod timer;
pub mod topology;
pub mod trace_context;

#[cfg(feature = "testing")]
pub mod testing;

pub use broker::{BrokerError, BrokerSettings, BrokerTls};
pub use event::EventType;
pub use message::OutgoingMessage;
pub use outbox::{OutboxMessage, OutboxRelay, RelayConfig};
pub use publish::{ConfirmedPublisher, PublishOutcome};
pub use shutdown::Shutdown;
pub use timer::TimerType;
pub use topology::{Topology, WorkQueue};
pub use trace_context::TraceParent;
