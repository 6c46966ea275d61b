//! The consumer runtime: manual acks, per-consumer prefetch and concurrency, handlers that
//! answer done / retry later / dead-letter now, durable delayed retry through the broker,
//! dead-lettering with headers an operator can read, an inbox that makes redelivery harmless,
//! reconnection, and graceful shutdown.
//!
//! Services write [`Routes`]: one async function per event type (see the crate's front page
//! for a whole service). [`Handler`] is the lower-level interface the runtime runs, which
//! [`Routes`] implements; a hand-written one must do its own type dispatch and decoding.

mod acks;
mod batch;
mod config;
mod context;
mod dead_letter;
mod failure;
mod faults;
mod gaps;
mod handler;
mod inbox_sweep;
mod lateness;
mod message;
mod ordered;
mod outcome;
mod pipeline;
mod republish;
mod retry;
mod route_fn;
mod routes;
mod runtime;
mod session;
mod stats;
mod timer_firing;

pub use config::ConsumerConfig;
pub use context::{Batch, Context};
pub use dead_letter::{
    EXCEPTION_DETAIL, EXCEPTION_MESSAGE, EXCEPTION_TYPE, FAILED_AT, FAILED_SERVICE, FAILURE_REASON,
    FailureReason, MAX_DETAIL_BYTES, ORIGINAL_EXCHANGE, ORIGINAL_QUEUE, ORIGINAL_ROUTING_KEY,
};
pub use faults::Faults;
pub use handler::{ConsumerSetup, FailureKind, Handler, HandlerError};
pub use message::{IncomingMessage, RETRY_AT_HEADER, UndecodableBody};
pub use retry::{RetryPolicy, random_unit};
pub use route_fn::{BatchFn, RouteFn};
pub use routes::{Routes, UNROUTED_ERROR_TYPE, Unrouted};
pub use runtime::Consumer;
pub use stats::ConsumerStats;
