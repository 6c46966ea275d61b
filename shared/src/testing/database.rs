use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use super::{block_on_cleanup, is_leftover, unique_name};
use crate::config::{ConfigSource, Lookup};

const PREFIX: &str = "msgkit_test_";

/// A database created for one test and dropped when the value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    admin_url: String,
    options: PgConnectOptions,
}

impl TestDatabase {
    /// Create a fresh, empty database (and sweep test databases left by killed runs).
    pub async fn create() -> Self {
        let admin_url = ConfigSource::from_env().string(
            "TEST_DATABASE_ADMIN_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        );
        let mut admin = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!("cannot reach PostgreSQL at {admin_url} (is `make stack` up?): {e}")
        });
        sweep_leftovers(&mut admin).await;
        let name = unique_name(PREFIX);
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let _ = admin.close().await;
        let options: PgConnectOptions = admin_url.parse().expect("admin url parses");
        Self {
            options: options.database(&name),
            name,
            admin_url,
        }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A URL for the database, as a service would get it in `DATABASE_URL`.
    pub fn url(&self) -> String {
        self.options.to_url_lossy().to_string()
    }

    /// [`TestDatabase::url`] over TLS, the server verified against the CA in `ca_file`
    /// (`sslmode=verify-full`: the certificate must be the CA's and name the host).
    pub fn tls_url(&self, ca_file: &std::path::Path) -> String {
        // Built by hand: sqlx's own URL rendering writes `sslrootcert` as `file: <path>`.
        let url = self.url();
        let (base, query) = url.split_once('?').unwrap_or((&url, ""));
        let mut params: Vec<&str> = query
            .split('&')
            .filter(|param| !param.is_empty() && !param.starts_with("sslmode="))
            .collect();
        let root = format!("sslrootcert={}", ca_file.display());
        params.extend(["sslmode=verify-full", root.as_str()]);
        format!("{base}?{}", params.join("&"))
    }

    /// Connection options for the database.
    pub fn options(&self) -> PgConnectOptions {
        self.options.clone()
    }

    /// Database settings for a service using `schema` in this database (pool of 5).
    pub fn settings(&self, schema: &str) -> crate::database::DatabaseSettings {
        crate::database::DatabaseSettings {
            url: secrecy::SecretString::from(self.url()),
            schema: schema.to_owned(),
            max_connections: 5,
        }
    }

    /// A small pool on the database's `public` schema.
    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(5)
            .connect_with(self.options())
            .await
            .expect("connect to test database")
    }

    /// [`TestDatabase::pool`] with the kit's tables installed (outbox, inbox, state, timers).
    pub async fn kit_pool(&self) -> PgPool {
        let pool = self.pool().await;
        crate::schema::migrate(&pool)
            .await
            .expect("install the kit's tables");
        pool
    }
}

async fn sweep_leftovers(admin: &mut PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'msgkit_test_%'")
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    for name in names.into_iter().filter(|n| is_leftover(PREFIX, n)) {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
        )))
        .execute(&mut *admin)
        .await;
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin_url = self.admin_url.clone();
        block_on_cleanup(async move {
            match PgConnection::connect(&admin_url).await {
                Ok(mut admin) => {
                    // FORCE terminates the test's remaining connections (pools, listeners).
                    if let Err(error) = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
                    )))
                    .execute(&mut admin)
                    .await
                    {
                        eprintln!("could not drop test database {name}: {error}");
                    }
                }
                Err(error) => eprintln!("could not drop test database {name}: {error}"),
            }
        });
    }
}
