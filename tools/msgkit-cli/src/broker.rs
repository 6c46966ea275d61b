//! Reaching the broker: AMQP for messages, the management API for listings.

use std::time::Duration;

use lapin::uri::AMQPUri;
use lapin::{Channel, Connection};
use msgkit::config::Lookup;
use serde::Deserialize;

use crate::CliError;

/// Where the broker is. Its `Debug` leaves out the management API's password.
#[derive(Clone)]
pub struct BrokerConfig {
    /// The kit's settings for it: TLS (`amqps://` with `AMQP_TLS_*`) as the services have it.
    settings: msgkit::BrokerSettings,
    vhost: String,
    api: String,
    api_user: String,
    api_password: String,
}

impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("settings", &self.settings)
            .field("vhost", &self.vhost)
            .field("api", &self.api)
            .field("api_user", &self.api_user)
            .finish_non_exhaustive()
    }
}

/// A queue as the management API lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct QueueInfo {
    pub name: String,
    #[serde(default)]
    pub messages: u64,
}

impl BrokerConfig {
    /// `settings` (the environment, files read) may name the management API's user and
    /// password (`RABBITMQ_MANAGEMENT_USER`, `RABBITMQ_MANAGEMENT_PASSWORD` or its `_FILE`);
    /// else the AMQP URL's are used.
    pub fn new(
        amqp_url: &str,
        management_url: &str,
        settings: &impl Lookup,
    ) -> Result<Self, CliError> {
        // AMQP_URL may list every node of a cluster; the operator commands talk to the first.
        let amqp_url = amqp_url.split(',').next().unwrap_or_default().trim();
        let uri: AMQPUri = amqp_url.parse().map_err(|error| {
            CliError::Usage(format!(
                "AMQP_URL {} is not a valid AMQP URL: {error}",
                msgkit::config::redact_url(amqp_url)
            ))
        })?;
        let user = &uri.authority.userinfo;
        let mut broker = msgkit::BrokerSettings::new(amqp_url, "msgkit-cli");
        broker.tls =
            msgkit::BrokerTls::from_config(settings, uri.scheme == lapin::uri::AMQPScheme::AMQPS)
                .map_err(|error| CliError::Usage(error.to_string()))?;
        Ok(Self {
            settings: broker,
            vhost: uri.vhost.clone(),
            api: management_url.trim_end_matches('/').to_owned(),
            api_user: settings.string("RABBITMQ_MANAGEMENT_USER", &user.username),
            api_password: settings.string("RABBITMQ_MANAGEMENT_PASSWORD", &user.password),
        })
    }

    /// The vhost the commands work on.
    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    /// The kit's settings for this broker, under `connection_name`.
    pub fn settings(&self, connection_name: &str) -> msgkit::BrokerSettings {
        self.settings.for_role(connection_name)
    }

    /// A fresh connection.
    pub async fn connection(&self) -> Result<Connection, CliError> {
        self.settings
            .connect()
            .await
            .map_err(|error| CliError::Unavailable(error.to_string()))
    }

    /// A channel on a fresh connection (kept alive by the returned connection).
    pub async fn channel(&self) -> Result<(Connection, Channel), CliError> {
        let connection = self.connection().await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|error| CliError::Unavailable(format!("cannot open a channel: {error}")))?;
        Ok((connection, channel))
    }

    /// Every queue of the vhost.
    pub async fn queues(&self) -> Result<Vec<QueueInfo>, CliError> {
        let vhost = encode(&self.vhost);
        let url = format!("{}/api/queues/{vhost}?columns=name,messages", self.api);
        let response = reqwest::Client::new()
            .get(&url)
            .basic_auth(&self.api_user, Some(&self.api_password))
            .timeout(Duration::from_secs(15))
            .send()
            .await
            .map_err(|error| {
                CliError::Unavailable(format!(
                    "cannot reach the RabbitMQ management API at {}: {error}",
                    self.api
                ))
            })?;
        match response.status().as_u16() {
            200 => response.json().await.map_err(|error| {
                CliError::Other(anyhow::anyhow!("unexpected management API answer: {error}"))
            }),
            401 => Err(CliError::Unavailable(format!(
                "the management API at {} refused the credentials (set RABBITMQ_MANAGEMENT_USER/PASSWORD)",
                self.api
            ))),
            404 => Err(CliError::NotFound(format!("no vhost {:?}", self.vhost))),
            status => Err(CliError::Unavailable(format!(
                "the management API answered {status}"
            ))),
        }
    }
}

/// Percent-encode a path segment (vhost, exchange and queue names in management API paths).
pub(crate) fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
