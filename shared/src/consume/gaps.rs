//! Skipping the gaps of an ordered consumer's keys (see [`crate::key_order`]): a key whose
//! expected message never came, and is not waiting for a retry, goes on with its next parked
//! message once `key_order_gap_timeout` has passed. Checked a few times per timeout, by the
//! consumer's clock, until shutdown; a failed check is only logged and tried again.

use std::time::Duration;

use sqlx::PgPool;

use super::config::ConsumerConfig;
use crate::key_order;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// Look for stalled keys every quarter timeout, within these bounds.
const CHECK_AT_LEAST_EVERY: Duration = Duration::from_secs(10);
const CHECK_AT_MOST_EVERY: Duration = Duration::from_millis(100);

/// Skip `config`'s consumer's gaps until `shutdown`.
pub(super) async fn skip_gaps(
    pool: &PgPool,
    config: &ConsumerConfig,
    metrics: &Metrics,
    shutdown: &Shutdown,
) {
    let every = (config.key_order_gap_timeout / 4).clamp(CHECK_AT_MOST_EVERY, CHECK_AT_LEAST_EVERY);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {},
            () = shutdown.triggered() => return,
        }
        let skipped = tokio::select! {
            biased;
            () = shutdown.triggered() => return,
            skipped = key_order::skip_gaps(
                pool,
                &config.name,
                &config.queue,
                config.clock.now(),
                config.key_order_gap_timeout,
            ) => skipped,
        };
        match skipped {
            Ok(0) => {}
            Ok(gaps) => metrics.key_order_gaps(&config.name, gaps),
            Err(error) => tracing::warn!(%error, "looking for stalled keys failed"),
        }
    }
}
