//! Retiring what a consumer keeps: inbox rows past their retention and keyed-state entries
//! past their expiry. The consumer that writes them also deletes them, so a service needs no
//! separate job; a failed sweep is only logged and tried again next interval.

use sqlx::PgPool;

use super::config::ConsumerConfig;
use crate::shutdown::Shutdown;
use crate::{inbox, state};

/// Sweep `config`'s consumer now and every `inbox_cleanup_interval` after, until `shutdown`.
pub(super) async fn sweep(pool: &PgPool, config: &ConsumerConfig, shutdown: &Shutdown) {
    loop {
        // A sweep in progress is abandoned on shutdown (each DELETE is one statement: it
        // commits whole or not at all): with the database down it would otherwise hold up
        // shutdown until the pool gives up acquiring a connection.
        tokio::select! {
            biased;
            () = shutdown.triggered() => return,
            () = sweep_once(pool, config) => {},
        }
        tokio::select! {
            () = tokio::time::sleep(config.inbox_cleanup_interval) => {},
            () = shutdown.triggered() => return,
        }
    }
}

async fn sweep_once(pool: &PgPool, config: &ConsumerConfig) {
    if config.inbox {
        match inbox::delete_older_than(pool, &config.name, config.inbox_retention).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "deleted old inbox rows"),
            Err(error) => tracing::warn!(%error, "inbox clean-up failed"),
        }
    }
    match state::delete_expired(pool, &config.name, config.clock.now()).await {
        Ok(0) => {}
        Ok(deleted) => tracing::info!(deleted, "deleted expired state entries"),
        Err(error) => tracing::warn!(%error, "state clean-up failed"),
    }
}
