//! Building the service from its settings (shared by `main` and the tests).

use msgkit::RelayConfig;
use msgkit::config::ConfigError;
use msgkit::consume::ConsumerConfig;
use msgkit::database::DatabaseSettings;
use msgkit::service::{Service, ServiceError, ServiceSettings};

use crate::gateway::{GatewaySettings, GatewaySimulator};
use crate::handlers::routes;

/// The service's name: its queue, its inbox consumer, its `app_id`.
pub const NAME: &str = "payment";

/// Everything the payment service needs to start.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Database, broker, HTTP address (`PAYMENT_HTTP_ADDR`, default 127.0.0.1:8082; schema
    /// `PAYMENT_DB_SCHEMA`, default `payment`).
    pub service: ServiceSettings,
    /// The outbox relay (`OUTBOX_*`).
    pub relay: RelayConfig,
    /// The consumer of the `payment` queue (`CONSUMER_*`, `RETRY_*`).
    pub consumer: ConsumerConfig,
    /// The payment-gateway simulator (`GATEWAY_*`).
    pub gateway: GatewaySettings,
}

impl Settings {
    /// From the environment, with local defaults.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            service: ServiceSettings::from_env(NAME, 8082, NAME)?,
            relay: RelayConfig::from_env(NAME)?,
            // One delivery per transaction (unlike the other services): the handler waits on
            // the gateway, and a batch would add those waits up inside one transaction.
            consumer: ConsumerConfig::from_env(NAME, NAME)?,
            gateway: GatewaySettings::from_env()?,
        })
    }
}

/// The payment service, ready to run.
pub async fn build(settings: Settings) -> Result<Service, ServiceError> {
    let service = Service::start(
        settings.service,
        contracts::topology(),
        sqlx::migrate!("./migrations"),
    )
    .await?;
    // The simulator stands for an external system: its own connections, so that a charge never
    // waits for a connection held by the handler that asked for it.
    let gateway_pool = DatabaseSettings {
        max_connections: 4,
        ..service.settings().database.clone()
    }
    .connect()
    .await?;
    let gateway = GatewaySimulator::new(gateway_pool, settings.gateway);
    service
        .with_relay(settings.relay)
        .consume_with(settings.consumer, routes(gateway))
}
