use std::time::Duration;

use contracts::InventoryReserved;
use contracts::event_type::INVENTORY_RESERVED;
use msgkit::Shutdown;
use msgkit::clock::Clock;
use msgkit::outbox::{self, OutboxMessage};
use msgkit::service::{ServiceError, ServiceSettings};
use msgkit::testing::{
    Probe, TestBroker, TestDatabase, metric_value, scrape, service_settings, wait_until_async,
};
use payment::signature::{CallbackKey, SIGNATURE_HEADER};
use payment::startup::{NAME, build_with_clock};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

pub const DEADLINE: Duration = Duration::from_secs(30);

/// The callback secret every test service gets.
pub const TEST_SECRET: &str = "a local test gateway secret, 32 bytes or more";

/// Settings every test starts from: an instant gateway calling back after 200 ms (time for the handler to commit the payment), no jitter.
pub const FAST: &[(&str, &str)] = &[
    ("GATEWAY_LATENCY_MS", "0"),
    ("GATEWAY_CALLBACK_SECRET", TEST_SECRET),
    ("GATEWAY_CALLBACK_DELAY_MS", "200"),
    ("GATEWAY_CALLBACK_JITTER_MS", "0"),
    ("GATEWAY_CALLBACK_RETRY_MS", "50"),
];

/// The payment service on a free port, in this test's database and vhost, until dropped.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub pool: PgPool,
    /// Every `payment.callback` published from the moment the service was built.
    pub published: Probe,
    pub broker: TestBroker,
    pub db: TestDatabase,
    shutdown: Shutdown,
    running: Option<tokio::task::JoinHandle<Result<(), ServiceError>>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// The service with [`FAST`] and then `extra` (which wins).
pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    spawn_app_with_clock(extra, Clock::system()).await
}

/// [`spawn_app_with`], planning and sending callbacks by `clock` (which the test moves).
pub async fn spawn_app_with_clock(extra: &[(&str, &str)], clock: Clock) -> TestApp {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let service = build_with_clock(settings(&db, &broker, extra), clock)
        .await
        .expect("build the payment service");
    let address = format!("http://{}", service.local_addr().expect("addr"));
    let pool = service.pool().clone();
    let published = broker.probe("events", "payment.callback").await;
    let shutdown = Shutdown::new();
    let running = tokio::spawn(service.run_until_stopped(shutdown.clone()));
    TestApp {
        address,
        client: reqwest::Client::new(),
        pool,
        published,
        broker,
        db,
        shutdown,
        running: Some(running),
    }
}

/// The service's settings in this test's database and vhost: [`FAST`], then `extra`.
fn settings(db: &TestDatabase, broker: &TestBroker, extra: &[(&str, &str)]) -> ServiceSettings {
    let mut settings = service_settings(NAME, NAME, db, broker.settings(NAME));
    for (name, value) in FAST.iter().chain(extra) {
        settings.source.set(*name, *value);
    }
    settings
}

/// The signature header value the gateway would send for `body`.
pub fn sign(body: &str) -> String {
    CallbackKey::new(TEST_SECRET).unwrap().sign(body.as_bytes())
}

/// Ask the service to charge `amount_cents` for `order_id`, as inventory does: an
/// `inventory.reserved` through the outbox.
pub async fn reserve(pool: &PgPool, order_id: Uuid, amount_cents: i64) {
    let event = InventoryReserved {
        order_id,
        customer_id: "c-1".into(),
        amount_cents,
        location: None,
    };
    let message = OutboxMessage::of(INVENTORY_RESERVED, order_id.to_string(), &event).unwrap();
    let mut tx = pool.begin().await.unwrap();
    outbox::enqueue(&mut tx, &message).await.unwrap();
    tx.commit().await.unwrap();
}

/// One row of `payment_callbacks`, as received.
#[derive(Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Received {
    pub callback_id: String,
    pub order_id: Uuid,
    pub charge_id: Option<String>,
    pub outcome: String,
    pub amount_cents: i64,
    pub known_order: bool,
}

