//! A service's settings, read once.

use std::net::SocketAddr;

use crate::broker::BrokerSettings;
use crate::config::{ConfigError, ConfigSource, Lookup, env_prefix};
use crate::consume::ConsumerConfig;
use crate::database::DatabaseSettings;
use crate::outbox::RelayConfig;
use crate::topology::Archive;

/// Everything a service needs to start, derived from one [`ConfigSource`] read once. Every
/// name comes from the service's name: `<NAME>_HTTP_ADDR`, `<NAME>_DB_SCHEMA`, the connection
/// names, `app_id`, and each consumer's settings under its queue's prefix
/// (`<QUEUE>_CONSUMER_BATCH`, then `CONSUMER_BATCH`; see [`crate::config`]).
#[derive(Clone, Debug)]
pub struct ServiceSettings {
    /// The service's name: `app_id` of what it publishes, its inbox consumer name, its queue's
    /// default name, the prefix of its settings and connection names.
    pub name: String,
    /// Where its HTTP endpoints listen (`<NAME>_HTTP_ADDR`).
    pub http_addr: SocketAddr,
    /// Its database schema (`DATABASE_URL`, `<NAME>_DB_SCHEMA`, `DATABASE_MAX_CONNECTIONS`).
    pub database: DatabaseSettings,
    /// The broker (`AMQP_URL`, `AMQP_RECONNECT_*`).
    pub broker: BrokerSettings,
    /// Its outbox relay (`OUTBOX_*`), when it publishes.
    pub relay: RelayConfig,
    /// The event archive (`ARCHIVE_*`), when the system keeps one: the relay then writes
    /// every event to it too, and projections read it.
    pub archive: Option<Archive>,
    /// What the service declares on the broker (`TOPOLOGY_DECLARE`): `all` (the default) the
    /// whole topology, `own` only the exchange and the queues it consumes (with their DLQs and
    /// bindings), for a broker user with rights on nothing else; the rest must exist
    /// (`msgkit topology apply`).
    pub declare_own_only: bool,
    /// What was read, for the settings derived later: each consumer's, and the service's own
    /// (e.g. the payment gateway's `GATEWAY_*`).
    pub source: ConfigSource,
}

impl ServiceSettings {
    /// Read the environment (over the TOML file of `<NAME>_CONFIG_FILE` or
    /// `MSGKIT_CONFIG_FILE`) once, with local defaults: HTTP on `127.0.0.1:<default_port>`,
    /// schema `default_schema`.
    pub fn load(name: &str, default_port: u16, default_schema: &str) -> Result<Self, ConfigError> {
        Self::from_source(
            ConfigSource::load(name)?,
            name,
            default_port,
            default_schema,
        )
    }

    /// The settings `source` gives, with these defaults.
    pub fn from_source(
        source: ConfigSource,
        name: &str,
        default_port: u16,
        default_schema: &str,
    ) -> Result<Self, ConfigError> {
        let prefix = env_prefix(name);
        Ok(Self {
            name: name.to_owned(),
            http_addr: source.parse(
                &format!("{prefix}_HTTP_ADDR"),
                SocketAddr::from(([127, 0, 0, 1], default_port)),
            )?,
            database: DatabaseSettings::from_config(&source, &prefix, default_schema)?,
            broker: BrokerSettings::from_config(&source, name)?,
            relay: RelayConfig::from_config(&source, name)?,
            archive: Archive::from_config(&source)?,
            declare_own_only: declare_own_only(&source)?,
            source,
        })
    }

    /// `defaults` (the service's own consumer settings for `defaults.queue`) overridden by what
    /// the source sets for that queue: `<QUEUE>_CONSUMER_*`, `<QUEUE>_RETRY_*`,
    /// `<QUEUE>_FAULT_*`, else the same names without the prefix. A setting the source does
    /// not have leaves the service's default as it is.
    pub fn consumer(&self, defaults: ConsumerConfig) -> Result<ConsumerConfig, ConfigError> {
        let scoped = self.source.scoped(&defaults.queue);
        defaults.configured(&scoped)
    }
}

/// `TOPOLOGY_DECLARE`: `all` (default) or `own`.
fn declare_own_only(source: &ConfigSource) -> Result<bool, ConfigError> {
    match source.get("TOPOLOGY_DECLARE").map(str::trim) {
        None | Some("all") => Ok(false),
        Some("own") => Ok(true),
        Some(other) => Err(ConfigError {
            name: "TOPOLOGY_DECLARE".to_owned(),
            value: other.to_owned(),
            reason: "must be `all` or `own`".to_owned(),
        }),
    }
}
