//! Retiring old inbox rows. The consumer that writes them also deletes them, so a service
//! needs no separate job; a failed sweep is only logged and tried again next interval.

use std::time::Duration;

use sqlx::PgPool;

use crate::inbox;
use crate::shutdown::Shutdown;

/// Delete `consumer`'s inbox rows older than `retention` now and every `interval` after,
/// until `shutdown`. A sweep that has started runs to its end rather than being cut off
/// mid-statement; shutdown is looked at between sweeps.
pub(super) async fn sweep_inbox(
    pool: &PgPool,
    consumer: &str,
    retention: Duration,
    interval: Duration,
    shutdown: &Shutdown,
) {
    while !shutdown.is_triggered() {
        match inbox::delete_older_than(pool, consumer, retention).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "deleted old inbox rows"),
            Err(error) => tracing::warn!(%error, "inbox clean-up failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {},
            () = shutdown.triggered() => {},
        }
    }
}
