//! Connecting a service to its database schema.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::{ConfigError, env_or, env_parse, redact_url};

/// Default `DATABASE_URL`: the local stack's database.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/msgkit";

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
    pub fn from_env(prefix: &str, default_schema: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            url: SecretString::from(env_or("DATABASE_URL", DEFAULT_DATABASE_URL)),
            schema: env_or(&format!("{prefix}_DB_SCHEMA"), default_schema),
            max_connections: env_parse("DATABASE_MAX_CONNECTIONS", 10)?,
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
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        // The name was checked above, so splicing it in is safe.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
        )))
        .execute(&pool)
        .await
        .map_err(unavailable)?;
        Ok(pool)
    }
}
