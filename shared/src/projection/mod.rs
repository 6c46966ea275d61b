//! Projections of the event archive: tables built from the history of events, the way a team
//! coming from Kafka expects to build them.
//!
//! A [`Projection`] is a name, the migrations of its own tables, and one apply function per
//! event type it cares about. Run in a service ([`crate::service::Service::project`]), it:
//! - reads the archive ([`crate::topology::Archive`]) from its checkpoint, or from the first
//!   retained event the first time, then follows it live;
//! - applies a batch of events and stores the archive offset reached **in the same
//!   transaction**, so that a crash anywhere repeats nothing and loses nothing (exactly once in
//!   effect, with no inbox);
//! - is applied by one replica at a time, whatever the number of replicas: the one holding a
//!   PostgreSQL advisory lock. The others wait to take over; a replica that dies releases the
//!   lock with its connection. The checkpoint is also written with a compare-and-set on the
//!   offset, so a replica that lost the lock without noticing cannot commit over its successor;
//! - reports its lag in seconds (`msgkit_projection_lag_seconds`) and, while catching up, a
//!   `/readyz` reason;
//! - rebuilds itself on request (`msgkit projection rebuild NAME`): new tables from the first
//!   retained event while the live ones keep serving, then an atomic switch (see [`admin`]).
//!
//! The archive is at-least-once: the relay publishes a row again when it could not mark it
//! (a crash between the broker's confirm and the commit), and so the same event (same
//! `message_id`) can be at two offsets. Apply functions are idempotent by a natural key (an
//! order's rebate line is inserted `ON CONFLICT DO NOTHING`) or by [`Context::message_id`].
//!
//! ```no_run
//! use msgkit::EventType;
//! use msgkit::projection::{Context, Projection, ProjectionError};
//! # #[derive(serde::Deserialize)] struct Paid { order_id: String, customer_id: String, amount_cents: i64 }
//! const PAID: EventType<Paid> = EventType::new("payment.succeeded");
//!
//! async fn on_paid(mut ctx: Context<'_>, paid: Paid) -> Result<(), ProjectionError> {
//!     sqlx::query(
//!         "INSERT INTO spend (order_id, customer_id, cents) VALUES ($1, $2, $3)
//!          ON CONFLICT (order_id) DO NOTHING",
//!     )
//!     .bind(&paid.order_id)
//!     .bind(&paid.customer_id)
//!     .bind(paid.amount_cents)
//!     .execute(ctx.tx())
//!     .await?;
//!     Ok(())
//! }
//!
//! let spend = Projection::new("spend", sqlx::migrate::Migrator::DEFAULT).apply(PAID, on_paid);
//! ```

pub mod admin;
mod apply_fn;
mod config;
mod reader;
mod rebuild;
mod runner;
mod stats;
mod store;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use sqlx::PgConnection;
use sqlx::migrate::Migrator;

use self::apply_fn::{ApplyFn, ErasedApply, Typed};
use crate::event::EventType;

pub use self::admin::{ArchiveBounds, ProjectionStatus, RebuildStatus};
pub use self::config::ProjectionConfig;
pub(crate) use self::runner::ProjectionRunner;
pub(crate) use self::stats::ProjectionStats;

/// Why an event could not be applied. The batch is rolled back and retried with backoff; the
/// projection does not skip an event it should apply (its tables would be wrong without
/// anyone knowing), so a failure that does not go away halts it, visibly (log, `/readyz`,
/// `msgkit_projection_failures_total`), until a fixed version is deployed.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The database failed (rolled back; retried).
    #[error("projection database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The event's body does not decode into its type's payload.
    #[error("event {message_id} of type {event_type} does not decode: {source}")]
    Decode {
        /// The event's type.
        event_type: String,
        /// Its `message_id`.
        message_id: String,
        /// The decoder's error.
        source: serde_json::Error,
    },
    /// The apply function refused the event, with its reason.
    #[error("{0}")]
    Refused(String),
}

