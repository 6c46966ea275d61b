//! Retiring old inbox rows. The consumer that writes them also deletes them, so a service
//! needs no separate job; a failed sweep is only logged and tried again next interval.

use std::time::Duration;

use sqlx::PgPool;

use crate::inbox;
use crate::shutdown::Shutdown;

/// Delete `consumer`'s inbox rows older than `retention` now and every `interval` after,
/// until `shutdown`.
pub(super) async fn sweep_inbox(
    pool: &PgPool,
    consumer: &str,
    retention: Duration,
    interval: Duration,
    shutdown: &Shutdown,
) {
    loop {
        // A sweep in progress is abandoned on shutdown (the DELETE is one statement: it
        // commits whole or not at all): with the database down it would otherwise hold up
        // shutdown until the pool gives up acquiring a connection.
        tokio::select! {
            biased;
            () = shutdown.triggered() => return,
            deleted = inbox::delete_older_than(pool, consumer, retention) => match deleted {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "deleted old inbox rows"),
                Err(error) => tracing::warn!(%error, "inbox clean-up failed"),
            },
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {},
            () = shutdown.triggered() => return,
        }
    }
}
