use std::time::Duration;

use chrono::{DateTime, Utc};
use msgkit::Shutdown;
use msgkit::testing::{
    Probe, TestBroker, TestDatabase, metric_value, scrape, service_settings, wait_until_async,
};
use risk::startup::{NAME, build};
use serde_json::{Value, json};
use sqlx::PgPool;

pub const DEADLINE: Duration = Duration::from_secs(30);

/// The secret the test service signs and checks tokens with.
pub const TOKEN_SECRET: &str = "risk-test-secret-of-at-least-32-bytes";

/// The risk service on a free port, in this test's database and vhost, running until dropped.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub pool: PgPool,
    /// Every `risk.alert` published from the moment the service was built.
    pub alerts: Probe,
    pub broker: TestBroker,
    _db: TestDatabase,
    shutdown: Shutdown,
}

pub async fn spawn_app() -> TestApp {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let settings = service_settings(NAME, NAME, &db, broker.settings(NAME));
    let service = build(settings).await.expect("build the risk service");
    let address = format!("http://{}", service.local_addr().expect("addr"));
    let pool = service.pool().clone();
    let alerts = broker.probe("events", "risk.alert").await;
    let shutdown = Shutdown::new();
    tokio::spawn(service.run_until_stopped(shutdown.clone()));
    TestApp {
        address,
        client: reqwest::Client::new(),
        pool,
        alerts,
        broker,
        _db: db,
        shutdown,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// The engine's default rule as `POST /rules` takes it.
pub fn default_rule_json() -> Value {
    serde_json::to_value(risk::default_rule()).expect("a rule is JSON")
}

/// A transaction body as an app sends it.
pub fn transaction(id: &str, amount: &str, location: &str, at: DateTime<Utc>) -> Value {
    json!({
        "transaction_id": id,
        "user_id": "u-1",
        "amount": amount,
        "currency": "CNY",
        "location": location,
        "occurred_at": at.to_rfc3339(),
    })
}

impl TestApp {
    /// A token for an operator (every user's alerts), valid for ten minutes.
    pub fn operator_token(&self) -> String {
        let key = msgkit::auth::TokenKey::new(TOKEN_SECRET).expect("a long enough secret");
        let claims = msgkit::auth::Claims::new(
            "operator",
            msgkit::auth::Role::Operator,
            Utc::now(),
            chrono::TimeDelta::minutes(10),
        );
        key.issue(&claims)
    }

    pub async fn post_transaction(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}/transactions", self.address))
            .json(body)
            .send()
            .await
            .expect("POST /transactions")
    }

    /// `method path` with a JSON body (or none).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let request = self
            .client
            .request(method, format!("{}{path}", self.address));
        let request = match body {
            Some(body) => request.json(body),
            None => request,
        };
        request.send().await.expect("the request is sent")
    }

    pub async fn alerts_of(&self, user: &str) -> Vec<Value> {
        let mut url = reqwest::Url::parse(&format!("{}/alerts", self.address)).expect("URL");
        url.query_pairs_mut().append_pair("user", user);
        self.client
            .get(url)
            .send()
            .await
            .expect("GET /alerts")
            .json()
            .await
            .expect("a JSON list")
    }

    /// Rows of the outbox with this message type: what the service published or will.
    pub async fn outbox_count(&self, message_type: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM msgkit_outbox WHERE message_type = $1")
            .bind(message_type)
            .fetch_one(&self.pool)
            .await
            .expect("count outbox rows")
    }

    /// `msgkit_late_events_total` of the risk queue's transactions.
    pub async fn late_transactions(&self) -> Option<f64> {
        let exposition = scrape(&self.client, &self.address).await;
        metric_value(
            &exposition,
            "msgkit_late_events_total",
            &[("queue", "risk"), ("type", "transaction.recorded")],
        )
    }

    /// A sample of the service's `/metrics`, by name and labels.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let exposition = scrape(&self.client, &self.address).await;
        metric_value(&exposition, name, labels)
    }

    /// Waits until the consumer has applied `count` transactions (its inbox rows).
    pub async fn wait_until_handled(&self, count: i64) {
        wait_until_async(
            &format!("{count} transaction(s) handled by the risk consumer"),
            DEADLINE,
            || async {
                let handled: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM msgkit_inbox \
                     WHERE consumer = 'risk' AND message_type = 'transaction.recorded'",
                )
                .fetch_one(&self.pool)
                .await
                .expect("count inbox rows");
                (handled >= count).then_some(())
            },
        )
        .await;
    }
}
