//! The kit's Prometheus metrics (see `docs/observability.md` for what each means). They are
//! the only counters the kit keeps: a consumer's or relay's stats read them back.
//!
//! A service adds metrics of its own with [`crate::service::Service::with_metrics`], built with
//! the [`prometheus_client`] re-exported here.
//!
//! One registry per service, rendered by its `/metrics`; a consumer or relay started on its own
//! (a test, the bench) gets a registry of its own, so that two of them in one process never
//! count into each other.

pub use prometheus_client;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

mod admission;
mod components;
mod handles;
mod kept;
mod projection;
mod timers;

pub(crate) use admission::AdmissionMetrics;
pub(crate) use components::ConsumerSeries;
pub(crate) use handles::{ComponentMetrics, Outcome, Publisher, QueueMetrics, RelayMetrics};
pub(crate) use projection::ProjectionMetrics;
pub(crate) use timers::TimerMetrics;

type One = [(&'static str, String); 1];
type Two = [(&'static str, String); 2];

/// 1 to 128 deliveries, doubling.
fn batch_sizes() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 8))
}

/// 1 ms to about 33 s, doubling.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The kit's metric families in one registry; cheap to clone (every clone is the same
/// registry).
#[derive(Clone)]
pub(crate) struct Metrics(Arc<Families>);

struct Families {
    registry: Registry,
    consumed: Family<Two, Counter>,
    redelivered: Family<One, Counter>,
    handler_duration: Family<One, Histogram, fn() -> Histogram>,
    batch_size: Family<One, Histogram, fn() -> Histogram>,
    batch_rollbacks: Family<One, Counter>,
    late_events: Family<Two, Counter>,
    end_to_end: Family<One, Histogram, fn() -> Histogram>,
    confirm: Family<One, Histogram, fn() -> Histogram>,
    relay_published: Family<One, Counter>,
    outbox_dispatched: Family<One, Counter>,
    relay_refused: Family<One, Counter>,
    relay_broker_errors: Family<One, Counter>,
    reconnects: Family<One, Counter>,
    connected: Family<One, Gauge>,
    outbox_pending: Family<One, Gauge>,
    outbox_failing: Family<One, Gauge>,
    outbox_oldest_age: Family<One, Gauge<f64, AtomicU64>>,
    timers: timers::TimerFamilies,
    projections: projection::ProjectionFamilies,
    kept: kept::KeptFamilies,
    admission: admission::AdmissionFamilies,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A fresh registry with every family of the kit.
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("msgkit");
        let metrics = Families {
            consumed: Family::default(),
            redelivered: Family::default(),
            handler_duration: Family::new_with_constructor(seconds),
            batch_size: Family::new_with_constructor(batch_sizes),
            batch_rollbacks: Family::default(),
            late_events: Family::default(),
            end_to_end: Family::new_with_constructor(seconds),
            confirm: Family::new_with_constructor(seconds),
            relay_published: Family::default(),
            outbox_dispatched: Family::default(),
            relay_refused: Family::default(),
            relay_broker_errors: Family::default(),
            reconnects: Family::default(),
            connected: Family::default(),
            outbox_pending: Family::default(),
            outbox_failing: Family::default(),
            outbox_oldest_age: Family::default(),
            timers: timers::TimerFamilies::new(),
            projections: projection::ProjectionFamilies::new(),
            kept: kept::KeptFamilies::new(),
            admission: admission::AdmissionFamilies::new(),
            registry: Registry::default(),
        };
        metrics.register_consumer_metrics(&mut registry);
        metrics.register_publisher_metrics(&mut registry);
        metrics.timers.register(&mut registry);
        metrics.projections.register(&mut registry);
        metrics.kept.register(&mut registry);
        metrics.admission.register(&mut registry);
        Self(Arc::new(Families {
            registry,
            ..metrics
        }))
    }
}

