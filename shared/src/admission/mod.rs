//! Admission control for a service's HTTP API: refuse new work with 503 + `Retry-After` while
//! the work already accepted is too far behind, instead of accepting faster than the system
//! can finish and letting the backlog and every accepted request's latency grow without bound.
//!
//! The service supplies a *backlog probe*: an async function over its database that answers
//! how many units of work are not yet final and how old the oldest is (the order service:
//! `SELECT count(*), min(created_at) FROM orders WHERE status = 'pending'`, served by a
//! partial index). A background task the [`crate::service::Service`] owns runs it every
//! `interval` and keeps the last reading; a request only reads that decision, so guarding a
//! route costs no database round trip.
//!
//! Either limit trips it: the count (`max_pending`) or the age of the oldest
//! (`max_pending_age`). Once tripped it sheds until both are below `resume_percent` of their
//! limits, so that a backlog hovering at a limit does not flap. A shed request gets
//! 503 `overloaded` naming the reason, with `Retry-After` estimated from the drain rate the
//! probe observes (whole seconds, at least 1, capped). `/readyz` names the reason too but stays
//! 200: see `docs/architecture.md` ("Admission control") for why.
//!
//! 503 is the *system's* answer (everyone is refused until the backlog drains); a client's own
//! rate limit is 429, a different thing.
//!
//! ```no_run
//! # async fn example(service: msgkit::service::Service) -> Result<(), msgkit::service::ServiceError> {
//! use msgkit::admission::{AdmissionConfig, Backlog, guard};
//! use std::time::Duration;
//!
//! async fn pending_orders(pool: sqlx::PgPool) -> Result<Backlog, sqlx::Error> {
//!     let (count, age): (i64, f64) = sqlx::query_as(
//!         "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 \
//!          FROM orders WHERE status = 'pending'",
//!     )
//!     .fetch_one(&pool)
//!     .await?;
//!     Ok(Backlog::new(count as u64, Duration::from_secs_f64(age.max(0.0))))
//! }
//!
//! let (service, admission) = service.with_admission(AdmissionConfig::default(), pending_orders)?;
//! let api = axum::Router::new()
//!     .route("/orders", axum::routing::post(|| async { "accepted" }))
//!     .route_layer(axum::middleware::from_fn_with_state(admission, guard));
//! let service = service.with_http(api);
//! # Ok(()) }
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::config::{ConfigError, Lookup};
use crate::http::Problem;
use crate::metrics::AdmissionMetrics;
use crate::shutdown::Shutdown;

mod gate;

pub use gate::ShedReason;
use gate::{Decision, Gate};

/// What a backlog probe reads: the units of work not yet final and the age of the oldest.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Backlog {
    /// Units of work accepted and not yet final.
    pub pending: u64,
    /// Age of the oldest of them (zero when there is none).
    pub oldest_age: Duration,
}

/// The limits and the probe's pace. The defaults let a broker outage of several minutes at
/// normal load be absorbed (the API keeps accepting while nothing completes), and still stop
/// a backlog that would take longer than that to drain; see `docs/architecture.md`.
#[derive(Clone, Debug, PartialEq)]
pub struct AdmissionConfig {
    /// Shed when this many units are not yet final (`ADMISSION_MAX_PENDING`).
    pub max_pending: u64,
    /// Shed when the oldest unit not yet final is this old (`ADMISSION_MAX_PENDING_AGE_MS`).
    pub max_pending_age: Duration,
    /// Resume when both are below this percentage of their limits
    /// (`ADMISSION_RESUME_PERCENT`, 1 to 100).
    pub resume_percent: u8,
    /// How often the probe runs (`ADMISSION_INTERVAL_MS`).
    pub interval: Duration,
    /// The longest `Retry-After` advised (`ADMISSION_MAX_RETRY_AFTER_SECS`).
    pub max_retry_after: Duration,
}

