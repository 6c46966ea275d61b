//! Firing a consumer's due timers (see [`crate::timer`]): woken by a notification when a
//! handler sets a timer due before the next poll, by its own schedule when the next timer is
//! due, and by polling every `timer_poll_interval`; stopped by shutdown.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;

use super::config::ConsumerConfig;
use crate::metrics::TimerMetrics;
use crate::shutdown::Shutdown;
use crate::timer;

/// Timers fired per transaction.
const FIRE_BATCH: i64 = 200;
/// The shortest wait between two claims: a due timer that another replica holds locked is
/// skipped, and must not make this one spin until that replica commits.
const MIN_WAIT: Duration = Duration::from_millis(25);

/// Fire `config`'s consumer's due timers until `shutdown`.
pub(super) async fn fire_timers(
    pool: &PgPool,
    config: &ConsumerConfig,
    metrics: &TimerMetrics,
    shutdown: &Shutdown,
) {
    let mut listener: Option<PgListener> = None;
    loop {
        if listener.is_none() {
            listener = tokio::select! {
                biased;
                () = shutdown.triggered() => return,
                listening = listen(pool) => listening,
            };
        }
        // A firing in progress is abandoned on shutdown: its transaction rolls back, and the
        // timers stay for the next start.
        let wait = tokio::select! {
            biased;
            () = shutdown.triggered() => return,
            wait = fire_once(pool, config, metrics) => wait,
        };
        let sleep = tokio::time::sleep(wait.max(MIN_WAIT));
        match &mut listener {
            Some(active) => tokio::select! {
                received = active.recv() => {
                    if let Err(error) = received {
                        tracing::warn!(%error, "timer notification listener failed; reconnecting");
                        listener = None;
                    }
                }
                () = sleep => {},
                () = shutdown.triggered() => return,
            },
            None => tokio::select! {
                () = sleep => {},
                () = shutdown.triggered() => return,
            },
        }
    }
}

/// Fire everything due now; how long until the next timer is due (at most the poll interval).
async fn fire_once(pool: &PgPool, config: &ConsumerConfig, metrics: &TimerMetrics) -> Duration {
    let poll = config.timer_poll_interval;
    loop {
        let now = config.clock.now();
        match timer::fire_due(pool, &config.name, &config.queue, now, FIRE_BATCH).await {
            Ok(fired) => {
                for row in &fired {
                    metrics.fired((now - row.due_at).to_std().unwrap_or(Duration::ZERO));
                }
                if fired.len() < FIRE_BATCH as usize {
                    break;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "firing timers failed; trying again next poll");
                return poll;
            }
        }
    }
    match timer::next_due(pool, &config.name).await {
        Ok(Some(due_at)) => (due_at - config.clock.now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(poll),
        Ok(None) => poll,
        Err(error) => {
            tracing::warn!(%error, "reading the next timer failed");
            poll
        }
    }
}

/// A connection that hears handlers set timers due soon, in the pool's schema. Without one the
/// task only polls: a lost notification delays a timer by at most the poll interval.
async fn listen(pool: &PgPool) -> Option<PgListener> {
    let listening = async {
        let channel: String = sqlx::query_scalar("SELECT 'msgkit_timers_' || current_schema()")
            .fetch_one(pool)
            .await?;
        crate::database::listen_apart(pool, &channel).await
    };
    match listening.await {
        Ok(listener) => Some(listener),
        Err(error) => {
            tracing::warn!(%error, "timer firing cannot LISTEN; polling only");
            None
        }
    }
}
