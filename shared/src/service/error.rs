//! Why a service could not start, or stopped with an error.

use std::net::SocketAddr;

use crate::config::ConfigError;
use crate::database::DatabaseError;

/// Why a service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The database.
    #[error(transparent)]
    Database(#[from] DatabaseError),
    /// The kit's or the service's tables could not be migrated.
    #[error("migrating {what}: {source}")]
    Migrate {
        /// Whose tables.
        what: String,
        /// Why.
        source: sqlx::migrate::MigrateError,
    },
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP address is taken or invalid.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A consumer's routes disagree with its queue's bindings.
    #[error(transparent)]
    Bindings(#[from] crate::bindings::BindingsMismatch),
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    /// A consumer handles timers, whose firings are outbox messages, and nothing publishes
    /// the outbox.
    #[error(
        "the consumer of queue {queue:?} handles timers, which fire through the outbox, but the \
         service runs no outbox relay: add .with_relay()"
    )]
    TimersWithoutRelay {
        /// The consumer's queue.
        queue: String,
    },
    /// A projection reads the event archive, which the settings do not turn on.
    #[error(
        "projection {name:?} reads the event archive, which is off: set ARCHIVE_ENABLED=true \
         (in every service of the system, so that each one's events are archived)"
    )]
    ProjectionWithoutArchive {
        /// The projection.
        name: String,
    },
    /// A projection's name cannot name its checkpoint and schemas.
    #[error("projection name {0:?} must be lowercase letters, digits and '_', at most 40 bytes")]
    ProjectionName(String),
    /// A consumer applies keys in order, which releases parked messages through the outbox
    /// and recognises a released message's redelivered original by its inbox row.
    #[error(
        "the consumer of queue {queue:?} applies keys in order, which needs its inbox and the \
         service's outbox relay (.with_relay())"
    )]
    KeyOrderNeedsInboxAndRelay {
        /// The consumer's queue.
        queue: String,
    },
    /// `with_admission` was called a second time: one guard per service, whose decision
    /// `/readyz` reports.
    #[error("a service has one admission guard; with_admission was called twice")]
    AdmissionTwice,
}
