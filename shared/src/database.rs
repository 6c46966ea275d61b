//! Connecting a service to its database schema.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};

use crate::config::{ConfigError, Lookup, redact_url};

/// Default `DATABASE_URL`: the local stack's database.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/msgkit";

/// A connection idle for longer than this is checked with a round trip before it is handed
/// out; one used more recently is trusted.
const CHECK_IF_IDLE_FOR: Duration = Duration::from_secs(5);

/// The kit's pool settings. sqlx checks every connection with a round trip before handing it
/// out (`test_before_acquire`), which under load is one extra round trip per transaction for
/// a connection that was in use a millisecond ago. Here only connections idle for a while are
/// checked, which still catches the ones a database restart or an idle timeout closed; a
/// connection that breaks in between fails its first statement, and every caller in the kit
/// treats that as transient (consumers retry the message, the relay its batch, HTTP answers
/// 503).
pub fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for > CHECK_IF_IDLE_FOR {
                    sqlx::Connection::ping(connection).await?;
                }
                Ok(true)
            })
        })
}

/// Where a service keeps its state: a schema of its own (services may share a database, never
/// a schema), which holds its tables, its outbox and its inbox.
#[derive(Clone, Debug)]
pub struct DatabaseSettings {
    /// `DATABASE_URL`.
    pub url: SecretString,
    /// The service's schema.
    pub schema: String,
    /// Pool size.
    pub max_connections: u32,
}

/// The database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// The settings are unusable.
    #[error("invalid database settings: {0}")]
    Invalid(String),
    /// Connecting or creating the schema failed.
    #[error("cannot prepare PostgreSQL at {url} (schema {schema}): {source}")]
    Unavailable {
        /// The URL, password redacted.
        url: String,
        /// The schema.
        schema: String,
        /// The driver's error.
        source: sqlx::Error,
    },
}

impl DatabaseSettings {
    /// `DATABASE_URL` (default [`DEFAULT_DATABASE_URL`]), `<PREFIX>_DB_SCHEMA` (default
    /// `default_schema`), `DATABASE_MAX_CONNECTIONS` (default 10).
    pub fn from_config(
        config: &impl Lookup,
        prefix: &str,
        default_schema: &str,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            url: SecretString::from(config.string("DATABASE_URL", DEFAULT_DATABASE_URL)),
            schema: config.string(&format!("{prefix}_DB_SCHEMA"), default_schema),
            max_connections: config.parse("DATABASE_MAX_CONNECTIONS", 10)?,
        })
    }

    /// A pool whose connections work in the service's schema; the schema is created if
    /// missing.
    pub async fn connect(&self) -> Result<PgPool, DatabaseError> {
        let schema = &self.schema;
        let valid = schema
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
            && schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(DatabaseError::Invalid(format!(
                "schema name {schema:?} must be lowercase letters, digits and '_'"
            )));
        }
        let url = self.url.expose_secret();
        let unavailable = |source| DatabaseError::Unavailable {
            url: redact_url(url),
            schema: schema.clone(),
            source,
        };
        let options: PgConnectOptions = url.parse().map_err(unavailable)?;
        let options = options.options([("search_path", schema.as_str())]);
        let pool = pool_options(self.max_connections)
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        // The name was checked above, so splicing it in is safe.
        let created = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
        )))
        .execute(&pool)
        .await;
        match created {
            Ok(_) => {}
            // Two replicas starting together: `IF NOT EXISTS` is not safe against a concurrent
            // creation, and the loser gets a unique violation on the catalog (or a duplicate
            // schema). The schema exists either way.
            Err(sqlx::Error::Database(error))
                if matches!(error.code().as_deref(), Some("23505" | "42P06")) => {}
            Err(error) => return Err(unavailable(error)),
        }
        Ok(pool)
    }
}

/// A `LISTEN` on `channel` over a connection of its own, outside `pool` (same server, user and
/// search path): a listening connection must never go back to a pool. When sqlx's listener is
/// dropped or reconnects after a database restart it may hand its connection back still
/// listening and without its notification buffer, and the next query on it fails with
/// "unexpected message: NotificationResponse" (seen as HTTP 500s after a PostgreSQL restart).
/// The listener's own one-connection pool ends with it.
pub async fn listen_apart(pool: &PgPool, channel: &str) -> Result<PgListener, sqlx::Error> {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with((*pool.connect_options()).clone())
        .await?;
    let mut listener = PgListener::connect_with(&own).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

/// Whether `error` means the database cannot be reached right now (the connection failed or
/// was lost, the pool is exhausted, the server is shutting down or starting up), so that the
/// same request may work later: an HTTP API answers 503 with `Retry-After`, not 500.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Class 08: connection exceptions; 57P01-57P03: the server is shutting down or
        // starting up (a restart in progress).
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P0")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDatabase;

    #[tokio::test]
    async fn replicas_starting_together_all_get_their_schema() {
        let db = TestDatabase::create().await;
        let settings = db.settings("together");
        let connects = (0..8).map(|_| settings.connect());
        for pool in futures_util::future::join_all(connects).await {
            pool.expect("every replica connects").close().await;
        }
    }

    #[tokio::test]
    async fn a_listener_apart_takes_no_connection_of_the_pool_and_leaves_none_listening() {
        let db = TestDatabase::create().await;
        let mut settings = db.settings("apart");
        settings.max_connections = 1;
        let pool = settings.connect().await.unwrap();
        let mut listener = listen_apart(&pool, "apart_channel").await.unwrap();

        // The pool's only connection is still free, and it is not the one listening: a
        // notification to the channel reaches the listener, and the pool's next query does
        // not meet it.
        sqlx::query("SELECT pg_notify('apart_channel', 'one')")
            .execute(&pool)
            .await
            .unwrap();
        let heard = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("the notification arrives")
            .unwrap();
        assert_eq!(heard.payload(), "one");
        drop(listener);
        for n in 0..20 {
            sqlx::query("SELECT pg_notify('apart_channel', $1)")
                .bind(n.to_string())
                .execute(&pool)
                .await
                .unwrap();
        }
        let listening: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_listening_channels() AS c WHERE c = 'apart_channel'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(listening, 0, "the pool's connection does not listen");
        pool.close().await;
    }
}
