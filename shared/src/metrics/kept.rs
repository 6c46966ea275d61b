//! What a service's consumers keep in its schema, read from the database at scrape time (like
//! the outbox backlog), so that the figures are right even while a consumer is down: keyed-state
//! entries, pending timers with those already overdue, and messages parked for their key's
//! turn. Also the count of keys that skipped a gap in their sequence.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sqlx::PgPool;

use super::{Metrics, One};

/// The families of what consumers keep.
pub(super) struct KeptFamilies {
    state_entries: Family<One, Gauge>,
    timers_pending: Family<One, Gauge>,
    timers_pending_overdue: Family<One, Gauge>,
    key_order_parked: Family<One, Gauge>,
    key_order_gaps: Family<One, Counter>,
}

impl KeptFamilies {
    pub(super) fn new() -> Self {
        Self {
            state_entries: Family::default(),
            timers_pending: Family::default(),
            timers_pending_overdue: Family::default(),
            key_order_parked: Family::default(),
            key_order_gaps: Family::default(),
        }
    }

    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "state_entries",
            "Keyed-state entries a consumer keeps (expired ones until the sweep), by consumer",
            self.state_entries.clone(),
        );
        registry.register(
            "timers_pending",
            "Timers set and not yet fired, by consumer",
            self.timers_pending.clone(),
        );
        registry.register(
            "timers_pending_overdue",
            "Pending timers more than a second past their instant (their consumer is down or behind), by consumer",
            self.timers_pending_overdue.clone(),
        );
        registry.register(
            "key_order_parked",
            "Messages parked until an earlier message of their key is applied or dead-lettered, by consumer",
            self.key_order_parked.clone(),
        );
        registry.register(
            "key_order_gaps",
            "Keys that went on without an expected message that never came (gap timeout), by consumer",
            self.key_order_gaps.clone(),
        );
    }
}

impl KeptFamilies {
    /// Create ordered `consumer`'s gap counter at 0. The gauges are not created here: they are
    /// read at scrape time, and a 0 before the first read would claim an empty schema.
    pub(super) fn register_gaps(&self, consumer: &str) {
        drop(
            self.key_order_gaps
                .get_or_create(&[("consumer", consumer.to_owned())]),
        );
    }
}

impl Metrics {
    /// Read what the consumers of the service behind `pool` keep into the gauges. Consumers
    /// that keep nothing any more read 0 rather than their last figure.
    pub(crate) async fn read_kept(&self, pool: &PgPool, consumers: &[String]) {
        let read = async {
            let state: Vec<(String, i64)> =
                sqlx::query_as("SELECT consumer, count(*) FROM msgkit_state GROUP BY consumer")
                    .fetch_all(pool)
                    .await?;
            let timers: Vec<(String, i64, i64)> = sqlx::query_as(
                "SELECT consumer, count(*), \
                        count(*) FILTER (WHERE due_at < now() - interval '1 second') \
                 FROM msgkit_timers GROUP BY consumer",
            )
            .fetch_all(pool)
            .await?;
            let parked: Vec<(String, i64)> = sqlx::query_as(
                "SELECT consumer, count(*) FROM msgkit_key_parked GROUP BY consumer",
            )
            .fetch_all(pool)
            .await?;
            Ok::<_, sqlx::Error>((state, timers, parked))
        };
        let (state, timers, parked) = match tokio::time::timeout(Duration::from_secs(2), read).await
        {
            Ok(Ok(kept)) => kept,
            Ok(Err(error)) => return tracing::warn!(%error, "cannot read what consumers keep"),
            Err(_) => return tracing::warn!("reading what consumers keep timed out"),
        };
        let kept = &self.0.kept;
        for consumer in consumers {
            let label = [("consumer", consumer.clone())];
            let entries = state
                .iter()
                .find(|(c, _)| c == consumer)
                .map_or(0, |(_, n)| *n);
            let (pending, overdue) = timers
                .iter()
                .find(|(c, _, _)| c == consumer)
                .map_or((0, 0), |(_, p, o)| (*p, *o));
            let parked = parked
                .iter()
                .find(|(c, _)| c == consumer)
                .map_or(0, |(_, n)| *n);
            kept.state_entries.get_or_create(&label).set(entries);
            kept.key_order_parked.get_or_create(&label).set(parked);
            kept.timers_pending.get_or_create(&label).set(pending);
            kept.timers_pending_overdue
                .get_or_create(&label)
                .set(overdue);
        }
    }

    /// `consumer`'s keys skipped `gaps` missing messages.
    pub(crate) fn key_order_gaps(&self, consumer: &str, gaps: u64) {
        self.0
            .kept
            .key_order_gaps
            .get_or_create(&[("consumer", consumer.to_owned())])
            .inc_by(gaps);
    }
}
