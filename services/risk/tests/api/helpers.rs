use std::time::Duration;

use chrono::{DateTime, Utc};
use msgkit::Shutdown;
use msgkit::auth::{Claims, Role, TokenKey};
use msgkit::service::{ServiceError, ServiceSettings};
use msgkit::testing::{
    Probe, TestBroker, TestDatabase, metric_value, scrape, service_settings, wait_until_async,
};
use risk::startup::{NAME, build};
use serde_json::{Value, json};
use sqlx::PgPool;

pub const DEADLINE: Duration = Duration::from_secs(30);

/// The stream tokens' secret every test service gets (unless a test says otherwise).
pub const TEST_SECRET: &str = "a local test secret, 32 bytes or more";

/// The risk service on a free port, in this test's database and vhost, running until dropped.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub pool: PgPool,
    /// Every `risk.alert` published from the moment the service was built.
    pub alerts: Probe,
    pub broker: TestBroker,
    db: TestDatabase,
    shutdown: Shutdown,
    running: Option<tokio::task::JoinHandle<Result<(), ServiceError>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// The service with these settings over the test defaults (e.g. `FAULT_*`, `RETRY_*`).
pub async fn spawn_app_with_config(extra: &[(&str, &str)]) -> TestApp {
    spawn_app_with(|settings| {
        for (name, value) in extra {
            settings.source.set(*name, *value);
        }
        // The relay's settings were read with the rest; the consumer's are read at build.
        settings.relay =
            msgkit::RelayConfig::from_config(&settings.source, NAME).expect("valid relay settings");
    })
    .await
}

/// Where tests point risk's reconciliation proxy unless they start a reconcile service: a
/// port nothing listens on, so that no test reaches a reconcile run by someone else.
pub const NO_RECONCILE: &str = "http://127.0.0.1:9";

/// [`spawn_app`] with the settings changed first (the token secret is set before `change`).
pub async fn spawn_app_with(change: impl FnOnce(&mut ServiceSettings)) -> TestApp {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    spawn_app_on(db, broker, change).await
}

/// [`spawn_app_with`] in this database and vhost (another service of the test may use them
/// too, in its own schema).
pub async fn spawn_app_on(
    db: TestDatabase,
    broker: TestBroker,
    change: impl FnOnce(&mut ServiceSettings),
) -> TestApp {
    let mut settings = service_settings(NAME, NAME, &db, broker.settings(NAME));
    settings.source.set("RISK_TOKEN_SECRET", TEST_SECRET);
    settings.source.set("RISK_RECONCILE_URL", NO_RECONCILE);
    change(&mut settings);
    let service = build(settings).await.expect("build the risk service");
    let address = format!("http://{}", service.local_addr().expect("addr"));
    let pool = service.pool().clone();
    let alerts = broker.probe("events", "risk.alert").await;
    let shutdown = Shutdown::new();
    let running = tokio::spawn(service.run_until_stopped(shutdown.clone()));
    TestApp {
        address,
        client: reqwest::Client::new(),
        pool,
        alerts,
        broker,
        db,
        shutdown,
        running: Some(running),
    }
}

/// Another risk service on the same database and vhost: a second replica.
pub struct Replica {
    pub address: String,
    shutdown: Shutdown,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// A token for `sub` in `role`, valid for 15 minutes, signed with [`TEST_SECRET`].
pub fn token(sub: &str, role: Role) -> String {
    let key = TokenKey::new(TEST_SECRET).expect("a long enough secret");
    key.issue(&Claims::new(
        sub,
        role,
        Utc::now(),
        chrono::TimeDelta::minutes(15),
    ))
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
    /// Start a second risk service on this app's database and vhost.
    pub async fn replica(&self) -> Replica {
        let mut settings = service_settings(NAME, NAME, &self.db, self.broker.settings(NAME));
        settings.source.set("RISK_TOKEN_SECRET", TEST_SECRET);
        settings.source.set("RISK_RECONCILE_URL", NO_RECONCILE);
        let service = build(settings).await.expect("build a second risk service");
        let address = format!("http://{}", service.local_addr().expect("addr"));
        let shutdown = Shutdown::new();
        tokio::spawn(service.run_until_stopped(shutdown.clone()));
        Replica { address, shutdown }
    }

    /// Trigger the service's shutdown (as SIGTERM does) and wait until it has stopped, for
    /// at most `deadline`; how long it took.
    pub async fn stop(&mut self, deadline: Duration) -> Duration {
        let started = std::time::Instant::now();
        self.shutdown.trigger();
        let running = self.running.take().expect("the service runs");
        tokio::time::timeout(deadline, running)
            .await
            .expect("the service stops within its deadline")
            .expect("the service task did not panic")
            .expect("the service stopped cleanly");
        started.elapsed()
    }

    pub async fn post_transaction(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}/transactions", self.address))
            .json(body)
            .send()
            .await
            .expect("POST /transactions")
    }

    /// `method path` with a JSON body (or none), as an operator (the rules, tokens and
    /// reconciliation endpoints need one).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let operator = token("test-operator", Role::Operator);
        self.send_as(Some(&operator), method, path, body).await
    }

    /// `method path` with a JSON body (or none) and `Authorization: Bearer <token>` if given.
    pub async fn send_as(
        &self,
        token: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
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
            .bearer_auth(token("test-operator", Role::Operator))
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

    /// Posts the transactions in this order, each accepted. No need to wait between them: the
    /// engine applies a user's transactions in the order they were recorded.
    pub async fn post_all(&self, transactions: &[&Value]) {
        for transaction in transactions {
            let status = self.post_transaction(transaction).await.status();
            assert_eq!(status, 202, "{transaction}");
        }
    }

    /// Waits until `user` has an alert; all of theirs.
    pub async fn wait_for_alerts(&self, user: &str) -> Vec<Value> {
        wait_until_async(&format!("an alert for {user}"), DEADLINE, || async {
            let alerts = self.alerts_of(user).await;
            (!alerts.is_empty()).then_some(alerts)
        })
        .await
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
