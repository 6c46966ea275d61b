//! What an admission guard records (see [`crate::admission`]), and a per-client rate limit
//! ([`crate::rate_limit`]): the two ways an API turns requests away.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::One;

/// The admission families of a registry.
pub(super) struct AdmissionFamilies {
    shed: Family<One, Counter>,
    shedding: Family<One, Gauge>,
    backlog: Family<One, Gauge>,
    oldest_age: Family<One, Gauge<f64, AtomicU64>>,
    probe_errors: Family<One, Counter>,
    rate_limited: Family<One, Counter>,
}

impl AdmissionFamilies {
    pub(super) fn new() -> Self {
        Self {
            shed: Family::default(),
            shedding: Family::default(),
            backlog: Family::default(),
            oldest_age: Family::default(),
            probe_errors: Family::default(),
            rate_limited: Family::default(),
        }
    }

    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "admission_shed",
            "Requests answered 503 + Retry-After because the service's backlog was over its limit",
            self.shed.clone(),
        );
        registry.register(
            "admission_shedding",
            "1 while the service sheds new work (its backlog passed a limit and has not yet fallen below the resume point)",
            self.shedding.clone(),
        );
        registry.register(
            "admission_backlog",
            "Units of work not yet final, as the admission probe last read them",
            self.backlog.clone(),
        );
        registry.register(
            "admission_backlog_oldest_age_seconds",
            "Age of the oldest unit of work not yet final, as the admission probe last read it",
            self.oldest_age.clone(),
        );
        registry.register(
            "admission_probe_errors",
            "Backlog probes that failed or timed out (the last reading stands meanwhile)",
            self.probe_errors.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests answered 429 + Retry-After because their client passed its rate limit",
            self.rate_limited.clone(),
        );
    }

    /// `service`'s count of rate-limited requests, created at 0.
    pub(super) fn rate_limited_of(&self, service: &str) -> Counter {
        self.rate_limited
            .get_or_create(&[("service", service.to_owned())])
            .clone()
    }

    /// `service`'s admission metrics, created at 0.
    pub(super) fn for_service(&self, service: &str) -> AdmissionMetrics {
        let label = [("service", service.to_owned())];
        AdmissionMetrics {
            shed: self.shed.get_or_create(&label).clone(),
            shedding: self.shedding.get_or_create(&label).clone(),
            backlog: self.backlog.get_or_create(&label).clone(),
            oldest_age: self.oldest_age.get_or_create(&label).clone(),
            probe_errors: self.probe_errors.get_or_create(&label).clone(),
        }
    }
}

/// One service's admission metrics.
#[derive(Clone, Debug)]
pub(crate) struct AdmissionMetrics {
    shed: Counter,
    shedding: Gauge,
    backlog: Gauge,
    oldest_age: Gauge<f64, AtomicU64>,
    probe_errors: Counter,
}

impl AdmissionMetrics {
    /// A request was shed.
    pub(crate) fn shed(&self) {
        self.shed.inc();
    }

    /// A probe's reading and the decision taken on it.
    pub(crate) fn observed(&self, pending: u64, oldest_age_seconds: f64, shedding: bool) {
        self.backlog.set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.oldest_age.set(oldest_age_seconds);
        self.shedding.set(i64::from(shedding));
    }

    /// A probe failed or timed out.
    pub(crate) fn probe_failed(&self) {
        self.probe_errors.inc();
    }
}
