//! Connecting to RabbitMQ: one connection per role (publishing and consuming never share a
//! connection, because a blocked connection stops acks as well as publishes), retried with
//! exponential backoff, the URL's password kept out of every log line and error.
//!
//! The broker may be a cluster: `AMQP_URL` then lists one URL per node, comma-separated (same
//! vhost and credentials). A connection attempt tries them in turn, starting after the last
//! address that failed, so a dead node costs one refused attempt and is then skipped.

mod error;
pub mod tls;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};

use crate::backoff::{self, Backoff, Delays};
use crate::config::{ConfigError, Lookup, redact_url};
use crate::shutdown::Shutdown;

pub use self::error::BrokerError;
pub use self::tls::BrokerTls;

/// Relative spread of reconnect delays.
const RECONNECT_JITTER: f64 = 0.2;

/// Default broker URL for a local stack.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Where the broker is and how patiently to reach it.
///
/// Clones (and [`BrokerSettings::for_role`]) share the rotation through the addresses: once one
/// connection of a process finds a node dead, the others start with the next node too.
#[derive(Clone, Debug)]
pub struct BrokerSettings {
    /// One URL per broker node, at least one.
    urls: Arc<[SecretString]>,
    /// Index into `urls` of the address the next attempt starts with.
    next: Arc<AtomicUsize>,
    /// Shown in the management UI's connection list, e.g. `order/outbox-relay`.
    pub connection_name: String,
    /// First delay between connection attempts.
    pub reconnect_initial: Duration,
    /// Longest delay between connection attempts.
    pub reconnect_max: Duration,
    /// Limit on one attempt at one address (TCP connect and AMQP handshake), so that a node
    /// that does not answer at all cannot hold up the others.
    pub connect_timeout: Duration,
    /// The AMQP heartbeat interval in seconds to ask the broker for (`AMQP_HEARTBEAT_SECS`),
    /// overriding the URL's `heartbeat` parameter; `None` keeps that, or else the broker's
    /// (RabbitMQ: 60 s). The lower of ours and the broker's is used, and lapin takes `0` as
    /// "the broker's", so heartbeats cannot be switched off here. A short interval lets the
    /// broker notice a client that stopped answering (a paused or hung process) within about
    /// twice the interval instead of minutes.
    pub heartbeat_secs: Option<u16>,
    /// What an `amqps://` connection trusts and presents ([`tls`]); `None` for plain AMQP.
    pub tls: Option<BrokerTls>,
}

impl BrokerSettings {
    /// Settings for `url` with the default reconnect backoff (100 ms doubling to 10 s).
    ///
    /// `url` may list several URLs separated by commas, one per node of a cluster, e.g.
    /// `amqp://guest:guest@10.0.0.1:5672/%2f,amqp://guest:guest@10.0.0.2:5672/%2f`. A comma
    /// inside a URL (an unencoded one in a password) is kept when the text after it does not
    /// start with a scheme (`amqp://`); percent-encoding it as `%2C` is safest.
    pub fn new(url: impl Into<String>, connection_name: impl Into<String>) -> Self {
        let urls: Vec<SecretString> = split_urls(&url.into())
            .into_iter()
            .map(SecretString::from)
            .collect();
        Self {
            urls: urls.into(),
            next: Arc::new(AtomicUsize::new(0)),
            connection_name: connection_name.into(),
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            heartbeat_secs: None,
            tls: None,
        }
    }

    /// From `AMQP_URL` (default [`DEFAULT_AMQP_URL`]; a comma-separated list for a cluster),
    /// `AMQP_RECONNECT_INITIAL_MS`, `AMQP_RECONNECT_MAX_MS`, `AMQP_HEARTBEAT_SECS` and, for
    /// `amqps://`, the TLS settings of [`tls`].
    pub fn from_config(
        config: &impl Lookup,
        connection_name: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        let mut settings = Self::new(config.string("AMQP_URL", DEFAULT_AMQP_URL), connection_name);
        settings.reconnect_initial =
            config.millis("AMQP_RECONNECT_INITIAL_MS", settings.reconnect_initial)?;
        settings.reconnect_max = config.millis("AMQP_RECONNECT_MAX_MS", settings.reconnect_max)?;
        settings.heartbeat_secs = config.parse_opt("AMQP_HEARTBEAT_SECS")?;
        let tls_needed = settings
            .urls
            .iter()
            .any(|url| tls::is_tls_url(url.expose_secret()));
        settings.tls = BrokerTls::from_config(config, tls_needed)?;
        Ok(settings)
    }

    /// The same broker under another connection name (one connection per role). The copy
    /// shares the rotation through the addresses with `self`.
    pub fn for_role(&self, connection_name: impl Into<String>) -> Self {
        Self {
            connection_name: connection_name.into(),
            ..self.clone()
        }
    }

    /// The URL with its password redacted, for logs; with several addresses, all of them,
    /// comma-separated.
    pub fn redacted_url(&self) -> String {
        self.redacted_urls().join(",")
    }

    /// Every address, password redacted, in configuration order.
    pub fn redacted_urls(&self) -> Vec<String> {
        self.urls
            .iter()
            .map(|url| redact_url(url.expose_secret()))
            .collect()
    }

    /// How many broker addresses there are.
    pub fn address_count(&self) -> usize {
        self.urls.len()
    }

    /// The address the next connection attempt starts with, password redacted.
    pub fn current_url_redacted(&self) -> String {
        redact_url(self.urls[self.start_index()].expose_secret())
    }

