//! Building the service from its settings (shared by `main` and the tests).

use msgkit::config::ConfigError;
use msgkit::consume::ConsumerConfig;
use msgkit::service::{Service, ServiceError, ServiceSettings};

use crate::handlers::routes;

/// The service's name: its queue, its inbox consumer, its `app_id`.
pub const NAME: &str = "notify";

/// Deliveries handled per transaction by default (`CONSUMER_BATCH` overrides): its handler only
/// inserts notification rows.
const CONSUMER_BATCH: usize = 16;

/// Everything the notify service needs to start.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Database, broker, HTTP address (`NOTIFY_HTTP_ADDR`, default 127.0.0.1:8083; schema
    /// `NOTIFY_DB_SCHEMA`, default `notify`).
    pub service: ServiceSettings,
    /// The consumer of the `notify` queue (`CONSUMER_*`, `RETRY_*`).
    pub consumer: ConsumerConfig,
}

impl Settings {
    /// From the environment, with local defaults.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            service: ServiceSettings::from_env(NAME, 8083, NAME)?,
            consumer: ConsumerConfig {
                batch: CONSUMER_BATCH,
                ..ConsumerConfig::new(NAME, NAME)
            }
            .with_env_overrides()?,
        })
    }
}

/// The notify service, ready to run.
pub async fn build(settings: Settings) -> Result<Service, ServiceError> {
    let service = Service::start(
        settings.service,
        contracts::topology(),
        sqlx::migrate!("./migrations"),
    )
    .await?;
    // Notify emits nothing, so it runs no outbox relay.
    service.consume_with(settings.consumer, routes())
}
