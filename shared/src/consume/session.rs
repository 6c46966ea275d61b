//! Sessions: one connection's worth of consuming at a time, a new one after a backoff when it
//! ends, until shutdown.
//!
//! A session consumes on its own connection and publishes retries and dead letters on another
//! (a blocked publishing connection must not stop acks). It ends on shutdown, when a delivery
//! cannot be settled on its connection, when acks cannot be sent, or when a connection is
//! lost; unacked deliveries are then redelivered by the broker.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio_util::sync::CancellationToken;

use super::acks::Acks;
use super::config::ConsumerConfig;
use super::handler::Handler;
use super::outcome::Unsettled;
use super::pipeline::Pipeline;
use crate::backoff;
use crate::broker::{BrokerError, BrokerSettings};
use crate::metrics::ComponentMetrics;
use crate::publish::ConfirmedPublisher;
use crate::shutdown::Shutdown;
use crate::topology::Topology;

/// How often the connections are checked: a consumer stream can stay silent after the broker
/// died without telling it.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// A session that lasted this long resets the reconnect backoff: its end is a new incident.
const STABLE_SESSION: Duration = Duration::from_secs(30);

/// Opens sessions for one consumer, one after another.
pub(super) struct Sessions<H> {
    pub(super) broker: BrokerSettings,
    pub(super) topology: Topology,
    pub(super) config: ConsumerConfig,
    pub(super) connection: ComponentMetrics,
    pub(super) pipeline: Pipeline<H>,
}

/// One connection's worth of consuming.
struct Session {
    connection: Connection,
    channel: Channel,
    publisher: ConfirmedPublisher,
    consumer: lapin::Consumer,
    acking: Acking,
}

impl<H: Handler> Sessions<H> {
    /// Consume session after session until `shutdown`.
    pub(super) async fn run(&self, shutdown: &Shutdown) {
        let mut delays = self.broker.reconnect_backoff();
        let mut sessions = 0u64;
        while !shutdown.is_triggered() {
            let Some(session) = self.open(shutdown).await else {
                break;
            };
            if sessions > 0 {
                self.connection.reconnected();
            }
            sessions += 1;
            self.connection.set_connected(true);
            tracing::info!(
                prefetch = self.config.prefetch,
                concurrency = self.config.concurrency,
                "consuming"
            );
            let started = Instant::now();
            session
                .consume(&self.pipeline, self.config.concurrency, shutdown)
                .await;
            self.connection.set_connected(false);
            if shutdown.is_triggered() {
                break;
            }
            if started.elapsed() > STABLE_SESSION {
                delays = self.broker.reconnect_backoff();
            }
            let delay = delays.next().unwrap_or(self.broker.reconnect_max);
            tracing::warn!(retry_in = ?delay, "consumer session ended; reconnecting");
            if !backoff::wait(delay, shutdown).await {
                break;
            }
        }
    }

    /// A session, retrying with backoff; `None` on shutdown.
    async fn open(&self, shutdown: &Shutdown) -> Option<Session> {
        let opened = backoff::retry_until(
            "starting to consume",
            self.broker.reconnect_backoff(),
            None,
            shutdown,
            || async {
                self.try_open(shutdown).await.inspect_err(|error| {
                    if !matches!(error, BrokerError::ShuttingDown) {
                        tracing::warn!(%error, "cannot start consuming; retrying");
                    }
                })
            },
        )
        .await;
        opened.ok()
    }

