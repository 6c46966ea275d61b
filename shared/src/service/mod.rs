//! A kit service in one value: its database schema, outbox relay, consumers and HTTP endpoints
//! (its own routes plus `/healthz`, `/readyz`, `/metrics`), started together and stopped
//! together on one [`Shutdown`].
//!
//! ```no_run
//! # async fn example(routes: msgkit::consume::Routes) -> Result<(), msgkit::service::ServiceError> {
//! use msgkit::service::{Service, ServiceSettings};
//! let settings = ServiceSettings::load("inventory", 8081, "inventory")?;
//! let migrations = sqlx::migrate::Migrator::DEFAULT; // sqlx::migrate!("./migrations") in a service
//! let service = Service::start(settings, msgkit::Topology::default(), migrations).await?
//!     .with_relay()
//!     .consume(routes)?;
//! service.run_until_signal().await
//! # }
//! ```
//!
//! A service's `main` is [`run`]: telemetry, settings, the service's own build function, and
//! a graceful stop on SIGTERM or Ctrl-C.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use axum::Router;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;

use crate::consume::{Consumer, ConsumerConfig, Handler, Routes};
use crate::metrics::Metrics;
use crate::ops::{self, OpsState};
use crate::outbox::{DispatchSlot, OutboxRelay};
use crate::projection::{Projection, ProjectionConfig, ProjectionRunner};
use crate::shutdown::Shutdown;
use crate::topology::Topology;

mod admission;
mod error;
mod settings;

pub use error::ServiceError;
pub use settings::ServiceSettings;

/// Run a service as its `main` does: telemetry (logs, and OTLP traces when configured), the
/// settings read once ([`ServiceSettings::load`] with these defaults), `build`, then run until
/// SIGTERM or Ctrl-C.
///
/// ```no_run
/// # use msgkit::service::{Service, ServiceError, ServiceSettings};
/// # async fn build(settings: ServiceSettings) -> Result<Service, ServiceError> {
/// #     Service::start(settings, msgkit::Topology::default(), sqlx::migrate::Migrator::DEFAULT).await
/// # }
/// #[tokio::main]
/// async fn main() -> Result<(), msgkit::service::ServiceError> {
///     msgkit::service::run("notify", 8083, "notify", build).await
/// }
/// ```
pub async fn run<F, Fut>(
    name: &str,
    default_port: u16,
    default_schema: &str,
    build: F,
) -> Result<(), ServiceError>
where
    F: FnOnce(ServiceSettings) -> Fut,
    Fut: Future<Output = Result<Service, ServiceError>>,
{
    let telemetry = crate::telemetry::init(name);
    let settings = ServiceSettings::load(name, default_port, default_schema)?;
    let result = match build(settings).await {
        Ok(service) => service.run_until_signal().await,
        Err(error) => Err(error),
    };
    if let Err(error) = &result {
        tracing::error!(service = name, %error, "service failed");
    }
    // Only now, with every component stopped (`run_until_signal` returns once every task it
    // started has ended, and each waits for its own), is every span ended: export them before
    // the process exits.
    drop(telemetry);
    result
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
    /// The service's registry: what its `/metrics` serves, what its relay and consumers count
    /// into.
    metrics: Metrics,
    tasks: Vec<Task>,
    consumers: Vec<ConsumerConfig>,
    relay: bool,
    /// Queues whose consumers handle timers: they need the relay.
    timer_queues: Vec<String>,
    /// Queues whose consumers apply keys in order (they need the relay too).
    key_order_queues: Vec<String>,
    /// Triggered when the service starts to stop: what [`Service::shutdown_signal`] hands out.
    stopping: Shutdown,
    /// Direct dispatch of the consumers' follow-up events, set by the relay. The dispatcher
    /// stops once every holder of it has (this one is dropped as the service runs).
    dispatch: DispatchSlot,
}