    /// The URL including credentials (with several, the one the next attempt starts with).
    /// Only for handing to a client library, never to a log.
    pub fn expose_url(&self) -> &str {
        self.urls[self.start_index()].expose_secret()
    }

    fn start_index(&self) -> usize {
        self.next.load(Ordering::Acquire) % self.urls.len()
    }

    /// The reconnect schedule: doubling from `reconnect_initial` to `reconnect_max`, ±20 %
    /// jitter (so that every client of a broker that restarted does not return at once),
    /// never giving up. Database reconnects reuse it.
    pub(crate) fn reconnect_policy(&self) -> Backoff {
        Backoff::new(self.reconnect_initial, self.reconnect_max).with_jitter(RECONNECT_JITTER)
    }

    /// The delays of [`BrokerSettings::reconnect_policy`], endless.
    pub(crate) fn reconnect_backoff(&self) -> Delays {
        self.reconnect_policy().delays()
    }

    /// One connection attempt: with several addresses, one round through them, starting after
    /// the last address that failed. The error of a failed round names every address (password
    /// redacted) and carries the last one's cause; each address's own failure is logged.
    pub async fn connect(&self) -> Result<Connection, BrokerError> {
        let count = self.urls.len();
        let mut last_error = None;
        for index in attempt_order(self.start_index(), count) {
            match self.connect_to(index).await {
                Ok(connection) => return Ok(connection),
                Err(source) => {
                    // The next attempt (of any role) starts after this address, unless another
                    // one has moved the rotation on meanwhile.
                    let _ = self.next.compare_exchange(
                        index,
                        (index + 1) % count,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                    if count > 1 {
                        tracing::warn!(
                            url = %redact_url(self.urls[index].expose_secret()),
                            error = %source,
                            connection = %self.connection_name,
                            "broker address unusable; trying the next"
                        );
                    }
                    last_error = Some(source);
                }
            }
        }
        Err(BrokerError::Connect {
            url: self.redacted_urls().join(", "),
            source: last_error.unwrap_or_else(|| io::Error::other("no broker address").into()),
        })
    }

    /// One attempt at the address `index`, bounded by `connect_timeout`.
    async fn connect_to(&self, index: usize) -> Result<Connection, lapin::Error> {
        let raw = self.urls[index].expose_secret();
        // Parsed here rather than by the client, whose error for some malformed URLs quotes
        // the whole text, password included.
        let mut uri: AMQPUri = raw.parse().map_err(|reason: String| {
            let reason = reason.replace(raw, &redact_url(raw));
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a valid AMQP URL: {reason}"),
            )
        })?;
        // lapin takes the heartbeat only from the URI (ConnectionProperties has no field for
        // it) and negotiates the lower of ours and the broker's.
        if let Some(secs) = self.heartbeat_secs {
            uri.query.heartbeat = Some(secs);
        }
        let properties = ConnectionProperties::default()
            .with_connection_name(self.connection_name.clone().into());
        let tls = self
            .tls
            .as_ref()
            .map(BrokerTls::to_lapin)
            .unwrap_or_default();
        let runtime = lapin::runtime::default_runtime()?;
        match tokio::time::timeout(
            self.connect_timeout,
            Connection::connect_uri_with_config(uri, properties, tls, runtime),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no AMQP connection within {:?}", self.connect_timeout),
            )
            .into()),
        }
    }

    /// Connect, retrying with backoff until it works or `shutdown` is triggered. With several
    /// addresses, each try is a round through all of them; the backoff is between rounds.
    pub async fn connect_with_backoff(
        &self,
        shutdown: &Shutdown,
    ) -> Result<Connection, BrokerError> {
        let mut delays = self.reconnect_backoff();
        loop {
            if shutdown.is_triggered() {
                return Err(BrokerError::ShuttingDown);
            }
            match self.connect().await {
                Ok(connection) => return Ok(connection),
                Err(error) => {
                    let delay = delays.next().unwrap_or(self.reconnect_max);
                    tracing::warn!(%error, retry_in = ?delay, connection = %self.connection_name, "broker connection failed");
                    if !backoff::wait(delay, shutdown).await {
                        return Err(BrokerError::ShuttingDown);
                    }
                }
            }
        }
    }
}

/// The URLs of a comma-separated list (whitespace around each ignored). A piece that does not
/// start with a scheme belongs to the URL before it (a comma in a password). Never empty: a
/// list without any URL becomes one empty (invalid) URL, so the error shows up on connecting.
fn split_urls(list: &str) -> Vec<String> {
    let mut urls: Vec<String> = Vec::new();
    for piece in list.split(',') {
        let trimmed = piece.trim();
        if trimmed.is_empty() {
            continue;
        }
        match urls.last_mut() {
            Some(previous) if !starts_with_scheme(trimmed) => {
                previous.push(',');
                previous.push_str(piece.trim_end());
            }
            _ => urls.push(trimmed.to_owned()),
        }
    }
    if urls.is_empty() {
        urls.push(String::new());
    }
    urls
}

/// Whether `text` starts with `scheme://` (RFC 3986 scheme characters).
fn starts_with_scheme(text: &str) -> bool {
    text.split_once("://").is_some_and(|(scheme, _)| {
        let mut chars = scheme.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    })
}

/// The indexes of one round through `count` addresses, beginning at `start`.
fn attempt_order(start: usize, count: usize) -> impl Iterator<Item = usize> {
    (0..count).map(move |offset| (start + offset) % count)
}

#[cfg(test)]
mod tests;
