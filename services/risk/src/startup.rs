//! Building the service from its settings: `main` and the tests start the very same service.

use msgkit::consume::ConsumerConfig;
use msgkit::service::{Service, ServiceError, ServiceSettings};

use crate::handlers;
use crate::http::{self, AppState};
use crate::metrics::RiskMetrics;

/// The service's name: its queue, its schema, its inbox consumer, its settings' prefix.
pub const NAME: &str = "risk";

/// The risk service, ready to run: the API, the outbox relay (transactions and alerts are
/// published through it, and the absence timers fire through it), the rule engine's consumer.
pub async fn build(settings: ServiceSettings) -> Result<Service, ServiceError> {
    let service = Service::start(
        settings,
        contracts::topology(),
        sqlx::migrate!("./migrations"),
    )
    .await?;
    let (metrics, registry) = RiskMetrics::new();
    let api = http::router(AppState {
        pool: service.pool().clone(),
    });
    // One delivery per transaction (the kit's default batch): a user's key state is read and
    // written per event, and a failing event must not roll back its neighbours' alerts.
    let mut consumer = ConsumerConfig::new(NAME, NAME);
    consumer.state_entry_limit = KEY_STATE_LIMIT;
    service
        .with_http(api)
        .with_metrics(registry)
        .with_relay()
        .consume_with(consumer, handlers::routes(metrics))
}

/// Largest user state stored by default (`RISK_STATE_ENTRY_LIMIT` or `STATE_ENTRY_LIMIT`
/// override it). The engine bounds a key's state (256 events, 32 partial matches per rule, 512
/// counted events per threshold rule), but with several rules that bound is well above the
/// kit's 64 KiB default, and a state over the limit dead-letters the event that grew it.
pub const KEY_STATE_LIMIT: usize = 1024 * 1024;
const _: () = assert!(KEY_STATE_LIMIT > msgkit::state::DEFAULT_ENTRY_LIMIT);
