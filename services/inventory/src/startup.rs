//! Building the service from its settings (shared by `main` and the tests).

use msgkit::RelayConfig;
use msgkit::config::ConfigError;
use msgkit::consume::ConsumerConfig;
use msgkit::service::{Service, ServiceError, ServiceSettings};

use crate::handlers::routes;

/// The service's name: its queue, its inbox consumer, its `app_id`.
pub const NAME: &str = "inventory";

/// Deliveries handled per transaction by default (`CONSUMER_BATCH` overrides). Orders lock
/// stock rows shared by all orders; the routes' `before_batch` takes a batch's stock locks in
/// SKU order before its first message, so concurrent batches cannot deadlock over them.
const CONSUMER_BATCH: usize = 16;

/// Everything the inventory service needs to start.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Database, broker, HTTP address (`INVENTORY_HTTP_ADDR`, default 127.0.0.1:8081; schema
    /// `INVENTORY_DB_SCHEMA`, default `inventory`).
    pub service: ServiceSettings,
    /// The outbox relay (`OUTBOX_*`).
    pub relay: RelayConfig,
    /// The consumer of the `inventory` queue (`CONSUMER_*`, `RETRY_*`).
    pub consumer: ConsumerConfig,
}

impl Settings {
    /// From the environment, with local defaults.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            service: ServiceSettings::from_env(NAME, 8081, NAME)?,
            relay: RelayConfig::from_env(NAME)?,
            consumer: ConsumerConfig {
                batch: CONSUMER_BATCH,
                ..ConsumerConfig::new(NAME, NAME)
            }
            .with_env_overrides()?,
        })
    }
}

/// The inventory service, ready to run.
pub async fn build(settings: Settings) -> Result<Service, ServiceError> {
    let service = Service::start(
        settings.service,
        contracts::topology(),
        sqlx::migrate!("./migrations"),
    )
    .await?;
    service
        .with_relay(settings.relay)
        .consume_with(settings.consumer, routes())
}
