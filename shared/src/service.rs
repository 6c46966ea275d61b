//! A kit service in one value: its database schema, outbox relay, consumers and HTTP endpoints
//! (its own routes plus `/healthz`, `/readyz`, `/metrics`), started together and stopped
//! together on one [`Shutdown`].
//!
//! ```no_run
//! # async fn example(handler: impl msgkit::consume::Handler) -> Result<(), Box<dyn std::error::Error>> {
//! use msgkit::service::{Service, ServiceSettings};
//! let settings = ServiceSettings::from_env("inventory", 8081, "inventory")?;
//! let migrations = sqlx::migrate::Migrator::DEFAULT; // sqlx::migrate!("./migrations") in a service
//! let service = Service::start(settings, msgkit::Topology::default(), migrations).await?
//!     .with_relay(msgkit::RelayConfig::from_env("inventory")?)
//!     .with_consumer(msgkit::consume::ConsumerConfig::from_env("inventory", "inventory")?, handler);
//! let shutdown = msgkit::Shutdown::new();
//! service.run_until_stopped(shutdown).await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use axum::Router;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;

use crate::broker::BrokerSettings;
use crate::config::{ConfigError, env_parse};
use crate::consume::{Consumer, ConsumerConfig, Handler, Routes};
use crate::database::{DatabaseError, DatabaseSettings};
use crate::ops::{self, OpsState};
use crate::outbox::{OutboxRelay, RelayConfig};
use crate::shutdown::Shutdown;
use crate::topology::Topology;

/// What every service needs to start.
#[derive(Clone, Debug)]
pub struct ServiceSettings {
    /// The service's name: `app_id` of what it publishes, its inbox consumer name, the prefix
    /// of its connection names.
    pub name: String,
    /// Where its HTTP endpoints listen.
    pub http_addr: SocketAddr,
    /// Its database schema.
    pub database: DatabaseSettings,
    /// The broker.
    pub broker: BrokerSettings,
}

impl ServiceSettings {
    /// `<NAME>_HTTP_ADDR` (default `127.0.0.1:<default_port>`), the database settings of
    /// [`DatabaseSettings::from_env`] and the broker settings of [`BrokerSettings::from_env`].
    pub fn from_env(
        name: &str,
        default_port: u16,
        default_schema: &str,
    ) -> Result<Self, ConfigError> {
        let prefix = name.to_ascii_uppercase();
        Ok(Self {
            name: name.to_owned(),
            http_addr: env_parse(
                &format!("{prefix}_HTTP_ADDR"),
                SocketAddr::from(([127, 0, 0, 1], default_port)),
            )?,
            database: DatabaseSettings::from_env(&prefix, default_schema)?,
            broker: BrokerSettings::from_env(name)?,
        })
    }
}

