//! Building the service from its settings. `main` and the tests start the very same
//! application; tests bind port 0 and read the real address.

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use msgkit::{OutboxRelay, Shutdown, config::redact_url};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::net::TcpListener;

use crate::configuration::{DatabaseSettings, Settings};
use crate::routes::{self, AppState};

/// The service, built and bound but not yet serving.
pub struct Application {
    listener: TcpListener,
    router: Router,
    relay: OutboxRelay,
    pool: PgPool,
}

impl Application {
    /// Connect to the database, create the schema and run migrations (the kit's outbox and the
    /// service's own), bind the HTTP listener. The broker is not needed to start: the relay
    /// connects (and keeps reconnecting) in the background.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = connect_database(&settings.database).await?;
        msgkit::schema::migrate(&pool)
            .await
            .context("installing the kit's tables (outbox, inbox)")?;
        let mut migrator = sqlx::migrate!("./migrations");
        migrator.dangerous_set_table_name("_order_migrations");
        migrator
            .run(&pool)
            .await
            .context("running the order service's migrations")?;

        let relay = OutboxRelay::new(
            pool.clone(),
            settings.broker.clone(),
            contracts::topology(),
            settings.relay.clone(),
        );
        let router = routes::router(AppState {
            pool: pool.clone(),
            relay: relay.stats(),
        });
        let listener = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("binding the HTTP API to {}", settings.http_addr))?;
        Ok(Self {
            listener,
            router,
            relay,
            pool,
        })
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// The service's database pool (its schema on the search path).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Serve HTTP and run the outbox relay until `shutdown` is triggered; then stop taking
    /// requests, finish the ones in flight, let the relay finish its batch, and return.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        shutdown.spawn(self.relay.run(shutdown.child()));
        let addr = self.listener.local_addr()?;
        tracing::info!(%addr, "order API listening");
        let stop = shutdown.clone();
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move { stop.triggered().await })
            .await;
        // The server can also end on its own (an accept error): stop the relay either way.
        shutdown.trigger();
        shutdown.wait_for_tasks().await;
        self.pool.close().await;
        served.context("serving HTTP")
    }
}

/// A pool whose connections use the service's schema; the schema is created if missing.
pub async fn connect_database(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    let schema = &settings.schema;
    anyhow::ensure!(
        !schema.is_empty()
            && schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !schema.as_bytes()[0].is_ascii_digit(),
        "database schema name {schema:?} must be lowercase letters, digits and '_'"
    );
    let url = settings.url.expose_secret();
    let options: PgConnectOptions = url
        .parse()
        .with_context(|| format!("parsing DATABASE_URL {}", redact_url(url)))?;
    let options = options.options([("search_path", schema.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect_with(options)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {}", redact_url(url)))?;
    // Identifier checked above, so it is safe to splice in.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
    )))
    .execute(&pool)
    .await
    .with_context(|| format!("creating schema {schema}"))?;
    Ok(pool)
}
