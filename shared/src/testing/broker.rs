use std::time::Duration;

use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ExchangeKind};
use serde_json::json;

use super::probe::Probe;
use super::{block_on_cleanup, is_leftover, unique_name};
use crate::broker::BrokerSettings;
use crate::config::{ConfigSource, Lookup};
use crate::shutdown::Shutdown;

const PREFIX: &str = "msgkit_test_";

/// A RabbitMQ vhost created for one test (guest has full rights on it) and deleted, with
/// everything in it, when the value is dropped. Also the test's handle on the management API.
#[derive(Debug)]
pub struct TestBroker {
    vhost: String,
    amqp_addr: String,
    api: String,
    user: String,
    password: String,
    http: reqwest::Client,
}

impl TestBroker {
    /// Create a fresh vhost (and sweep vhosts left by killed runs).
    pub async fn create() -> Self {
        let env = ConfigSource::from_env();
        let broker = Self {
            vhost: unique_name(PREFIX),
            amqp_addr: env.string("TEST_AMQP_ADDR", "127.0.0.1:5672"),
            api: env.string("TEST_RABBITMQ_API", "http://127.0.0.1:15672"),
            user: env.string("TEST_RABBITMQ_USER", "guest"),
            password: env.string("TEST_RABBITMQ_PASSWORD", "guest"),
            http: reqwest::Client::new(),
        };
        broker.sweep_leftovers().await;
        broker
            .api_call(
                reqwest::Method::PUT,
                &format!("vhosts/{}", broker.vhost),
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("cannot create a test vhost (is `make stack` up?): {e}"));
        broker.grant(true).await;
        broker
    }

    /// The vhost's name.
    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    /// The AMQP URL of the vhost, as a service would get it in `AMQP_URL`.
    pub fn amqp_url(&self) -> String {
        self.amqp_url_via(&self.amqp_addr)
    }

    /// The AMQP URL of the vhost through another address (a [`super::TcpProxy`]).
    pub fn amqp_url_via(&self, addr: &str) -> String {
        format!(
            "amqp://{}:{}@{addr}/{}?heartbeat=5",
            self.user, self.password, self.vhost
        )
    }

    /// The vhost's `amqps://` URL: the stack's TLS listener ([`super::tls::amqps_addr`]).
    pub fn amqps_url(&self) -> String {
        format!(
            "amqps://{}:{}@{}/{}?heartbeat=5",
            self.user,
            self.password,
            super::tls::amqps_addr(),
            self.vhost
        )
    }

    /// The vhost's AMQP URL for another user.
    pub fn amqp_url_as(&self, user: &str, password: &str) -> String {
        format!(
            "amqp://{user}:{password}@{}/{}?heartbeat=5",
            self.amqp_addr, self.vhost
        )
    }

    /// Where the management API is and who may use it, for cleanups outside the test's runtime.
    pub(super) fn admin(&self) -> (String, String, String) {
        (self.api.clone(), self.user.clone(), self.password.clone())
    }

    /// The upstream address for a [`super::TcpProxy`].
    pub fn amqp_addr(&self) -> &str {
        &self.amqp_addr
    }

    /// Broker settings for the vhost, with fast reconnects for tests.
    pub fn settings(&self, connection_name: &str) -> BrokerSettings {
        self.settings_via(&self.amqp_addr, connection_name)
    }

    /// [`TestBroker::settings`] through another address (a [`super::TcpProxy`]).
    pub fn settings_via(&self, addr: &str, connection_name: &str) -> BrokerSettings {
        let mut settings = BrokerSettings::new(self.amqp_url_via(addr), connection_name);
        settings.reconnect_initial = Duration::from_millis(50);
        settings.reconnect_max = Duration::from_millis(500);
        settings
    }

    /// Give (or take away) guest's permissions on the vhost. Taking them away makes every new
    /// connection fail with `ACCESS_REFUSED`: the broker is "there" but unusable.
    pub async fn grant(&self, allowed: bool) {
        let pattern = if allowed { ".*" } else { "" };
        if allowed {
            self.api_call(
                reqwest::Method::PUT,
                &format!("permissions/{}/{}", self.vhost, self.user),
                Some(json!({"configure": pattern, "write": pattern, "read": pattern})),
            )
            .await
            .expect("set permissions");
        } else {
            self.api_call(
                reqwest::Method::DELETE,
                &format!("permissions/{}/{}", self.vhost, self.user),
                None,
            )
            .await
            .expect("revoke permissions");
        }
    }

    /// The management API's record of each open client connection to this vhost.
    async fn connection_records(&self) -> Vec<serde_json::Value> {
        let value = self
            .api_call(
                reqwest::Method::GET,
                &format!("vhosts/{}/connections", self.vhost),
                None,
            )
            .await
            .expect("list connections");
        value.as_array().cloned().unwrap_or_default()
    }