impl Default for AdmissionConfig {
    /// 100,000 pending or 10 minutes old, resume at 90 %, probe every 250 ms, advise at most
    /// 30 s. At the demo's measured maximum (about 300 orders/s) an outage of five minutes
    /// leaves about 90,000 pending: absorbed; the age limit trips only after ten.
    fn default() -> Self {
        Self {
            max_pending: 100_000,
            max_pending_age: Duration::from_secs(600),
            resume_percent: 90,
            interval: Duration::from_millis(250),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl AdmissionConfig {
    /// `self` overridden by what `source` sets (`ADMISSION_*`; a service's own source is
    /// scoped, so `ORDER_ADMISSION_MAX_PENDING` wins over `ADMISSION_MAX_PENDING`).
    pub fn configured(self, source: &impl Lookup) -> Result<Self, ConfigError> {
        let config = Self {
            max_pending: source.parse("ADMISSION_MAX_PENDING", self.max_pending)?,
            max_pending_age: source.millis("ADMISSION_MAX_PENDING_AGE_MS", self.max_pending_age)?,
            resume_percent: source.parse("ADMISSION_RESUME_PERCENT", self.resume_percent)?,
            interval: source.millis("ADMISSION_INTERVAL_MS", self.interval)?,
            max_retry_after: Duration::from_secs(source.parse(
                "ADMISSION_MAX_RETRY_AFTER_SECS",
                self.max_retry_after.as_secs(),
            )?),
        };
        let invalid = |name: &str, value: String, reason: &str| ConfigError {
            name: name.to_owned(),
            value,
            reason: reason.to_owned(),
        };
        if config.max_pending == 0 {
            return Err(invalid(
                "ADMISSION_MAX_PENDING",
                "0".into(),
                "must be at least 1",
            ));
        }
        if config.max_pending_age.is_zero() {
            let name = "ADMISSION_MAX_PENDING_AGE_MS";
            return Err(invalid(name, "0".into(), "must be at least 1"));
        }
        if !(1..=100).contains(&config.resume_percent) {
            let value = config.resume_percent.to_string();
            return Err(invalid(
                "ADMISSION_RESUME_PERCENT",
                value,
                "must be 1 to 100",
            ));
        }
        if config.interval.is_zero() {
            return Err(invalid(
                "ADMISSION_INTERVAL_MS",
                "0".into(),
                "must be at least 1",
            ));
        }
        Ok(config)
    }

    fn resume_fraction(&self) -> f64 {
        f64::from(self.resume_percent) / 100.0
    }
}

/// A service's admission guard: cheap to clone (every clone is the same guard). Routes ask it
/// through [`guard`] (a middleware) or [`Admission::admit`] (inside a handler that must still
/// answer some requests while shedding, e.g. the replay of an `Idempotency-Key`).
#[derive(Clone, Debug)]
pub struct Admission(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    config: AdmissionConfig,
    /// Read by every guarded request: one atomic load when admitting.
    shedding: AtomicBool,
    /// Requests let through, for the drain-rate estimate.
    admitted: AtomicU64,
    gate: Mutex<Gate>,
    last: Mutex<Option<Decision>>,
    metrics: AdmissionMetrics,
}

/// The 503 answered to a shed request: `{"error": "overloaded", "reason": "pending" |
/// "pending_age", "message", "pending", "oldest_pending_age_ms"}` and `Retry-After`.
#[derive(Clone, Debug)]
pub struct Overloaded(Problem);

impl IntoResponse for Overloaded {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

impl Admission {
    /// A guard with `config`, admitting until its first reading.
    pub(crate) fn new(config: AdmissionConfig, metrics: AdmissionMetrics) -> Self {
        Self(Arc::new(Inner {
            gate: Mutex::new(Gate::new(config.clone())),
            config,
            shedding: AtomicBool::new(false),
            admitted: AtomicU64::new(0),
            last: Mutex::new(None),
            metrics,
        }))
    }

    /// The limits it runs with.
    pub fn config(&self) -> &AdmissionConfig {
        &self.0.config
    }

    /// `Ok` (and counted as admitted) unless the service is shedding; then the 503 to answer.
    pub fn admit(&self) -> Result<(), Overloaded> {
        if !self.0.shedding.load(Ordering::Relaxed) {
            self.0.admitted.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.0.metrics.shed();
        let last = self.0.last.lock().ok().and_then(|last| last.clone());
        let Some(Decision {
            backlog,
            shed: Some(shed),
        }) = last
        else {
            // The reading that set the flag is being replaced: shed with the shortest advice.
            return Err(Overloaded(overloaded("pending", 1, &Backlog::default())));
        };
        Err(Overloaded(overloaded(
            shed.reason.as_str(),
            shed.retry_after_secs,
            &backlog,
        )))
    }

    /// What `/readyz` says: whether it admits, and why not.
    pub(crate) fn status(&self) -> Value {
        let last = self.0.last.lock().ok().and_then(|last| last.clone());
        match last {
            None => json!({"admitting": true, "reason": null}),
            Some(Decision { backlog, shed }) => json!({
                "admitting": shed.is_none(),
                "reason": shed.as_ref().map(|shed| shed.reason.as_str()),
                "retry_after_seconds": shed.as_ref().map(|shed| shed.retry_after_secs),
                "pending": backlog.pending,
                "oldest_pending_age_ms": backlog.oldest_age.as_millis() as u64,
                "max_pending": self.0.config.max_pending,
                "max_pending_age_ms": self.0.config.max_pending_age.as_millis() as u64,
            }),
        }
    }

    /// Take a reading: decide, publish the decision to requests, `/readyz` and the metrics.
    pub(crate) fn observe(&self, at: Instant, backlog: Backlog) {
        let admitted = self.0.admitted.load(Ordering::Relaxed);
        let Ok(mut gate) = self.0.gate.lock() else {
            return;
        };
        let decision = gate.observe(at, backlog, admitted);
        drop(gate);
        let shedding = decision.shed.is_some();
        let was = self.0.shedding.load(Ordering::Relaxed);
        if shedding != was {
            match &decision.shed {
                Some(shed) => tracing::warn!(
                    reason = shed.reason.as_str(),
                    pending = backlog.pending,
                    oldest_age_ms = backlog.oldest_age.as_millis() as u64,
                    "backlog over its limit: shedding new work"
                ),
                None => tracing::info!(
                    pending = backlog.pending,
                    "backlog drained: admitting again"
                ),
            }
        }
        self.0
            .metrics
            .observed(backlog.pending, backlog.oldest_age.as_secs_f64(), shedding);
        if let Ok(mut last) = self.0.last.lock() {
            *last = Some(decision);
        }
        self.0.shedding.store(shedding, Ordering::Relaxed);
    }

    /// Run `probe` every interval until `shutdown`. A failed or slow probe keeps the last
    /// decision (the database being away fails the requests anyway, and `/readyz` says so).
    pub(crate) async fn run<P, Fut>(self, pool: PgPool, probe: P, shutdown: Shutdown)
    where
        P: Fn(PgPool) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Backlog, sqlx::Error>> + Send,
    {
        let interval = self.0.config.interval;
        let limit = interval.max(Duration::from_secs(2));
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                () = shutdown.triggered() => break,
                _ = ticker.tick() => {}
            }
            let reading = tokio::time::timeout(limit, probe(pool.clone())).await;
            match reading {
                Ok(Ok(backlog)) => {
                    if failing {
                        tracing::info!("admission probe answers again");
                        failing = false;
                    }
                    self.observe(Instant::now(), backlog);
                }
                Ok(Err(error)) => {
                    self.0.metrics.probe_failed();
                    if !failing {
                        tracing::warn!(%error, "admission probe failed; the last decision stands");
                        failing = true;
                    }
                }
                Err(_) => {
                    self.0.metrics.probe_failed();
                    if !failing {
                        tracing::warn!(
                            ?limit,
                            "admission probe timed out; the last decision stands"
                        );
                        failing = true;
                    }
                }
            }
        }
    }
}

fn overloaded(reason: &str, retry_after_secs: u64, backlog: &Backlog) -> Problem {
    let message = match reason {
        "pending_age" => "the oldest accepted work is too old; retry later",
        _ => "too much accepted work is not yet finished; retry later",
    };
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
        .with("reason", reason)
        .with("pending", backlog.pending)
        .with(
            "oldest_pending_age_ms",
            backlog.oldest_age.as_millis() as u64,
        )
        .retry_after(retry_after_secs)
}

/// Middleware for the routes to guard (`route_layer(from_fn_with_state(admission, guard))`):
/// the request goes on, or is answered 503 + `Retry-After` while the service sheds.
pub async fn guard(State(admission): State<Admission>, request: Request, next: Next) -> Response {
    match admission.admit() {
        Ok(()) => next.run(request).await,
        Err(overloaded) => overloaded.into_response(),
    }
}

#[cfg(test)]
mod tests;
