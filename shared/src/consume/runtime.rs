//! The consumer: what a service builds and runs. It assembles the parts (sessions, the
//! pipeline each delivery goes through, the inbox sweep, the timer firing) and runs them until
//! shutdown.

use std::sync::Arc;

use sqlx::PgPool;
use tracing::Instrument;

use super::config::ConsumerConfig;
use super::gaps::skip_gaps;
use super::handler::{ConsumerSetup, Handler};
use super::inbox_sweep::sweep;
use super::outcome::Outcomes;
use super::pipeline::Pipeline;
use super::session::Sessions;
use super::stats::ConsumerStats;
use super::timer_firing::fire_timers;
use crate::broker::BrokerSettings;
use crate::metrics::{ConsumerSeries, Metrics, QueueMetrics};
use crate::outbox::DispatchSlot;
use crate::shutdown::Shutdown;
use crate::topology::Topology;

/// Consumes one work queue with a [`Handler`].
pub struct Consumer<H> {
    pool: PgPool,
    broker: BrokerSettings,
    topology: Topology,
    config: ConsumerConfig,
    handler: H,
    /// Its series; with timer series when the handler handles timers, so that this consumer
    /// fires them.
    metrics: QueueMetrics,
    /// Its service's direct dispatch, once the service runs a relay.
    dispatch: DispatchSlot,
}

impl<H: Handler> Consumer<H> {
    /// A consumer of `config.queue` in the database behind `pool` (inbox and outbox in its
    /// current schema), declaring `topology` on every connection.
    pub fn new(
        pool: PgPool,
        broker: BrokerSettings,
        topology: Topology,
        config: ConsumerConfig,
        handler: H,
    ) -> Self {
        Self {
            metrics: queue_metrics(&Metrics::new(), &config, &handler),
            dispatch: DispatchSlot::default(),
            pool,
            broker,
            topology,
            config,
            handler,
        }
    }

    /// Count into `metrics` (its service's registry) instead of a registry of its own.
    pub(crate) fn with_metrics(mut self, metrics: &Metrics) -> Self {
        self.metrics = queue_metrics(metrics, &self.config, &self.handler);
        self
    }

    /// Publish follow-up events through `dispatch` once it is set (its service's relay).
    pub(crate) fn with_dispatch(mut self, dispatch: DispatchSlot) -> Self {
        self.dispatch = dispatch;
        self
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<ConsumerStats> {
        Arc::new(ConsumerStats::new(self.metrics.clone()))
    }

    /// Consume until `shutdown`: then stop taking deliveries, finish (and ack) the ones in
    /// flight, and close. Connection or channel loss, a broker restart or a stream that goes
    /// quiet on a dead connection all lead to a new session after a backoff; unacked
    /// deliveries are redelivered by the broker meanwhile.
    pub async fn run(self, shutdown: Shutdown) {
        let span = tracing::info_span!(
            target: crate::telemetry::COMPONENT,
            "consumer",
            queue = %self.config.queue,
        );
        self.consume(shutdown).instrument(span).await;
    }

    async fn consume(self, shutdown: Shutdown) {
        let Self {
            pool,
            broker,
            topology,
            config,
            mut handler,
            metrics,
            dispatch,
        } = self;
        // Now that its registry is final (a service swaps in its own).
        handler.configure(&ConsumerSetup {
            config: &config,
            metrics: &metrics,
        });
        let parts = Parts {
            pool,
            broker,
            topology,
            config,
            outcomes: Outcomes { metrics },
            dispatch,
        };
        // Monomorphised twice, so that a consumer without faults runs its handler bare.
        match parts.config.faults.around(handler) {
            Ok(faulty) => parts.run(faulty, &shutdown).await,
            Err(handler) => parts.run(handler, &shutdown).await,
        }
        tracing::info!("consumer stopped");
    }
}

/// A consumer taken apart, waiting for its handler (wrapped in faults or not).
struct Parts {
    pool: PgPool,
    broker: BrokerSettings,
    topology: Topology,
    config: ConsumerConfig,
    outcomes: Outcomes,
    dispatch: DispatchSlot,
}

impl Parts {
    /// Run sessions through a pipeline of `handler`, the sweep of what the consumer keeps and
    /// the firing of its timers, until `shutdown`.
    async fn run<G: Handler>(self, handler: G, shutdown: &Shutdown) {
        let Self {
            pool,
            broker,
            topology,
            config,
            outcomes,
            dispatch,
        } = self;
        let timer_metrics = outcomes.metrics.timers.clone();
        let registry = outcomes.metrics.registry.clone();
        let key_order = handler.key_order();
        let connection = outcomes.metrics.connection.clone();
        let pipeline = Pipeline::new(pool.clone(), broker.clone(), &config, handler, outcomes)
            .with_dispatch(dispatch);
        let sessions = Sessions {
            broker,
            topology,
            config,
            connection,
            pipeline,
        };
        // The consumer that writes inbox rows and state entries also retires them.
        let sweep = sweep(&pool, &sessions.config, shutdown);
        // Firing sits beside consuming, not behind it: a quiet queue still fires its timers.
        let firing = async {
            if let Some(timer_metrics) = &timer_metrics {
                fire_timers(&pool, &sessions.config, timer_metrics, shutdown).await;
            }
        };
        let gaps = async {
            if key_order {
                skip_gaps(&pool, &sessions.config, &registry, shutdown).await;
            }
        };
        tokio::join!(sessions.run(shutdown), sweep, firing, gaps);
    }
}

/// The series of `config`'s consumer running `handler`, created in `metrics` at 0.
fn queue_metrics(
    metrics: &Metrics,
    config: &ConsumerConfig,
    handler: &impl Handler,
) -> QueueMetrics {
    metrics.register_consumer(&ConsumerSeries {
        queue: &config.queue,
        consumer: &config.name,
        late_types: handler.late_event_types(),
        timers: handler.handles_timers(),
        key_order: handler.key_order(),
    })
}
