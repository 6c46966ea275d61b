use std::time::Duration;

use chrono::{DateTime, Utc};
use contracts::event_type::{PAYMENT_REFUNDED, PAYMENT_SUCCEEDED};
use contracts::{PaymentRefunded, PaymentSucceeded};
use msgkit::auth::{Claims, Role, TokenKey};
use msgkit::service::ServiceError;
use msgkit::testing::{TestBroker, TestDatabase, service_settings, wait_until_async};
use msgkit::topology::{ARCHIVE_STREAM, Archive};
use msgkit::{ConfirmedPublisher, EventType, OutgoingMessage, Shutdown, Topology};
use rebate::startup::{NAME, build};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

pub const DEADLINE: Duration = Duration::from_secs(30);

/// The stream tokens' secret every test service gets.
pub const TEST_SECRET: &str = "a local test secret, 32 bytes or more";

/// Writes events to the archive stream the way the outbox relay does (a confirmed publish of
/// the event's message through the default exchange), in order.
pub struct Events {
    publisher: ConfirmedPublisher,
}

impl Events {
    /// A publisher on the test's vhost, with the archive declared.
    pub async fn open(broker: &TestBroker) -> Self {
        let topology = Topology::default().with_archive(Archive::default());
        Self {
            publisher: broker.publisher(&topology).await,
        }
    }

    /// Archive an event of `event`'s type; the message, to write it again.
    pub async fn publish<P: Serialize>(
        &self,
        event: EventType<P>,
        correlation: Uuid,
        payload: &P,
    ) -> OutgoingMessage {
        let mut message =
            OutgoingMessage::event(event.name(), &correlation.to_string(), "payment", payload)
                .expect("a payload is JSON");
        message.exchange = String::new();
        message.routing_key = ARCHIVE_STREAM.to_owned();
        self.publish_message(&message).await;
        message
    }

    /// Archive `message` (again).
    pub async fn publish_message(&self, message: &OutgoingMessage) {
        let outcome = self.publisher.publish(message).await.expect("publish");
        assert!(outcome.is_confirmed(), "archived: {outcome:?}");
    }

    pub async fn paid(&self, payment: &PaymentSucceeded) -> OutgoingMessage {
        self.publish(PAYMENT_SUCCEEDED, payment.order_id, payment)
            .await
    }

    pub async fn refunded(&self, refund: &PaymentRefunded) -> OutgoingMessage {
        self.publish(PAYMENT_REFUNDED, refund.order_id, refund)
            .await
    }
}

pub fn payment(customer: &str, amount_cents: i64, at: DateTime<Utc>) -> PaymentSucceeded {
    let order_id = Uuid::now_v7();
    PaymentSucceeded {
        order_id,
        charge_id: format!("ch-{order_id}"),
        amount_cents,
        customer_id: customer.to_owned(),
        location: None,
        occurred_at: Some(at),
    }
}

pub fn refund_of(payment: &PaymentSucceeded, at: DateTime<Utc>) -> PaymentRefunded {
    PaymentRefunded {
        order_id: payment.order_id,
        customer_id: payment.customer_id.clone(),
        charge_id: payment.charge_id.clone(),
        refund_id: format!("re-{}", payment.order_id),
        amount_cents: payment.amount_cents,
        occurred_at: at,
    }
}

/// The rebate service on a free port, in this test's database and vhost, running until
/// dropped.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub pool: PgPool,
    pub events: Events,
    pub broker: TestBroker,
    /// The first replica (the one `address` is).
    pub service: Running,
    pub db: TestDatabase,
}

pub async fn spawn_app() -> TestApp {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let events = Events::open(&broker).await;
    spawn_app_on(db, broker, events).await
}

/// The service's settings for this test's database and vhost.
fn settings(db: &TestDatabase, broker: &TestBroker) -> msgkit::service::ServiceSettings {
    let mut settings = service_settings(NAME, NAME, db, broker.settings(NAME));
    settings.archive = Some(Archive::default());
    settings.source.set("REBATE_TOKEN_SECRET", TEST_SECRET);
    // A standby tries to take over this often; the active one reports and polls for rebuilds.
    settings.source.set("PROJECTION_TAKEOVER_POLL_MS", "200");
    settings.source.set("PROJECTION_HEARTBEAT_MS", "200");
    settings
}