    async fn try_open(&self, shutdown: &Shutdown) -> Result<Session, BrokerError> {
        let config = &self.config;
        let publisher = ConfirmedPublisher::open(
            &self.broker.for_role(format!("{}/publish", config.name)),
            &self.topology,
            shutdown,
        )
        .await?;
        let connection = self
            .broker
            .for_role(format!("{}/consume", config.name))
            .connect_with_backoff(shutdown)
            .await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(BrokerError::operation("channel.open"))?;
        channel
            .basic_qos(config.prefetch, BasicQosOptions::default())
            .await
            .map_err(BrokerError::operation("basic.qos"))?;
        let consumer = channel
            .basic_consume(
                config.queue.as_str().into(),
                format!("{}-{}", config.name, uuid::Uuid::new_v4().simple()).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(BrokerError::operation(format!(
                "basic.consume {}",
                config.queue
            )))?;
        Ok(Session {
            connection,
            channel,
            publisher,
            consumer,
            acking: Acking::for_config(config),
        })
    }
}

impl Session {
    /// Consume until shutdown or until the session breaks, then ack what is settled and close.
    async fn consume<H: Handler>(
        self,
        pipeline: &Pipeline<H>,
        concurrency: usize,
        shutdown: &Shutdown,
    ) {
        let Session {
            connection,
            channel,
            publisher,
            consumer,
            acking,
        } = self;
        // Ends the session: shutdown, or a delivery that could not be settled on this
        // connection (the broker redelivers it to the next session).
        let broken = CancellationToken::new();
        let deliveries = consumer.take_until(stopped(shutdown.clone(), broken.clone()));
        let processing = process(
            deliveries,
            pipeline,
            &publisher,
            &acking,
            concurrency,
            &broken,
        );
        tokio::select! {
            () = processing => {},
            () = watch(&connection, &channel, &publisher) => tracing::warn!("broker connection lost"),
            error = acking.run(&channel) => tracing::warn!(%error, "could not acknowledge deliveries; restarting the session"),
        }
        // In-flight deliveries have been settled (or abandoned with the connection): ack what
        // is settled, then closing returns anything still unacked to the queue. On a dead
        // connection these may wait for an answer that never comes (seen after the process
        // was frozen past the heartbeat: the session never ended and the consumer never came
        // back), so they get a bound; dropping the connection then closes its socket, and the
        // broker returns the unacked deliveries all the same.
        let teardown = async {
            acking.flush(&channel).await;
            let _ = channel.close(200, "consumer stopping".into()).await;
            let _ = connection.close(200, "consumer stopping".into()).await;
        };
        if tokio::time::timeout(TEARDOWN_LIMIT, teardown)
            .await
            .is_err()
        {
            tracing::warn!(
                limit = ?TEARDOWN_LIMIT,
                "the broker did not answer while the session ended; dropping the connection"
            );
        }
    }
}

/// How long ending a session may take: acking what is settled and closing the channel and
/// the connection.
const TEARDOWN_LIMIT: Duration = Duration::from_secs(5);

/// Resolves on shutdown or when the session is broken.
async fn stopped(shutdown: Shutdown, broken: CancellationToken) {
    tokio::select! {
        () = shutdown.triggered() => {},
        () = broken.cancelled() => {},
    }
}

/// Run the pipeline over the deliveries, `concurrency` chunks at a time.
async fn process<H: Handler>(
    deliveries: impl futures_util::Stream<Item = lapin::Result<Delivery>>,
    pipeline: &Pipeline<H>,
    publisher: &ConfirmedPublisher,
    acking: &Acking,
    concurrency: usize,
    broken: &CancellationToken,
) {
    deliveries
        // Whatever has arrived, up to a batch, is handled together; under light load that
        // is one delivery and nothing waits for a batch to fill.
        .ready_chunks(pipeline.batch)
        .for_each_concurrent(concurrency, |chunk| {
            let mut received = Vec::with_capacity(chunk.len());
            let mut failed = None;
            for delivery in chunk {
                match delivery {
                    Ok(delivery) => {
                        // Registered here, in delivery order, before any can be settled.
                        acking.delivered(&delivery);
                        received.push(delivery);
                    }
                    Err(error) => failed = Some(error),
                }
            }
            async move {
                if let Some(error) = failed {
                    tracing::warn!(%error, "consumer stream failed");
                    broken.cancel();
                }
                if !received.is_empty()
                    && let Err(error) = acking.settle(pipeline, received, publisher).await
                {
                    tracing::warn!(%error, "could not settle a delivery; restarting the session");
                    broken.cancel();
                }
            }
        })
        .await;
}

/// Resolves once a connection or channel of the session is lost.
async fn watch(connection: &Connection, channel: &Channel, publisher: &ConfirmedPublisher) {
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        if !connection.status().connected()
            || !channel.status().connected()
            || !publisher.is_connected()
        {
            return;
        }
    }
}

/// How a session acknowledges deliveries, decided once when it opens.
enum Acking {
    /// Settled deliveries are acked in batches by [`Acks`], once their transaction committed
    /// or their retry or dead letter was confirmed.
    AfterSettling(Acks),
    /// Each delivery is acked just before it is handled, one at a time: the deliberately
    /// broken consumer of [`super::Faults::ack_before_commit`], which loses a message when it
    /// crashes mid-handling (the chaos runner must catch it).
    BeforeHandling,
}

impl Acking {
    fn for_config(config: &ConsumerConfig) -> Self {
        if config.faults.ack_before_commit {
            Self::BeforeHandling
        } else {
            Self::AfterSettling(Acks::new(config.prefetch))
        }
    }

    /// Call in delivery order, before the delivery can be settled.
    fn delivered(&self, delivery: &Delivery) {
        if let Self::AfterSettling(acks) = self {
            acks.delivered(delivery.delivery_tag);
        }
    }

    async fn settle<H: Handler>(
        &self,
        pipeline: &Pipeline<H>,
        deliveries: Vec<Delivery>,
        publisher: &ConfirmedPublisher,
    ) -> Result<(), Unsettled> {
        match self {
            Self::AfterSettling(acks) => pipeline.settle(deliveries, publisher, Some(acks)).await,
            Self::BeforeHandling => {
                for delivery in deliveries {
                    delivery
                        .acker
                        .ack(BasicAckOptions::default())
                        .await
                        .map_err(BrokerError::operation("basic.ack"))?;
                    pipeline.settle(vec![delivery], publisher, None).await?;
                }
                Ok(())
            }
        }
    }

    /// Send acks as deliveries are settled; returns only when an ack could not be sent.
    async fn run(&self, channel: &Channel) -> BrokerError {
        match self {
            Self::AfterSettling(acks) => acks.run(channel).await,
            Self::BeforeHandling => std::future::pending().await,
        }
    }

    /// Ack everything settled (the session is ending).
    async fn flush(&self, channel: &Channel) {
        if let Self::AfterSettling(acks) = self
            && let Err(error) = acks.flush(channel).await
        {
            tracing::debug!(%error, "could not acknowledge the last settled deliveries");
        }
    }
}
