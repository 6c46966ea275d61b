use std::time::Duration;

use chrono::{DateTime, Utc};
use contracts::{GatewayOutcome, PaymentCallback, PaymentFailed, PaymentSucceeded, event_type};
use msgkit::clock::Clock;
use msgkit::message::OutgoingMessage;
use msgkit::service::ServiceError;
use msgkit::testing::{
    Probe, TestBroker, TestDatabase, metric_value, scrape, service_settings, wait_until_async,
};
use msgkit::{ConfirmedPublisher, EventType, Shutdown};
use reconcile::http::ReconciliationView;
use reconcile::startup::{NAME, build_with_clock};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

pub const DEADLINE: Duration = Duration::from_secs(30);

/// The token secret every test service gets.
pub const TEST_SECRET: &str = "a local test secret, 32 bytes or more";

/// A token for `sub` in `role`, valid for 15 minutes, signed with [`TEST_SECRET`].
pub fn token(sub: &str, role: msgkit::auth::Role) -> String {
    msgkit::auth::TokenKey::new(TEST_SECRET)
        .expect("a long enough secret")
        .issue(&msgkit::auth::Claims::new(
            sub,
            role,
            Utc::now(),
            chrono::TimeDelta::minutes(15),
        ))
}

/// Timers looked for often, so that a moved clock fires them within a tenth of a second.
pub const FAST_TIMERS: (&str, &str) = ("TIMER_POLL_INTERVAL_MS", "100");

/// The reconcile service on a free port, in this test's database and vhost, on a clock the
/// test moves, running until dropped.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub pool: PgPool,
    pub clock: Clock,
    /// When the test began, by the service's clock: `at(1.0)` is a second later.
    pub t0: DateTime<Utc>,
    /// Every `reconcile.*` event published from the moment the service was built.
    pub events: Probe,
    broker: TestBroker,
    publisher: ConfirmedPublisher,
    _db: TestDatabase,
    shutdown: Shutdown,
    _running: tokio::task::JoinHandle<Result<(), ServiceError>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// The service with these settings over the test defaults.
pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let mut settings = service_settings(NAME, NAME, &db, broker.settings(NAME));
    settings.source.set(FAST_TIMERS.0, FAST_TIMERS.1);
    settings.source.set("RECONCILE_TOKEN_SECRET", TEST_SECRET);
    for (name, value) in extra {
        settings.source.set(*name, *value);
    }
    let clock = Clock::system();
    let service = build_with_clock(settings, clock.clone())
        .await
        .expect("build the reconcile service");
    let address = format!("http://{}", service.local_addr().expect("addr"));
    let pool = service.pool().clone();
    let events = broker.probe("events", "reconcile.#").await;
    let publisher = broker.publisher(&contracts::topology()).await;
    let shutdown = Shutdown::new();
    let running = tokio::spawn(service.run_until_stopped(shutdown.clone()));
    TestApp {
        address,
        client: reqwest::Client::new(),
        pool,
        t0: clock.now(),
        clock,
        events,
        broker,
        publisher,
        _db: db,
        shutdown,
        _running: running,
    }
}

pub fn succeeded(order_id: Uuid, amount_cents: i64) -> PaymentSucceeded {
    PaymentSucceeded {
        order_id,
        charge_id: format!("ch-{order_id}"),
        amount_cents,
        customer_id: "c-1".into(),
        location: None,
        occurred_at: None,
    }
}

pub fn failed(order_id: Uuid, amount_cents: i64) -> PaymentFailed {
    PaymentFailed {
        order_id,
        reason: "card declined".into(),
        amount_cents: Some(amount_cents),
    }
}

pub fn callback(
    callback_id: &str,
    order_id: Uuid,
    outcome: GatewayOutcome,
    amount_cents: i64,
) -> PaymentCallback {
    PaymentCallback {
        callback_id: callback_id.into(),
        order_id,
        charge_id: None,
        outcome,
        amount_cents,
        known_order: true,
        received_at: Utc::now(),
    }
}

/// Publish `payload` as payment does: correlated by its order, from `payment`.
pub async fn publish_to<P: Serialize>(
    publisher: &ConfirmedPublisher,
    event: EventType<P>,
    order_id: Uuid,
    payload: &P,
) {
    let message =
        OutgoingMessage::event(event.name(), &order_id.to_string(), "payment", payload).unwrap();
    assert!(publisher.publish(&message).await.unwrap().is_confirmed());
}

