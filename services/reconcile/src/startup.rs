//! Building the service from its settings: `main` and the tests start the very same service.

use std::time::Duration;

use msgkit::auth::TokenKey;
use msgkit::clock::Clock;
use msgkit::config::{ConfigError, Lookup};
use msgkit::consume::ConsumerConfig;
use msgkit::service::{Service, ServiceError, ServiceSettings};

use crate::handlers::{self, ReconcileState};
use crate::http::{self, AppState};
use crate::metrics::{self, ReconcileMetrics};

/// The service's name: its queue, its schema, its inbox consumer, its settings' prefix.
pub const NAME: &str = "reconcile";

/// The window's default: how long after an order's first side the other may come.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(5);
/// How long an order's sides are kept after its last change by default, for late sides.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(3600);

/// The join's settings: `RECONCILE_WINDOW_MS` and `RECONCILE_RETENTION_MS` (else `WINDOW_MS`,
/// `RETENTION_MS`). A retention shorter than the window is refused: the sides would be gone
/// when the window ends.
pub fn join_settings(settings: &ServiceSettings) -> Result<(Duration, Duration), ConfigError> {
    let scoped = settings.source.scoped(NAME);
    let window = scoped.millis("WINDOW_MS", DEFAULT_WINDOW)?;
    let retention = scoped.millis("RETENTION_MS", DEFAULT_RETENTION)?;
    if window.is_zero() || retention < window {
        return Err(ConfigError {
            name: "RECONCILE_WINDOW_MS / RECONCILE_RETENTION_MS".to_owned(),
            value: format!("{} / {}", window.as_millis(), retention.as_millis()),
            reason: "the window must be more than 0 and the retention at least the window"
                .to_owned(),
        });
    }
    Ok((window, retention))
}

/// The reconcile service, ready to run, on the system clock.
pub async fn build(settings: ServiceSettings) -> Result<Service, ServiceError> {
    build_with_clock(settings, Clock::system()).await
}

/// [`build`] with the consumer on `clock`: tests move it instead of waiting for windows.
pub async fn build_with_clock(
    settings: ServiceSettings,
    clock: Clock,
) -> Result<Service, ServiceError> {
    let (window, retention) = join_settings(&settings)?;
    let tokens = TokenKey::from_config(&settings.source, NAME)?;
    if tokens.is_none() {
        tracing::warn!(
            "no token secret configured (RECONCILE_TOKEN_SECRET or TOKEN_SECRET): the reconciliation API answers 503"
        );
    }
    let service = Service::start(
        settings,
        contracts::topology(),
        sqlx::migrate!("./migrations"),
    )
    .await?;
    let (metrics, registry) = ReconcileMetrics::new();
    let api = http::router(AppState {
        pool: service.pool().clone(),
        tokens,
    });
    let refresh = {
        let (pool, metrics) = (service.pool().clone(), metrics.clone());
        move |shutdown| metrics::refresh_open_mismatches(pool, metrics, shutdown)
    };
    let consumer = ConsumerConfig {
        clock,
        ..ConsumerConfig::new(NAME, NAME)
    };
    let state = ReconcileState {
        window,
        retention,
        metrics,
    };
    service
        .with_http(api)
        .with_metrics(registry)
        .with_relay()
        .with_task("reconcile open mismatches gauge", refresh)
        .consume_with(consumer, handlers::routes(state))
}
