//! The outbox relay: claims unpublished rows, publishes them with confirms, marks them
//! published only after the broker acked a routed message.
//!
//! It wakes on `LISTEN/NOTIFY` when a transaction commits new rows, polls as a fallback (a
//! lost notification only delays), backs off while the broker is away, and keeps
//! per-aggregate order with any number of replicas (see [`super::store::claim`]).
//!
//! This file is the loop; [`batch`] relays one batch after another, [`wakeup`] decides when
//! the loop looks again, and the SQL is in [`super::store`].

mod archive;
mod batch;
mod config;
mod direct;
mod stats;
mod wakeup;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tracing::Instrument;

use self::wakeup::Wakeups;
use super::store;
use crate::backoff;
use crate::broker::{BrokerError, BrokerSettings};
use crate::metrics::{Metrics, RelayMetrics};
use crate::publish::ConfirmedPublisher;
use crate::shutdown::Shutdown;
use crate::topology::Topology;

pub use self::config::RelayConfig;
pub(crate) use self::direct::{Dispatch, DispatchSlot};
pub use self::stats::{BatchReport, RelayStats};

/// How long the relay keeps trying to mark a confirmed batch published after the claim's
/// transaction failed (a database restart takes a few seconds).
const MARK_PATIENCE: Duration = Duration::from_secs(15);

/// Why a batch did not complete. The relay loop handles both by backing off.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The broker connection failed; the batch's rows stay unpublished.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The database failed; any rows published in the batch will be published again.
    #[error("outbox relay database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Publishes a service's outbox. Run one or several per service; see the module docs.
#[derive(Clone, Debug)]
pub struct OutboxRelay {
    pool: PgPool,
    broker: BrokerSettings,
    topology: Topology,
    config: RelayConfig,
    metrics: RelayMetrics,
}

impl OutboxRelay {
    /// A relay for the outbox in `pool`'s current schema, publishing to `broker` after
    /// declaring `topology`.
    pub fn new(
        pool: PgPool,
        broker: BrokerSettings,
        topology: Topology,
        config: RelayConfig,
    ) -> Self {
        Self {
            metrics: relay_metrics(&Metrics::new(), &config),
            pool,
            broker,
            topology,
            config,
        }
    }

    /// Count into `metrics` (its service's registry) instead of a registry of its own.
    pub(crate) fn with_metrics(mut self, metrics: &Metrics) -> Self {
        self.metrics = relay_metrics(metrics, &self.config);
        self
    }

    /// The relay's live counters.
    pub fn stats(&self) -> Arc<RelayStats> {
        Arc::new(RelayStats::new(self.metrics.clone()))
    }

    /// Run until `shutdown` is triggered. A batch in progress is finished (or abandoned
    /// unmarked, to be published again) before it returns.
    pub async fn run(self, shutdown: Shutdown) {
        let span = tracing::info_span!(
            target: crate::telemetry::COMPONENT,
            "outbox_relay",
            app_id = %self.config.app_id,
        );
        self.relay(shutdown).instrument(span).await;
    }

    async fn relay(self, shutdown: Shutdown) {
        let mut wakeups = Wakeups::new(self.pool.clone(), self.config.poll_interval);
        let mut publisher: Option<ConfirmedPublisher> = None;
        let mut db_delays = self.broker.reconnect_backoff();
        let mut last_cleanup: Option<Instant> = None;
        let mut opened_before = false;
        tracing::info!(broker = %self.broker.redacted_url(), "outbox relay started");

        while !shutdown.is_triggered() {
            wakeups.ensure_listening().await;
            let Some(active) = self
                .usable_publisher(publisher.take(), &mut opened_before, &shutdown)
                .await
            else {
                break;
            };
            wakeups.discard_pending();
            match self.pump(&active).await {
                Ok(report) if report.nacked > 0 => {
                    // A nack can come from the channel rather than the queue: on RabbitMQ
                    // 3.10 a channel whose first publish to a quorum queue found the
                    // queue's leader node down keeps nacking every later publish to that
                    // queue, even once a new leader is elected. A fresh channel does not.
                    // The nacked rows are retried with backoff anyway, so no waiting here.
                    tracing::warn!(
                        nacked = report.nacked,
                        "the broker nacked publishes; opening a new channel"
                    );
                    active.close().await;
                    db_delays = self.broker.reconnect_backoff();
                }
                Ok(_) => {
                    publisher = Some(active);
                    db_delays = self.broker.reconnect_backoff();
                    // `pump` returns once a claim came back short: the outbox is drained for
                    // now.
                    self.cleanup_if_due(&mut last_cleanup).await;
                    wakeups.wait(&shutdown).await;
                }
                Err(RelayError::Broker(error)) => {
                    self.metrics.broker_errors.inc();
                    self.set_connected(false);
                    tracing::warn!(%error, "outbox batch abandoned; reconnecting");
                    active.close().await;
                }
                Err(RelayError::Database(error)) => {
                    publisher = Some(active);
                    let delay = db_delays.next().unwrap_or(self.broker.reconnect_max);
                    tracing::warn!(%error, retry_in = ?delay, "outbox batch failed on the database");
                    backoff::wait(delay, &shutdown).await;
                }
            }
        }
        if let Some(publisher) = publisher {
            publisher.close().await;
        }
        self.set_connected(false);
        tracing::info!("outbox relay stopped");
    }

