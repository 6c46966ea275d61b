use std::time::Duration;

use msgkit::service::ServiceSettings;
use msgkit::testing::{TcpProxy, TestBroker, TestDatabase};
use msgkit::{BrokerSettings, Shutdown};
use order::startup::build;
use serde_json::Value;
use sqlx::PgPool;

pub const DEADLINE: Duration = Duration::from_secs(30);

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub pool: PgPool,
    pub broker: TestBroker,
    _db: TestDatabase,
    pub proxy: Option<TcpProxy>,
    shutdown: Shutdown,
}

/// Settings pointing at this test's database and vhost, HTTP on a free port, the harness's
/// fast retries and relay (3 attempts for the saga consumer).
pub fn test_settings(db: &TestDatabase, broker: BrokerSettings) -> ServiceSettings {
    let mut settings = msgkit::testing::service_settings("order", "orders", db, broker);
    settings.source.set("ORDER_RETRY_MAX_ATTEMPTS", "3");
    settings
}

/// The order service on a random port, talking to the broker directly.
pub async fn spawn_app() -> TestApp {
    spawn(false, &[]).await
}

/// The order service with these settings on top of the test's.
pub async fn spawn_app_with(settings: &[(&str, &str)]) -> TestApp {
    spawn(false, settings).await
}

/// The order service whose broker connection goes through a cuttable proxy.
pub async fn spawn_app_behind_proxy() -> TestApp {
    spawn(true, &[]).await
}

async fn spawn(behind_proxy: bool, extra: &[(&str, &str)]) -> TestApp {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let proxy = if behind_proxy {
        Some(TcpProxy::start(broker.amqp_addr()).await.expect("proxy"))
    } else {
        None
    };
    let broker_settings = match &proxy {
        Some(proxy) => broker.settings_via(&proxy.addr(), "order/outbox-relay"),
        None => broker.settings("order/outbox-relay"),
    };
    let mut settings = test_settings(&db, broker_settings);
    for (name, value) in extra {
        settings.source.set(*name, *value);
    }
    let service = build(settings).await.expect("build the order service");
    let address = format!("http://{}", service.local_addr().expect("addr"));
    let pool = service.pool().clone();
    let shutdown = Shutdown::new();
    tokio::spawn(service.run_until_stopped(shutdown.clone()));
    TestApp {
        address,
        client: reqwest::Client::new(),
        pool,
        broker,
        _db: db,
        proxy,
        shutdown,
    }
}

impl TestApp {
    pub async fn post_order(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}/orders", self.address))
            .json(body)
            .send()
            .await
            .expect("POST /orders")
    }

    pub async fn post_raw(
        &self,
        body: impl Into<reqwest::Body>,
        content_type: &str,
    ) -> reqwest::Response {
        self.client
            .post(format!("{}/orders", self.address))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST /orders")
    }

    pub async fn get_order(&self, id: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/orders/{id}", self.address))
            .send()
            .await
            .expect("GET /orders/{id}")
    }

    /// Rows in a table of the service's schema.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&self.pool)
            .await
            .expect("count rows")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

pub fn valid_order() -> Value {
    serde_json::json!({"customer_id": "c-1", "items": [{"sku": "SKU-1", "quantity": 2}]})
}

/// The `correlation_id`s (order ids) of deliveries, as strings.
pub fn correlation_ids(
    deliveries: &[lapin::message::Delivery],
) -> std::collections::HashSet<String> {
    deliveries
        .iter()
        .filter_map(|d| {
            d.properties
                .correlation_id()
                .as_ref()
                .map(|c| c.to_string())
        })
        .collect()
}
