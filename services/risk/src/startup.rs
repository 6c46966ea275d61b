//! Building the service from its settings: `main` and the tests start the very same service.

use msgkit::auth::TokenKey;
use msgkit::config::{ConfigError, Lookup};
use msgkit::consume::ConsumerConfig;
use msgkit::service::{Service, ServiceError, ServiceSettings};
use uuid::Uuid;

use crate::feed::{self, Feed};
use crate::handlers;
use crate::http::{self, AppState, ReconcileClient};
use crate::metrics::RiskMetrics;

/// The service's name: its queue, its schema, its inbox consumer, its settings' prefix.
pub const NAME: &str = "risk";

/// The setting holding the stream tokens' secret (looked up as `RISK_TOKEN_SECRET`, else
/// `TOKEN_SECRET`).
pub const TOKEN_SECRET: &str = msgkit::auth::TOKEN_SECRET;

/// The setting for how many alerts a stream may fall behind the broadcast before it reads
/// the table instead (`RISK_STREAM_BUFFER`, else `STREAM_BUFFER`).
pub const STREAM_BUFFER: &str = "STREAM_BUFFER";

/// The stream tokens' key from the settings: `None` when no secret is set (the stream then
/// answers 503 and logs why at start), an error when one is set but shorter than
/// [`msgkit::auth::MIN_SECRET_BYTES`]. The error never shows the secret.
pub fn token_key(settings: &ServiceSettings) -> Result<Option<TokenKey>, ConfigError> {
    TokenKey::from_config(&settings.source, NAME)
}

/// The risk service, ready to run: the API (with the alert stream), the outbox relay
/// (transactions and alerts are published through it, and the absence timers fire through
/// it), the rule engine's consumer, and the alert feed's listener.
pub async fn build(settings: ServiceSettings) -> Result<Service, ServiceError> {
    let tokens = token_key(&settings)?;
    let reconcile = ReconcileClient::from_settings(&settings, NAME)?;
    let buffer = settings
        .source
        .scoped(NAME)
        .parse(STREAM_BUFFER, feed::BROADCAST_CAPACITY)?;
    if tokens.is_none() {
        tracing::warn!(
            "no token secret configured (RISK_TOKEN_SECRET or TOKEN_SECRET): the alerts, rules, tokens and reconciliation endpoints answer 503"
        );
    }
    let service = Service::start(
        settings,
        contracts::topology(),
        sqlx::migrate!("./migrations"),
    )
    .await?;
    // RISK_RATE_LIMIT_PER_SEC: off unless set (the bench and chaos runs are one client).
    let rate_limit = service.rate_limit()?;
    let (metrics, registry) = RiskMetrics::new();
    let replica = Uuid::now_v7();
    let feed = Feed::with_capacity(buffer);
    let api = http::router(AppState {
        pool: service.pool().clone(),
        tokens,
        feed: feed.clone(),
        metrics: metrics.clone(),
        shutdown: service.shutdown_signal(),
        reconcile,
        rate_limit,
    });
    let listener = {
        let (pool, metrics) = (service.pool().clone(), metrics.clone());
        move |shutdown| feed::listen(pool, feed, metrics, replica, shutdown)
    };
    // One delivery per transaction (the kit's default batch): a user's key state is read and
    // written per event, and a failing event must not roll back its neighbours' alerts.
    let mut consumer = ConsumerConfig::new(NAME, NAME);
    consumer.state_entry_limit = KEY_STATE_LIMIT;
    service
        .with_http(api)
        .with_metrics(registry)
        .with_relay()
        .with_task("risk alert feed listener", listener)
        .consume_with(consumer, handlers::routes(metrics, replica))
}

/// Largest user state stored by default (`RISK_STATE_ENTRY_LIMIT` or `STATE_ENTRY_LIMIT`
/// override it). The engine bounds a key's state (256 events, 32 partial matches per rule, 512
/// counted events per threshold rule), but with several rules that bound is well above the
/// kit's 64 KiB default, and a state over the limit dead-letters the event that grew it.
pub const KEY_STATE_LIMIT: usize = 1024 * 1024;
const _: () = assert!(KEY_STATE_LIMIT > msgkit::state::DEFAULT_ENTRY_LIMIT);