/// One row of `gateway_callbacks`, as the gateway planned and sent it.
#[derive(Debug, sqlx::FromRow)]
pub struct Owed {
    pub order_id: Uuid,
    pub amount_cents: i64,
    pub charged_amount_cents: i64,
    pub copies: i32,
    pub lost: bool,
    pub attempts: i32,
    pub sent: bool,
}

impl TestApp {
    /// Trigger the service's shutdown (as SIGTERM does) and wait until it has stopped, for
    /// at most `deadline`.
    pub async fn stop(&mut self, deadline: Duration) {
        self.shutdown.trigger();
        let running = self.running.take().expect("the service runs");
        tokio::time::timeout(deadline, running)
            .await
            .expect("the service stops within its deadline")
            .expect("the service task did not panic")
            .expect("the service stopped cleanly");
    }

    /// Stop the service (as [`TestApp::stop`]) and start it again on the same database and
    /// vhost with [`FAST`] and then `extra`, as an operator would after changing a setting.
    pub async fn restart_with(&mut self, extra: &[(&str, &str)]) {
        self.stop(DEADLINE).await;
        let service = build_with_clock(settings(&self.db, &self.broker, extra), Clock::system())
            .await
            .expect("restart the payment service");
        self.address = format!("http://{}", service.local_addr().expect("addr"));
        // The stopped service closed its pool.
        self.pool = service.pool().clone();
        self.shutdown = Shutdown::new();
        self.running = Some(tokio::spawn(
            service.run_until_stopped(self.shutdown.clone()),
        ));
    }

    pub async fn received(&self) -> Vec<Received> {
        sqlx::query_as(
            "SELECT callback_id, order_id, charge_id, outcome, amount_cents, known_order \
             FROM payment_callbacks ORDER BY received_at",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    pub async fn owed(&self) -> Vec<Owed> {
        sqlx::query_as(
            "SELECT order_id, amount_cents, charged_amount_cents, copies, lost, \
             attempts, sent_at IS NOT NULL AS sent FROM gateway_callbacks ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// Waits until `count` callbacks have been received.
    pub async fn wait_for_received(&self, count: usize) -> Vec<Received> {
        wait_until_async(
            &format!("{count} callback(s) received"),
            DEADLINE,
            || async {
                let received = self.received().await;
                (received.len() >= count).then_some(received)
            },
        )
        .await
    }

    /// Waits until every owed callback not lost is marked sent.
    pub async fn wait_for_sent(&self, count: usize) -> Vec<Owed> {
        wait_until_async(
            &format!("{count} callback(s) owed and sent"),
            DEADLINE,
            || async {
                let owed = self.owed().await;
                (owed.len() >= count && owed.iter().all(|c| c.sent || c.lost)).then_some(owed)
            },
        )
        .await
    }

    /// Outbox rows of this message type: what the service published or will.
    pub async fn outbox_count(&self, message_type: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM msgkit_outbox WHERE message_type = $1")
            .bind(message_type)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// `POST /payments/callback` with this body and signature header (if any).
    pub async fn post_callback(&self, body: &str, signature: Option<&str>) -> reqwest::Response {
        let request = self
            .client
            .post(format!("{}/payments/callback", self.address))
            .header("content-type", "application/json")
            .body(body.to_owned());
        let request = match signature {
            Some(signature) => request.header(SIGNATURE_HEADER, signature),
            None => request,
        };
        request.send().await.expect("POST /payments/callback")
    }

    /// A sample of the service's `/metrics`, by name and labels.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let exposition = scrape(&self.client, &self.address).await;
        metric_value(&exposition, name, labels)
    }

    /// The next `payment.callback` published, decoded. It comes from payment, as the contract
    /// declares (`contracts::PUBLISHERS`, which the AsyncAPI document describes).
    pub async fn next_published(&mut self) -> Value {
        let delivery = self
            .published
            .next(DEADLINE)
            .await
            .expect("a payment.callback published");
        let app_id = delivery.properties.app_id().as_ref().map(|a| a.as_str());
        assert!(
            contracts::publishes(app_id.unwrap_or_default(), "payment.callback"),
            "payment.callback from {app_id:?} is not declared in contracts::PUBLISHERS"
        );
        serde_json::from_slice(&delivery.data).unwrap()
    }
}