impl Service {
    /// Connect to the database (creating the schema), install the kit's tables and run the
    /// service's own `migrations` (tracked in `_<name>_migrations`), bind the HTTP address.
    /// With the archive on in the settings, `topology` gets it (see
    /// [`crate::topology::Archive`]).
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
        let metrics = Metrics::new();
        let topology = match (&settings.archive, topology.archive()) {
            (Some(archive), None) => topology.with_archive(archive.clone()),
            _ => topology,
        };
        Ok(Self {
            ops: OpsState::new(pool.clone(), metrics.clone()),
            metrics,
            settings,
            topology,
            pool,
            listener,
            routes: Router::new(),
            tasks: Vec::new(),
            consumers: Vec::new(),
            relay: false,
            timer_queues: Vec::new(),
            key_order_queues: Vec::new(),
            stopping: Shutdown::new(),
            dispatch: DispatchSlot::default(),
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

    /// The topology as a component consuming `queues` declares it: all of it, or with
    /// `TOPOLOGY_DECLARE=own` the exchange and those queues only.
    fn declared_by(&self, queues: &[&str]) -> Topology {
        if self.settings.declare_own_only {
            self.topology.clone().declaring_only(queues)
        } else {
            self.topology.clone()
        }
    }

    /// Publish the service's outbox, with the relay settings it was started with.
    pub fn with_relay(mut self) -> Self {
        let relay = OutboxRelay::new(
            self.pool.clone(),
            self.settings
                .broker
                .for_role(format!("{}/outbox-relay", self.settings.name)),
            self.declared_by(&[]),
            self.settings.relay.clone(),
        )
        .with_metrics(&self.metrics);
        self.ops = self
            .ops
            .with_relay(self.settings.name.clone(), relay.stats());
        if self.settings.relay.direct_dispatch {
            let (dispatch, dispatcher) = relay.dispatcher();
            if self.dispatch.set(dispatch).is_ok() {
                self.tasks
                    .push(Box::new(move |shutdown| Box::pin(dispatcher.run(shutdown))));
            }
        }
        self.tasks
            .push(Box::new(move |shutdown| Box::pin(relay.run(shutdown))));
        self.relay = true;
        self
    }

    /// Consume the service's own queue (named after the service) with `routes`, with the
    /// kit's consumer defaults overridden by the settings (see [`ServiceSettings::consumer`]).
    /// Refuses, before anything runs, when the routes disagree with the queue's bindings in the
    /// topology (see [`crate::bindings`]).
    pub fn consume<S: Send + Sync + 'static>(
        self,
        routes: Routes<S>,
    ) -> Result<Self, ServiceError> {
        let defaults = ConsumerConfig::new(&self.settings.name, &self.settings.name);
        self.consume_with(defaults, routes)
    }

    /// Consume `defaults.queue` with `routes`: `defaults` are the service's own consumer
    /// settings (a batch size, a retry policy that suits its handler), which the settings
    /// override only where they set something. Checked against the bindings as
    /// [`Service::consume`] is.
    pub fn consume_with<S: Send + Sync + 'static>(
        self,
        defaults: ConsumerConfig,
        routes: Routes<S>,
    ) -> Result<Self, ServiceError> {
        let routed: Vec<&str> = routes.event_types().collect();
        let duplicates: Vec<&str> = routes.duplicates().iter().map(String::as_str).collect();
        crate::bindings::check(&self.topology, &defaults.queue, &routed, &duplicates)?;
        self.with_consumer(defaults, routes)
    }

    /// Consume `defaults.queue` with a hand-written [`Handler`], configured as
    /// [`Service::consume_with`] is, without the bindings check: prefer routes.
    ///
    /// Each message in flight holds a pooled connection for its transaction; the relay and the
    /// HTTP routes need one too. So that handlers can never starve each other of connections,
    /// concurrency is capped at the pool size minus two (raise `DATABASE_MAX_CONNECTIONS` for
    /// more).
    pub fn with_consumer<H: Handler>(
        mut self,
        defaults: ConsumerConfig,
        handler: H,
    ) -> Result<Self, ServiceError> {
        let mut config = self.settings.consumer(defaults)?;
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
        let (queue, name) = (config.queue.clone(), config.name.clone());
        if handler.handles_timers() {
            self.timer_queues.push(queue.clone());
        }
        if handler.key_order() {
            if !config.inbox {
                return Err(ServiceError::KeyOrderNeedsInboxAndRelay { queue });
            }
            self.key_order_queues.push(queue.clone());
        }
        self.consumers.push(config.clone());
        let declared = self.declared_by(&[&queue]);
        let consumer = Consumer::new(
            self.pool.clone(),
            self.settings.broker.clone(),
            declared,
            config,
            handler,
        )
        .with_metrics(&self.metrics)
        .with_dispatch(self.dispatch.clone());
        self.ops = self.ops.with_consumer(queue, name, consumer.stats());
        self.tasks
            .push(Box::new(move |shutdown| Box::pin(consumer.run(shutdown))));
        Ok(self)
    }

    /// The consumers' settings as they will run (defaults, then settings, then the pool cap).
    pub fn consumers(&self) -> &[ConsumerConfig] {
        &self.consumers
    }

