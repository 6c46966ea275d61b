//! The one place that knows which series each component owns: a consumer, a relay or a
//! projection (or an admission guard) creates all of its series at 0 in its registry when it is built, so that
//! `/metrics` shows them from the service's first scrape. A series that appears only at its
//! first increment leaves a dashboard panel empty in steady state, and `increase()` never sees
//! that first increment (Prometheus has no earlier sample to subtract).
//!
//! Created at scrape time instead, from the database: the outbox backlog of a service with a
//! relay and what its consumers keep (see `ops` and [`super::kept`]).

use super::{
    AdmissionMetrics, ComponentMetrics, Metrics, Outcome, ProjectionMetrics, Publisher,
    QueueMetrics, RelayMetrics,
};

/// What a consumer's series are labelled with, and which optional ones its handler has.
#[derive(Clone, Debug)]
pub(crate) struct ConsumerSeries<'a> {
    /// Its queue (the `queue` label).
    pub(crate) queue: &'a str,
    /// Its name (the `consumer` label, and its component `<name>/consumer`).
    pub(crate) consumer: &'a str,
    /// Event types routed with an allowed lateness (`msgkit_late_events_total`'s `type`).
    pub(crate) late_types: Vec<&'static str>,
    /// Whether its handler handles timers (the consumer fires them).
    pub(crate) timers: bool,
    /// Whether it applies keys in order (it may skip gaps).
    pub(crate) key_order: bool,
}

impl Metrics {
    /// `component`'s broker connection metrics (`order/relay`, `inventory/consumer`).
    fn component(&self, component: &str) -> ComponentMetrics {
        let label = [("component", component.to_owned())];
        ComponentMetrics {
            reconnects: self.0.reconnects.get_or_create(&label).clone(),
            connected: self.0.connected.get_or_create(&label).clone(),
        }
    }

    /// Create a consumer's series at 0 and hand back their handles, looked up once: a consumer
    /// records several per message, and a family lookup costs a lock, a hash and label strings
    /// each time.
    pub(crate) fn register_consumer(&self, series: &ConsumerSeries<'_>) -> QueueMetrics {
        let families = &self.0;
        let queue = series.queue;
        let label = || [("queue", queue.to_owned())];
        let consumed = |outcome: Outcome| {
            families
                .consumed
                .get_or_create(&[
                    ("queue", queue.to_owned()),
                    ("outcome", outcome.label().to_owned()),
                ])
                .clone()
        };
        // Created, not kept: these are looked up as they are recorded (the guard a lookup
        // returns holds the family's lock, so it is dropped at once).
        for message_type in &series.late_types {
            drop(families.late_events.get_or_create(&[
                ("queue", queue.to_owned()),
                ("type", (*message_type).to_owned()),
            ]));
        }
        // What its republisher waits for.
        for publisher in [Publisher::Retry, Publisher::DeadLetter] {
            drop(
                families
                    .confirm
                    .get_or_create(&[("publisher", publisher.label().to_owned())]),
            );
        }
        if series.key_order {
            families.kept.register_gaps(series.consumer);
        }
        QueueMetrics {
            consumed: Outcome::ALL.map(consumed),
            redelivered: families.redelivered.get_or_create(&label()).clone(),
            handler_duration: families.handler_duration.get_or_create(&label()).clone(),
            batch_size: families.batch_size.get_or_create(&label()).clone(),
            batch_rollbacks: families.batch_rollbacks.get_or_create(&label()).clone(),
            end_to_end: families.end_to_end.get_or_create(&label()).clone(),
            late_events: families.late_events.clone(),
            timers: series.timers.then(|| families.timers.for_queue(queue)),
            queue: queue.to_owned(),
            connection: self.component(&format!("{}/consumer", series.consumer)),
            registry: self.clone(),
        }
    }

    /// Create the series of `app_id`'s relay at 0 and hand back their handles.
    pub(crate) fn register_relay(&self, app_id: &str) -> RelayMetrics {
        let label = [("service", app_id.to_owned())];
        drop(
            self.0
                .confirm
                .get_or_create(&[("publisher", Publisher::Relay.label().to_owned())]),
        );
        RelayMetrics {
            published: self.0.relay_published.get_or_create(&label).clone(),
            dispatched: self.0.outbox_dispatched.get_or_create(&label).clone(),
            refused: self.0.relay_refused.get_or_create(&label).clone(),
            broker_errors: self.0.relay_broker_errors.get_or_create(&label).clone(),
            connection: self.component(&format!("{app_id}/relay")),
            registry: self.clone(),
        }
    }

    /// Create `projection`'s series at 0 and hand back their handles.
    pub(crate) fn register_projection(&self, projection: &str) -> ProjectionMetrics {
        self.0.projections.for_projection(projection)
    }

    /// Create the series of `service`'s admission guard at 0 and hand back their handles.
    pub(crate) fn register_admission(&self, service: &str) -> AdmissionMetrics {
        self.0.admission.for_service(service)
    }

    /// `service`'s count of requests its rate limit turned away, created at 0.
    pub(crate) fn register_rate_limit(
        &self,
        service: &str,
    ) -> prometheus_client::metrics::counter::Counter {
        self.0.admission.rate_limited_of(service)
    }
}