    /// Names of the open client connections to this vhost.
    pub async fn connections(&self) -> Vec<String> {
        self.connection_records()
            .await
            .iter()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// Each open client connection to this vhost: the name its client gave it (else the
    /// broker's) and whether it came over TLS.
    pub async fn connections_over_tls(&self) -> Vec<(String, bool)> {
        self.connection_records()
            .await
            .iter()
            .map(|c| {
                let name = c["user_provided_name"]
                    .as_str()
                    .or_else(|| c["name"].as_str())
                    .unwrap_or_default();
                (name.to_owned(), c["ssl"].as_bool().unwrap_or(false))
            })
            .collect()
    }

    /// Force-close every client connection to this vhost, as an operator would from the
    /// management UI. Returns how many were closed.
    pub async fn close_all_connections(&self) -> usize {
        let names = self.connections().await;
        for name in &names {
            let encoded = urlencode(name);
            let _ = self
                .api_call(
                    reqwest::Method::DELETE,
                    &format!("connections/{encoded}"),
                    None,
                )
                .await;
        }
        names.len()
    }

    /// The number of ready messages in `queue` now (a passive declare over AMQP, so unlike the
    /// management API's statistics it does not lag), or `None` if the queue does not exist.
    pub async fn queue_depth(&self, queue: &str) -> Option<u32> {
        let connection = self.settings("test/queue-depth").connect().await.ok()?;
        let channel = connection.create_channel().await.ok()?;
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .ok();
        let _ = connection.close(200, "done".into()).await;
        declared.map(|q| q.message_count())
    }

    /// Ready and unacknowledged messages of `queue` per the management API (its statistics lag
    /// by a few seconds), or `None` if it cannot say.
    pub async fn queue_totals(&self, queue: &str) -> Option<(u64, u64)> {
        let value = self
            .api_call(
                reqwest::Method::GET,
                &format!("queues/{}/{}", self.vhost, urlencode(queue)),
                None,
            )
            .await
            .ok()?;
        Some((
            value["messages_ready"].as_u64().unwrap_or(0),
            value["messages_unacknowledged"].as_u64().unwrap_or(0),
        ))
    }

    /// Open a connection to the vhost (panics on failure: test code).
    pub async fn connect(&self) -> Connection {
        self.settings("test")
            .connect()
            .await
            .expect("connect to test vhost")
    }

    /// A confirmed publisher on this vhost, `topology` declared.
    pub async fn publisher(&self, topology: &crate::Topology) -> crate::ConfirmedPublisher {
        crate::ConfirmedPublisher::open(
            &self.settings("test-publisher"),
            topology,
            &Shutdown::new(),
        )
        .await
        .expect("open a test publisher")
    }

    /// Take one message from `queue` (acked), waiting up to `deadline` for one to arrive;
    /// panics naming the queue when none does. Each attempt opens a fresh channel: until the
    /// services declare the queue, a get fails with NOT_FOUND, which closes the channel. A
    /// connection the broker closed (it answers some gets with a connection-level
    /// INTERNAL_ERROR while the queue's process restarts) is replaced, not retried on.
    pub async fn take_one(
        &self,
        queue: &str,
        deadline: Duration,
    ) -> lapin::message::BasicGetMessage {
        let connection = tokio::sync::Mutex::new(self.connect().await);
        super::wait_until_async(&format!("a message in {queue}"), deadline, || async {
            let mut connection = connection.lock().await;
            if !connection.status().connected() {
                *connection = self.settings("test/take-one").connect().await.ok()?;
            }
            let channel = connection.create_channel().await.ok()?;
            let options = lapin::options::BasicGetOptions { no_ack: true };
            channel
                .basic_get(queue.into(), options)
                .await
                .ok()
                .flatten()
        })
        .await
    }

    /// Start seeing every message published to `exchange` with a key matching `pattern`,
    /// through an exclusive queue bound now. Declares the exchange (topic, durable) if needed.
    pub async fn probe(&self, exchange: &str, pattern: &str) -> Probe {
        let connection = self.connect().await;
        let channel = connection.create_channel().await.expect("channel");
        channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare exchange");
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare probe queue");
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind probe queue");
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                "probe".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume probe queue");
        Probe::new(connection, channel, consumer)
    }

    pub(super) async fn api_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        api_call(
            &self.http,
            &self.api,
            &self.user,
            &self.password,
            method,
            path,
            body,
        )
        .await
    }

    async fn sweep_leftovers(&self) {
        let Ok(vhosts) = self.api_call(reqwest::Method::GET, "vhosts", None).await else {
            return;
        };
        let names = vhosts
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str())
            .filter(|name| is_leftover(PREFIX, name))
            .map(str::to_owned)
            .collect::<Vec<_>>();
        for name in names {
            let _ = self
                .api_call(reqwest::Method::DELETE, &format!("vhosts/{name}"), None)
                .await;
        }
    }
}

async fn api_call(
    http: &reqwest::Client,
    api: &str,
    user: &str,
    password: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, String> {
    let mut request = http
        .request(method, format!("{api}/api/{path}"))
        .basic_auth(user, Some(password))
        .timeout(Duration::from_secs(30));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {text}"));
    }
    if text.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

/// Percent-encode a path segment for the management API (connection names contain spaces,
/// `->` and colons).
fn urlencode(segment: &str) -> String {
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

impl Drop for TestBroker {
    fn drop(&mut self) {
        let (api, user, password, vhost) = (
            self.api.clone(),
            self.user.clone(),
            self.password.clone(),
            self.vhost.clone(),
        );
        block_on_cleanup(async move {
            // A fresh client: the test's one is bound to the test's runtime.
            let http = reqwest::Client::new();
            // RabbitMQ (3.10 up to at least 4.2, rabbitmq-server#16652) can lose its
            // dead-letter worker supervisor for good when a quorum queue with at-least-once
            // dead-lettering is deleted while it is still starting: every such queue on the
            // node is broken until a restart. A test's services may still be (re)declaring
            // their queues when it ends (a failed test never stops them), so first shut the
            // vhost to new connections, let declarations in flight finish, then delete it.
            let _ = api_call(
                &http,
                &api,
                &user,
                &password,
                reqwest::Method::DELETE,
                &format!("permissions/{vhost}/{user}"),
                None,
            )
            .await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Err(error) = api_call(
                &http,
                &api,
                &user,
                &password,
                reqwest::Method::DELETE,
                &format!("vhosts/{vhost}"),
                None,
            )
            .await
            {
                eprintln!("could not delete test vhost {vhost}: {error}");
            }
        });
    }
}