/// How many messages of the three input types the consumer has handled (its inbox rows).
pub async fn handled(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM msgkit_inbox WHERE consumer = 'reconcile' \
         AND message_type IN ('payment.succeeded', 'payment.failed', 'payment.callback')",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// An order's row, if decided.
pub async fn row_of(pool: &PgPool, order_id: Uuid) -> Option<(String, String)> {
    sqlx::query_as("SELECT outcome, status FROM reconciliations WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// Rows of the outbox with this message type: what the service published or will.
pub async fn outbox_count(pool: &PgPool, message_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM msgkit_outbox WHERE message_type = $1")
        .bind(message_type)
        .fetch_one(pool)
        .await
        .unwrap()
}

impl TestApp {
    /// Another publisher on this test's vhost, as payment publishes.
    pub async fn publisher(&self) -> ConfirmedPublisher {
        self.broker.publisher(&contracts::topology()).await
    }

    /// Publish one side and wait until the consumer has handled it (and all before it).
    pub async fn send<P: Serialize>(&self, event: EventType<P>, order_id: Uuid, payload: &P) {
        let before = handled(&self.pool).await;
        publish_to(&self.publisher, event, order_id, payload).await;
        self.wait_until_handled(before + 1).await;
    }

    pub async fn paid(&self, order_id: Uuid, amount_cents: i64) {
        let payment = succeeded(order_id, amount_cents);
        self.send(event_type::PAYMENT_SUCCEEDED, order_id, &payment)
            .await;
    }

    pub async fn called_back(&self, callback: &PaymentCallback) {
        self.send(event_type::PAYMENT_CALLBACK, callback.order_id, callback)
            .await;
    }

    pub async fn wait_until_handled(&self, count: i64) {
        wait_until_async(
            &format!("{count} side(s) handled by the reconcile consumer"),
            DEADLINE,
            || async { (handled(&self.pool).await >= count).then_some(()) },
        )
        .await;
    }

    /// Move the service's clock to `secs` after [`TestApp::t0`] (never back: real time
    /// passes too).
    pub fn at(&self, secs: f64) {
        let target = self.t0 + chrono::Duration::milliseconds((secs * 1000.0) as i64);
        if let Ok(ahead) = (target - self.clock.now()).to_std() {
            self.clock.advance(ahead);
        }
    }

    /// Seconds since [`TestApp::t0`] of `instant`.
    pub fn secs(&self, instant: DateTime<Utc>) -> f64 {
        (instant - self.t0).num_milliseconds() as f64 / 1000.0
    }

    /// Waits until `order_id` has the outcome `outcome`.
    pub async fn wait_for_outcome(&self, order_id: Uuid, outcome: &str) -> ReconciliationView {
        wait_until_async(&format!("order {order_id} {outcome}"), DEADLINE, || async {
            let row = row_of(&self.pool, order_id).await;
            (row.is_some_and(|(got, _)| got == outcome)).then_some(())
        })
        .await;
        self.reconciliation(order_id).await
    }

    /// `order_id`'s row as `GET /reconciliation` shows it.
    pub async fn reconciliation(&self, order_id: Uuid) -> ReconciliationView {
        let rows: Vec<ReconciliationView> = self.get_json("/reconciliation").await;
        rows.into_iter()
            .find(|row| row.order_id == order_id)
            .unwrap_or_else(|| panic!("order {order_id} not listed"))
    }

    /// `GET path` as an operator (the API is for operators).
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.get_as(
            Some(&token("test-operator", msgkit::auth::Role::Operator)),
            path,
        )
        .await
    }

    /// `GET path` with `Authorization: Bearer <token>` if given.
    pub async fn get_as(&self, token: Option<&str>, path: &str) -> reqwest::Response {
        let mut request = self.client.get(format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("the request is sent")
    }

    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("JSON")
    }

    /// A sample of the service's `/metrics`, by name and labels.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let exposition = scrape(&self.client, &self.address).await;
        metric_value(&exposition, name, labels)
    }

    /// The event types and orders published so far, once `count` have been. Each is one the
    /// contract declares for reconcile (`contracts::PUBLISHERS`, which the AsyncAPI document
    /// describes).
    pub async fn published(&mut self, count: usize) -> Vec<(String, Uuid, String)> {
        let got = self
            .events
            .collect_until(&format!("{count} reconcile event(s)"), DEADLINE, |got| {
                got.len() >= count
            })
            .await;
        got.iter()
            .map(|delivery| {
                let app_id = delivery.properties.app_id().as_ref().map(|a| a.as_str());
                assert_eq!(app_id, Some(NAME));
                assert!(
                    contracts::publishes(NAME, delivery.routing_key.as_str()),
                    "{} is not declared for {NAME} in contracts::PUBLISHERS",
                    delivery.routing_key
                );
                let payload: contracts::Reconciliation =
                    serde_json::from_slice(&delivery.data).unwrap();
                (
                    delivery.routing_key.as_str().to_owned(),
                    payload.order_id,
                    payload.outcome,
                )
            })
            .collect()
    }
}