impl Families {
    /// What consumers record: outcomes, handling time, batches, end-to-end latency.
    fn register_consumer_metrics(&self, registry: &mut Registry) {
        registry.register(
            "consumed",
            "Messages consumed, by queue and outcome",
            self.consumed.clone(),
        );
        registry.register(
            "redelivered",
            "Deliveries the broker redelivered (a consumer died or a channel closed before the ack)",
            self.redelivered.clone(),
        );
        registry.register(
            "handler_duration_seconds",
            "Time from delivery to settled (handler, transaction, republish)",
            self.handler_duration.clone(),
        );
        registry.register(
            "consumer_batch_size",
            "Deliveries handled in one transaction, per transaction of a batching consumer",
            self.batch_size.clone(),
        );
        registry.register(
            "consumer_batch_rollbacks",
            "Batches rolled back because one message or the commit failed; their messages were then handled one by one",
            self.batch_rollbacks.clone(),
        );
        registry.register(
            "late_events",
            "Events older than their key's watermark minus the route's allowed lateness, handed to the route's late hook",
            self.late_events.clone(),
        );
        registry.register(
            "end_to_end_latency_seconds",
            "Time from the outbox row's creation to the end of its handling",
            self.end_to_end.clone(),
        );
    }

    /// What publishers, relays and connections record.
    fn register_publisher_metrics(&self, registry: &mut Registry) {
        registry.register(
            "publish_confirm_seconds",
            "Time from publishing to the broker's confirm, by publisher",
            self.confirm.clone(),
        );
        registry.register(
            "relay_published",
            "Messages the outbox relay published and the broker confirmed",
            self.relay_published.clone(),
        );
        registry.register(
            "outbox_dispatched",
            "Of the messages the relay published, those sent by direct dispatch: right after their transaction committed, by the process that wrote them",
            self.outbox_dispatched.clone(),
        );
        registry.register(
            "relay_refused",
            "Publishes refused by the broker (unroutable or nacked), kept in the outbox for retry",
            self.relay_refused.clone(),
        );
        registry.register(
            "relay_broker_errors",
            "Relay batches abandoned because the broker connection failed (they are published again)",
            self.relay_broker_errors.clone(),
        );
        registry.register(
            "broker_reconnects",
            "Broker sessions re-opened after a failure, by component",
            self.reconnects.clone(),
        );
        registry.register(
            "broker_connected",
            "1 while the component holds a broker connection",
            self.connected.clone(),
        );
        registry.register(
            "outbox_pending",
            "Outbox rows not yet published",
            self.outbox_pending.clone(),
        );
        registry.register(
            "outbox_failing",
            "Unpublished outbox rows whose last publish the broker refused",
            self.outbox_failing.clone(),
        );
        registry.register(
            "outbox_oldest_pending_age_seconds",
            "Age of the oldest unpublished outbox row",
            self.outbox_oldest_age.clone(),
        );
    }
}

impl Metrics {
    /// How long `publisher` waited for a confirm.
    pub(crate) fn confirm(&self, publisher: Publisher, took: Duration) {
        self.0
            .confirm
            .get_or_create(&[("publisher", publisher.label().to_owned())])
            .observe(took.as_secs_f64());
    }

    /// The outbox backlog of `service`, read at scrape time.
    pub(crate) fn set_backlog(&self, service: &str, backlog: &crate::outbox::Backlog) {
        let labels = [("service", service.to_owned())];
        let families = &self.0;
        families
            .outbox_pending
            .get_or_create(&labels)
            .set(backlog.pending);
        families
            .outbox_failing
            .get_or_create(&labels)
            .set(backlog.failing);
        families
            .outbox_oldest_age
            .get_or_create(&labels)
            .set(backlog.oldest_pending_age.as_secs_f64());
    }

    /// The registry in the OpenMetrics text format.
    /// The kit's families, then each of the service's own registries, in one exposition.
    pub(crate) fn render(&self, own: &[Arc<Registry>]) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.0.registry);
        for registry in own {
            let _ = encode_registry(&mut out, registry);
        }
        let _ = encode_eof(&mut out);
        out
    }
}