/// Why a service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The database.
    #[error(transparent)]
    Database(#[from] DatabaseError),
    /// The kit's or the service's tables could not be migrated.
    #[error("migrating {what}: {source}")]
    Migrate {
        /// Whose tables.
        what: String,
        /// Why.
        source: sqlx::migrate::MigrateError,
    },
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP address is taken or invalid.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A consumer's routes disagree with its queue's bindings.
    #[error(transparent)]
    Bindings(#[from] crate::bindings::BindingsMismatch),
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

type Task = Box<dyn FnOnce(Shutdown) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A service, connected and bound but not yet running.
pub struct Service {
    settings: ServiceSettings,
    topology: Topology,
    pool: PgPool,
    listener: TcpListener,
    routes: Router,
    ops: OpsState,
    tasks: Vec<Task>,
}

impl Service {
    /// Connect to the database (creating the schema), install the kit's tables and run the
    /// service's own `migrations` (tracked in `_<name>_migrations`), bind the HTTP address.
    /// The broker is not needed yet: relays and consumers connect in the background and keep
    /// retrying.
    pub async fn start(
        settings: ServiceSettings,
        topology: Topology,
        mut migrations: Migrator,
    ) -> Result<Self, ServiceError> {
        let pool = settings.database.connect().await?;
        crate::schema::migrate(&pool)
            .await
            .map_err(|source| ServiceError::Migrate {
                what: "the kit's tables (outbox, inbox)".to_owned(),
                source,
            })?;
        migrations.dangerous_set_table_name(format!("_{}_migrations", settings.name));
        migrations
            .run(&pool)
            .await
            .map_err(|source| ServiceError::Migrate {
                what: format!("the {} service's tables", settings.name),
                source,
            })?;
        let listener = TcpListener::bind(settings.http_addr)
            .await
            .map_err(|source| ServiceError::Bind {
                addr: settings.http_addr,
                source,
            })?;
        Ok(Self {
            ops: OpsState::new(pool.clone()),
            settings,
            topology,
            pool,
            listener,
            routes: Router::new(),
            tasks: Vec::new(),
        })
    }

    /// The service's database (its schema on the search path).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The settings it started with.
    pub fn settings(&self) -> &ServiceSettings {
        &self.settings
    }

    /// Where the HTTP endpoints listen (the real port when started on port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Publish the service's outbox.
    pub fn with_relay(mut self, config: RelayConfig) -> Self {
        let relay = OutboxRelay::new(
            self.pool.clone(),
            self.settings
                .broker
                .for_role(format!("{}/outbox-relay", self.settings.name)),
            self.topology.clone(),
            config,
        );
        self.ops = self
            .ops
            .with_relay(self.settings.name.clone(), relay.stats());
        self.tasks
            .push(Box::new(move |shutdown| Box::pin(relay.run(shutdown))));
        self
    }

    /// Consume the service's own queue (named after the service) with `routes`, configured by
    /// the consumer settings the service was started with. Refuses (before anything runs) when
    /// the routes disagree with the queue's bindings in the topology (see [`crate::bindings`]).
    pub fn consume<S: Send + Sync + 'static>(
        self,
        routes: Routes<S>,
    ) -> Result<Self, ServiceError> {
        let config = ConsumerConfig::new(&self.settings.name, &self.settings.name);
        self.consume_with(config, routes)
    }

    /// Consume `config.queue` with `routes`, checked against its bindings as
    /// [`Service::consume`] does.
    pub fn consume_with<S: Send + Sync + 'static>(
        self,
        config: ConsumerConfig,
        routes: Routes<S>,
    ) -> Result<Self, ServiceError> {
        let routed: Vec<&str> = routes.event_types().collect();
        crate::bindings::check(&self.topology, &config.queue, &routed, routes.duplicates())?;
        Ok(self.with_consumer(config, routes))
    }

    /// Consume `config.queue` with `handler`, a hand-written [`Handler`] (no bindings check:
    /// prefer [`Service::consume`] with routes).
    ///
    /// Each message in flight holds a pooled connection for its transaction; the relay and the
    /// HTTP routes need one too. So that handlers can never starve each other of connections,
    /// concurrency is capped at the pool size minus two (raise `DATABASE_MAX_CONNECTIONS` for
    /// more).
    pub fn with_consumer<H: Handler>(mut self, mut config: ConsumerConfig, handler: H) -> Self {
        let limit = (self.settings.database.max_connections as usize)
            .saturating_sub(2)
            .max(1);
        if config.concurrency > limit {
            tracing::warn!(
                queue = %config.queue,
                requested = config.concurrency,
                limit,
                "consumer concurrency capped by the database pool size"
            );
            config.concurrency = limit;
        }
        let queue = config.queue.clone();
        let consumer = Consumer::new(
            self.pool.clone(),
            self.settings.broker.clone(),
            self.topology.clone(),
            config,
            handler,
        );
        self.ops = self.ops.with_consumer(queue, consumer.stats());
        self.tasks
            .push(Box::new(move |shutdown| Box::pin(consumer.run(shutdown))));
        self
    }

    /// Serve these routes beside the operational ones.
    pub fn with_http(mut self, routes: Router) -> Self {
        self.routes = self.routes.merge(routes);
        self
    }

    /// Run until SIGTERM or Ctrl-C, then shut down gracefully (see
    /// [`Service::run_until_stopped`]).
    pub async fn run_until_signal(self) -> Result<(), ServiceError> {
        let shutdown = Shutdown::new();
        let on_signal = shutdown.clone();
        let name = self.settings.name.clone();
        // Owned by the runtime: it ends with the process, and only triggers the shutdown.
        tokio::spawn(async move {
            Shutdown::os_signal().await;
            tracing::info!(service = %name, "shutdown requested; finishing in-flight work");
            on_signal.trigger();
        });
        self.run_until_stopped(shutdown).await
    }

    /// Run everything until `shutdown`; then stop taking requests and deliveries, finish what
    /// is in flight, and return once every task has ended.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> Result<(), ServiceError> {
        // This service's own tasks, so that stopping it waits for them and nothing else.
        let shutdown = shutdown.child();
        for task in self.tasks {
            shutdown.spawn(task(shutdown.clone()));
        }
        let app = self
            .routes
            .merge(ops::router(self.ops))
            .route_layer(axum::middleware::from_fn(
                crate::telemetry::http::trace_request,
            ));
        let addr = self.listener.local_addr().map_err(ServiceError::Serve)?;
        tracing::info!(service = %self.settings.name, %addr, "listening");
        let stop = shutdown.clone();
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { stop.triggered().await })
            .await;
        // The server can also end on its own: stop the other tasks either way.
        shutdown.trigger();
        shutdown.wait_for_tasks().await;
        self.pool.close().await;
        tracing::info!(service = %self.settings.name, "stopped");
        served.map_err(ServiceError::Serve)
    }
}