    /// Run `projection` of the event archive (see [`crate::projection`]): its tables'
    /// migrations now, then, with the service, one replica applying it at a time, with the
    /// settings' `PROJECTION_*` over the defaults. Refuses when the archive is off.
    pub async fn project(mut self, projection: Projection) -> Result<Self, ServiceError> {
        let name = projection.name().to_owned();
        if !crate::projection::valid_name(&name) {
            return Err(ServiceError::ProjectionName(name));
        }
        let Some(archive) = self.topology.archive().cloned() else {
            return Err(ServiceError::ProjectionWithoutArchive { name });
        };
        projection
            .migrator()
            .run(&self.pool)
            .await
            .map_err(|source| ServiceError::Migrate {
                what: format!("the tables of projection {name}"),
                source,
            })?;
        let config = ProjectionConfig::from_config(&self.settings.source)?;
        let runner = ProjectionRunner::new(
            projection,
            self.pool.clone(),
            self.settings
                .broker
                .for_role(format!("{}/projection-{name}", self.settings.name)),
            archive,
            config,
            self.metrics.register_projection(&name),
        );
        self.ops = self.ops.with_projection(runner.stats());
        self.tasks
            .push(Box::new(move |shutdown| Box::pin(runner.run(shutdown))));
        Ok(self)
    }

    /// Serve the service's own metrics on `/metrics`, after the kit's. Register them under the
    /// service's name as prefix (`Registry::with_prefix("risk")`) so that they cannot collide
    /// with the kit's `msgkit_*` families; [`crate::metrics`] re-exports the client library so
    /// that the service registers with the very version the kit encodes.
    pub fn with_metrics(
        mut self,
        registry: crate::metrics::prometheus_client::registry::Registry,
    ) -> Self {
        self.ops = self.ops.with_registry(registry);
        self
    }

    /// Run a background task of the service's own (e.g. a `LISTEN` connection feeding its HTTP
    /// streams), started with the service and owned by it: `task` gets the service's
    /// [`Shutdown`], must return soon after it triggers, and the service's stop waits for it.
    /// `name` names it in the log line when it ends.
    pub fn with_task<F, Fut>(mut self, name: &str, task: F) -> Self
    where
        F: FnOnce(Shutdown) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let name = name.to_owned();
        self.tasks.push(Box::new(move |shutdown| {
            Box::pin(async move {
                task(shutdown).await;
                tracing::debug!(task = %name, "service task ended");
            })
        }));
        self
    }

    /// A signal that triggers when the service starts to stop, for HTTP handlers whose
    /// responses do not end on their own (a Server-Sent Events stream): the server's graceful
    /// shutdown waits for every open connection, so such a response must end on this signal
    /// or it would hold the stop until the process is killed. Only [`Shutdown::triggered`] and
    /// [`Shutdown::is_triggered`] are meant for it: the service does not wait for tasks spawned
    /// on it.
    pub fn shutdown_signal(&self) -> Shutdown {
        self.stopping.clone()
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
    /// is in flight, and return once every task has ended. Refuses to start a consumer that
    /// handles timers in a service without an outbox relay.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> Result<(), ServiceError> {
        if let (false, Some(queue)) = (self.relay, self.key_order_queues.first()) {
            return Err(ServiceError::KeyOrderNeedsInboxAndRelay {
                queue: queue.clone(),
            });
        }
        if let (false, Some(queue)) = (self.relay, self.timer_queues.first()) {
            return Err(ServiceError::TimersWithoutRelay {
                queue: queue.clone(),
            });
        }
        // This service's own tasks, so that stopping it waits for them and nothing else.
        let shutdown = shutdown.child();
        for task in self.tasks {
            shutdown.spawn(task(shutdown.clone()));
        }
        // The consumers hold the dispatch now: the dispatcher ends after the last of them.
        drop(self.dispatch);
        let app = self
            .routes
            .merge(ops::router(self.ops))
            .route_layer(axum::middleware::from_fn(
                crate::telemetry::http::trace_request,
            ));
        let addr = self.listener.local_addr().map_err(ServiceError::Serve)?;
        tracing::info!(service = %self.settings.name, %addr, "listening");
        let stop = shutdown.clone();
        let stopping = self.stopping.clone();
        // The peer's address reaches handlers and middleware (a per-client rate limit).
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                stop.triggered().await;
                // Open streams end now, so that the graceful shutdown's wait for connections
                // can finish.
                stopping.trigger();
            })
            .await;
        // The server can also end on its own: stop the other tasks either way.
        self.stopping.trigger();
        shutdown.trigger();
        shutdown.wait_for_tasks().await;
        self.pool.close().await;
        tracing::info!(service = %self.settings.name, "stopped");
        served.map_err(ServiceError::Serve)
    }
}
