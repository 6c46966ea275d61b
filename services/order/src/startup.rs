//! Building the service from its settings. `main` and the tests start the very same service;
//! tests bind port 0 and read the real address.

use msgkit::consume::ConsumerConfig;
use msgkit::service::{Service, ServiceError, ServiceSettings};
use msgkit::{RelayConfig, config::ConfigError};

use crate::handlers;
use crate::routes::{self, AppState};

/// The service's name: its queue, its inbox consumer, its `app_id`.
pub const NAME: &str = "order";

/// Deliveries handled per transaction by default (`CONSUMER_BATCH` overrides): the saga's handler
/// only updates order rows and enqueues follow-ups.
const CONSUMER_BATCH: usize = 16;

/// Everything the order service needs to start.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Database, broker, HTTP address (`ORDER_HTTP_ADDR`, default 127.0.0.1:8080; schema
    /// `ORDER_DB_SCHEMA`, default `orders`).
    pub service: ServiceSettings,
    /// The outbox relay (`OUTBOX_*`).
    pub relay: RelayConfig,
    /// The consumer of the `order` queue (`CONSUMER_*`, `RETRY_*`).
    pub consumer: ConsumerConfig,
}

impl Settings {
    /// From the environment, with local defaults.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            service: ServiceSettings::from_env(NAME, 8080, "orders")?,
            relay: RelayConfig::from_env(NAME)?,
            consumer: ConsumerConfig {
                batch: CONSUMER_BATCH,
                ..ConsumerConfig::new(NAME, NAME)
            }
            .with_env_overrides()?,
        })
    }
}

/// The order service, ready to run: the API, the outbox relay, the saga consumer.
pub async fn build(settings: Settings) -> Result<Service, ServiceError> {
    let service = Service::start(
        settings.service,
        contracts::topology(),
        sqlx::migrate!("./migrations"),
    )
    .await?;
    let routes = routes::router(AppState {
        pool: service.pool().clone(),
    });
    service
        .with_http(routes)
        .with_relay(settings.relay)
        .consume_with(settings.consumer, handlers::routes())
}