/// What an apply function gets besides the payload: the transaction that also stores the
/// checkpoint, and the event's facts.
pub struct Context<'a> {
    tx: &'a mut PgConnection,
    event: &'a ArchivedEvent,
}

impl Context<'_> {
    /// The transaction: everything written here commits with the checkpoint, or not at all.
    /// Its search path starts with the schema being written (the service's, or a rebuild's),
    /// so write the projection's tables unqualified.
    pub fn tx(&mut self) -> &mut PgConnection {
        self.tx
    }

    /// The event's `message_id` (the same for a duplicate of it in the archive).
    pub fn message_id(&self) -> &str {
        &self.event.message_id
    }

    /// The event's offset in the archive.
    pub fn offset(&self) -> u64 {
        self.event.offset
    }

    /// When the event was created (its outbox row).
    pub fn created_at(&self) -> DateTime<Utc> {
        self.event.created_at
    }

    /// The aggregate the event is about (`correlation_id`).
    pub fn correlation_id(&self) -> &str {
        &self.event.correlation_id
    }
}

/// An event as read from the archive.
#[derive(Clone, Debug)]
pub(crate) struct ArchivedEvent {
    pub(crate) offset: u64,
    pub(crate) message_id: String,
    pub(crate) event_type: String,
    pub(crate) correlation_id: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) body: Vec<u8>,
}

/// A projection: its name, its tables' migrations and its apply functions. See the module
/// docs.
pub struct Projection {
    name: String,
    migrations: Migrator,
    // A handful of event types: a linear scan beats hashing the type of every event.
    applies: Vec<(String, Box<dyn ErasedApply>)>,
}

impl std::fmt::Debug for Projection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projection")
            .field("name", &self.name)
            .field("event_types", &self.event_types().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Projection {
    /// A projection named `name` (lowercase letters, digits, `_`: it names its checkpoint and
    /// a rebuild's schema) whose tables `migrations` create. The migrations are tracked in
    /// `_<name>_projection_migrations`, apart from the service's own, because a rebuild runs
    /// them again into a new schema.
    pub fn new(name: impl Into<String>, migrations: Migrator) -> Self {
        Self {
            name: name.into(),
            migrations,
            applies: Vec::new(),
        }
    }

    /// Apply events of type `event` with `apply`: `async fn f(ctx: Context<'_>, payload: P) ->
    /// Result<(), ProjectionError>`. Events of types without an apply function are passed
    /// over (the archive holds every event of the system).
    pub fn apply<P, F>(mut self, event: EventType<P>, apply: F) -> Self
    where
        P: DeserializeOwned + Send + 'static,
        F: for<'a> ApplyFn<'a, P>,
    {
        self.applies
            .push((event.name().to_owned(), Box::new(Typed::new(apply))));
        self
    }

    /// The projection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The event types it applies.
    pub fn event_types(&self) -> impl Iterator<Item = &str> {
        self.applies.iter().map(|(name, _)| name.as_str())
    }

    /// The migrations of its tables.
    pub(crate) fn migrator(&self) -> Migrator {
        let mut migrator = Migrator {
            migrations: self.migrations.migrations.clone(),
            ..Migrator::DEFAULT
        };
        migrator.dangerous_set_table_name(format!("_{}_projection_migrations", self.name));
        migrator
    }

    /// Apply `event` in `tx`, if the projection applies its type.
    pub(crate) async fn apply_event(
        &self,
        tx: &mut PgConnection,
        event: &ArchivedEvent,
    ) -> Result<bool, ProjectionError> {
        let Some((_, apply)) = self
            .applies
            .iter()
            .find(|(name, _)| *name == event.event_type)
        else {
            return Ok(false);
        };
        apply.call(Context { tx, event }).await?;
        Ok(true)
    }
}

/// Whether `name` can name a projection (and so a schema and an advisory lock key).
pub(crate) fn valid_name(name: &str) -> bool {
    name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}
