//! The order service's settings, from the environment with local defaults.

use std::net::SocketAddr;

use msgkit::config::{ConfigError, env_or, env_parse};
use msgkit::{BrokerSettings, RelayConfig};
use secrecy::SecretString;

/// Default `DATABASE_URL`: the local stack's database.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/msgkit";

/// Everything the service needs to start.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where the HTTP API listens (`ORDER_HTTP_ADDR`, default `127.0.0.1:8080`; port 0 picks a
    /// free port, as tests do).
    pub http_addr: SocketAddr,
    /// The database.
    pub database: DatabaseSettings,
    /// The broker (`AMQP_URL`).
    pub broker: BrokerSettings,
    /// The outbox relay (`OUTBOX_*`).
    pub relay: RelayConfig,
}

/// Where the service keeps its state.
#[derive(Clone, Debug)]
pub struct DatabaseSettings {
    /// `DATABASE_URL`.
    pub url: SecretString,
    /// The schema holding this service's tables and outbox (`ORDER_DB_SCHEMA`, default
    /// `orders`): services may share a database, never a schema.
    pub schema: String,
    /// Pool size (`DATABASE_MAX_CONNECTIONS`, default 10).
    pub max_connections: u32,
}

impl Settings {
    /// Read the settings from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            http_addr: env_parse("ORDER_HTTP_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            database: DatabaseSettings {
                url: SecretString::from(env_or("DATABASE_URL", DEFAULT_DATABASE_URL)),
                schema: env_or("ORDER_DB_SCHEMA", "orders"),
                max_connections: env_parse("DATABASE_MAX_CONNECTIONS", 10)?,
            },
            broker: BrokerSettings::from_env("order/outbox-relay")?,
            relay: RelayConfig::from_env("order")?,
        })
    }
}
