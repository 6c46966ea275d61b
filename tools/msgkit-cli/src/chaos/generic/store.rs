//! What a service's schema holds after the run: inbox rows, unpublished outbox rows, timers.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{GenericError, ServiceStore};

/// An outbox row not (yet) published.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct PendingOutbox {
    pub(super) id: uuid::Uuid,
    pub(super) message_type: String,
    pub(super) routing_key: String,
    pub(super) attempts: i32,
    pub(super) last_error: Option<String>,
}

/// A timer still waiting in `msgkit_timers` past its instant.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct OverdueTimer {
    pub(super) consumer: String,
    pub(super) name: String,
    pub(super) key: String,
    pub(super) due_at: DateTime<Utc>,
}

/// One timer instance (type, key, due instant) written to the outbox more than once.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct TwiceFired {
    pub(super) message_type: String,
    pub(super) key: String,
    pub(super) due_at_ms: Option<String>,
    pub(super) firings: i64,
}

/// A connection to one service's schema.
pub(super) struct Store {
    schema: String,
    pool: PgPool,
}

impl Store {
    pub(super) async fn open(store: &ServiceStore) -> Result<Self, GenericError> {
        let schema = store.schema.clone().unwrap_or_else(|| "default".to_owned());
        let failed = |source| GenericError::Database {
            what: "the connection",
            schema: schema.clone(),
            source,
        };
        let mut options: PgConnectOptions = store.database_url.parse().map_err(failed)?;
        if let Some(search_path) = &store.schema {
            options = options.options([("search_path", search_path.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(failed)?;
        Ok(Self { schema, pool })
    }

    fn failed(&self, what: &'static str) -> impl FnOnce(sqlx::Error) -> GenericError + '_ {
        move |source| GenericError::Database {
            what,
            schema: self.schema.clone(),
            source,
        }
    }

    /// Which of `ids` `consumer` has an inbox row for.
    pub(super) async fn handled(
        &self,
        consumer: &str,
        ids: &[String],
    ) -> Result<BTreeSet<String>, GenericError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT message_id FROM msgkit_inbox WHERE consumer = $1 AND message_id = ANY($2)",
        )
        .bind(consumer)
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(self.failed("the inbox"))?;
        Ok(rows.into_iter().collect())
    }

    /// Every unpublished outbox row.
    pub(super) async fn pending_outbox(&self) -> Result<Vec<PendingOutbox>, GenericError> {
        sqlx::query_as(
            "SELECT id, message_type, routing_key, attempts, last_error FROM msgkit_outbox \
             WHERE published_at IS NULL ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.failed("the outbox"))
    }

    /// Timers due more than `grace` ago and not fired (fired timers leave the table).
    pub(super) async fn overdue_timers(
        &self,
        grace: Duration,
    ) -> Result<Vec<OverdueTimer>, GenericError> {
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        sqlx::query_as(
            "SELECT consumer, name, key, due_at FROM msgkit_timers \
             WHERE due_at < now() - $1 * interval '1 millisecond' ORDER BY due_at",
        )
        .bind(grace_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(self.failed("the timers"))
    }

    /// Timer instances fired more than once: a firing writes one outbox row carrying the
    /// timer's name (in the type), key (the aggregate) and due instant (a header), and deletes
    /// the timer in the same transaction, so two rows for one instance mean it fired twice.
    /// Published rows are cleaned up after a retention period, so this sees the recent ones.
    pub(super) async fn timers_fired_twice(&self) -> Result<Vec<TwiceFired>, GenericError> {
        sqlx::query_as(
            "SELECT message_type, aggregate_id AS key, headers->>$2 AS due_at_ms, \
                    count(*) AS firings \
             FROM msgkit_outbox WHERE message_type LIKE $1 || '%' \
             GROUP BY message_type, aggregate_id, headers->>$2 HAVING count(*) > 1",
        )
        .bind(msgkit::timer::MESSAGE_TYPE_PREFIX)
        .bind(msgkit::timer::DUE_AT_HEADER)
        .fetch_all(&self.pool)
        .await
        .map_err(self.failed("the fired timers"))
    }

    pub(super) async fn close(self) {
        self.pool.close().await;
    }
}