/// A running rebate service: its address, stopped when dropped.
pub struct Running {
    pub address: String,
    shutdown: Shutdown,
    running: Option<tokio::task::JoinHandle<Result<(), ServiceError>>>,
}

impl Running {
    async fn start(db: &TestDatabase, broker: &TestBroker) -> (Self, PgPool) {
        let service = build(settings(db, broker))
            .await
            .expect("build the rebate service");
        let address = format!("http://{}", service.local_addr().expect("addr"));
        let pool = service.pool().clone();
        let shutdown = Shutdown::new();
        let running = Some(tokio::spawn(service.run_until_stopped(shutdown.clone())));
        let running = Self {
            address,
            shutdown,
            running,
        };
        (running, pool)
    }

    /// Stop it as SIGTERM does and wait until it has stopped.
    pub async fn stop(&mut self) {
        self.shutdown.trigger();
        if let Some(running) = self.running.take() {
            tokio::time::timeout(DEADLINE, running)
                .await
                .expect("the service stops within the deadline")
                .expect("the service task did not panic")
                .expect("the service stopped cleanly");
        }
    }

    /// Its `msgkit_projection_active` (1: it applies the projection).
    pub async fn active(&self, client: &reqwest::Client) -> Option<f64> {
        let exposition = msgkit::testing::scrape(client, &self.address).await;
        msgkit::testing::metric_value(
            &exposition,
            "msgkit_projection_active",
            &[("projection", "rebate")],
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// The service started before anything declared the archive, which the test's events then do.
pub async fn spawn_app_before_the_archive() -> TestApp {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let (service, pool) = Running::start(&db, &broker).await;
    let events = Events::open(&broker).await;
    TestApp {
        address: service.address.clone(),
        client: reqwest::Client::new(),
        pool,
        events,
        broker,
        service,
        db,
    }
}

/// The service in this database and vhost (events may already be in the archive).
pub async fn spawn_app_on(db: TestDatabase, broker: TestBroker, events: Events) -> TestApp {
    let (service, pool) = Running::start(&db, &broker).await;
    TestApp {
        address: service.address.clone(),
        client: reqwest::Client::new(),
        pool,
        events,
        broker,
        service,
        db,
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

impl TestApp {
    /// Another replica on the same database and vhost.
    pub async fn replica(&self) -> Running {
        Running::start(&self.db, &self.broker).await.0
    }

    /// `GET /rebates/{customer}`: status and body.
    pub async fn get_rebates(&self, customer: &str) -> (u16, Value) {
        self.get_rebates_from(&self.address, customer).await
    }

    /// `GET /rebates/{customer}` from the replica at `address`, as the customer.
    pub async fn get_rebates_from(&self, address: &str, customer: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{address}/rebates/{customer}"))
            .bearer_auth(token(customer, Role::User))
            .send()
            .await
            .expect("GET /rebates");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON body"))
    }

    /// `GET /rebates/{customer}` once its balance has reached `version`.
    pub async fn rebates_at(&self, customer: &str, version: i64) -> Value {
        wait_until_async(
            &format!("{customer}'s balance at version {version}"),
            DEADLINE,
            || async {
                let (status, body) = self.get_rebates(customer).await;
                assert_eq!(status, 200, "{body}");
                (body["version"].as_i64() >= Some(version)).then_some(body)
            },
        )
        .await
    }

    /// Archive a payment of another customer and wait until it is applied: everything
    /// archived before it has been applied too.
    pub async fn barrier(&self) {
        let payment = payment(&format!("barrier-{}", Uuid::now_v7()), 100, Utc::now());
        self.events.paid(&payment).await;
        self.rebates_at(&payment.customer_id, 1).await;
    }

    /// Open `GET /rebates/{customer}/stream{query}` with these headers.
    pub async fn open_stream(
        &self,
        customer: &str,
        query: &str,
        bearer: Option<&str>,
        last_event_id: Option<i64>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .get(format!("{}/rebates/{customer}/stream{query}", self.address));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        request
            .send()
            .await
            .expect("GET /rebates/{customer}/stream")
    }
}

/// Sum of the `rebate_cents` of a GET's lines.
pub fn sum_of_lines(body: &Value) -> i64 {
    body["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|line| line["rebate_cents"].as_i64().expect("rebate_cents"))
        .sum()
}