    /// `current` if it is still connected, otherwise a new publisher (the stale one closed);
    /// `None` once shutdown is triggered while connecting.
    async fn usable_publisher(
        &self,
        current: Option<ConfirmedPublisher>,
        opened_before: &mut bool,
        shutdown: &Shutdown,
    ) -> Option<ConfirmedPublisher> {
        let publisher = match current {
            Some(publisher) if publisher.is_connected() => publisher,
            stale => {
                if let Some(stale) = stale {
                    stale.close().await;
                }
                self.set_connected(false);
                let publisher = self.open_publisher(shutdown).await?;
                if *opened_before {
                    self.metrics.connection.reconnected();
                }
                *opened_before = true;
                publisher
            }
        };
        self.set_connected(true);
        Some(publisher)
    }

    fn set_connected(&self, connected: bool) {
        self.metrics.connection.set_connected(connected);
    }

    async fn open_publisher(&self, shutdown: &Shutdown) -> Option<ConfirmedPublisher> {
        let mut delays = self.broker.reconnect_backoff();
        loop {
            match ConfirmedPublisher::open(&self.broker, &self.topology, shutdown).await {
                Ok(publisher) => {
                    tracing::info!("outbox relay connected to the broker");
                    return Some(publisher.with_confirm_timeout(self.config.confirm_timeout));
                }
                Err(BrokerError::ShuttingDown) => return None,
                Err(error) => {
                    let delay = delays.next().unwrap_or(self.broker.reconnect_max);
                    tracing::warn!(%error, retry_in = ?delay, "outbox relay cannot set up its channel");
                    if !backoff::wait(delay, shutdown).await {
                        return None;
                    }
                }
            }
        }
    }

    async fn cleanup_if_due(&self, last_cleanup: &mut Option<Instant>) {
        if last_cleanup.is_some_and(|at| at.elapsed() < self.config.cleanup_interval) {
            return;
        }
        *last_cleanup = Some(Instant::now());
        match store::delete_published_before(&self.pool, self.config.retention, 10_000).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "deleted old published outbox rows"),
            Err(error) => tracing::warn!(%error, "outbox cleanup failed"),
        }
    }
}

/// The series of `config.app_id`'s relay, created in `metrics` at 0 (its connection is
/// `<app_id>/relay`).
fn relay_metrics(metrics: &Metrics, config: &RelayConfig) -> RelayMetrics {
    metrics.register_relay(&config.app_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{OutboxMessage, enqueue};
    use crate::testing::{TestBroker, TestDatabase};

    /// The broker confirmed a batch, then the claim's connection died (a database restart):
    /// the rows must still end up marked, or they are published a second time.
    #[tokio::test]
    async fn a_confirmed_batch_is_marked_even_when_the_claims_connection_dies() {
        let db = TestDatabase::create().await;
        let broker = TestBroker::create().await;
        let pool = db.pool().await;
        crate::schema::migrate(&pool).await.unwrap();
        // Something must be bound for the messages to be routed (and so confirmed).
        let _probe = broker.probe("events", "#").await;
        let mut tx = pool.begin().await.unwrap();
        for n in 0..3 {
            let message = OutboxMessage::event("t.happened", format!("agg-{n}"), &n).unwrap();
            enqueue(&mut tx, &message).await.unwrap();
        }
        tx.commit().await.unwrap();
        let relay = OutboxRelay::new(
            pool.clone(),
            broker.settings("relay"),
            Topology::default(),
            RelayConfig::new("test"),
        );
        let publisher = ConfirmedPublisher::open(
            &broker.settings("relay"),
            &Topology::default(),
            &Shutdown::new(),
        )
        .await
        .unwrap();

        let mut batch = relay.claim_and_send(&publisher).await.unwrap().unwrap();
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut **batch.tx.as_mut().unwrap())
            .await
            .unwrap();
        let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(terminated);

        let report = relay.finish(batch).await.unwrap();
        assert_eq!(report.published, 3);
        let unpublished: i64 =
            sqlx::query_scalar("SELECT count(*) FROM msgkit_outbox WHERE published_at IS NULL")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(
            unpublished, 0,
            "confirmed rows left unmarked would be published again"
        );
        publisher.close().await;
        pool.close().await;
    }

    #[test]
    fn refused_rows_back_off_exponentially_up_to_the_cap() {
        let config = RelayConfig {
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(1),
            ..RelayConfig::new("test")
        };
        assert_eq!(config.retry_delay(0), Duration::from_millis(100));
        assert_eq!(config.retry_delay(1), Duration::from_millis(200));
        assert_eq!(config.retry_delay(3), Duration::from_millis(800));
        assert_eq!(config.retry_delay(4), Duration::from_secs(1));
        assert_eq!(config.retry_delay(1000), Duration::from_secs(1));
    }
}
