//! The inventory service in process, in this test's database and vhost, and ways to change
//! its stock.

use std::time::Duration;

use contracts::{OrderLine, OrderPlaced, event_type};
use inventory::startup::{NAME, build};
use msgkit::message::OutgoingMessage;
use msgkit::service::ServiceError;
use msgkit::testing::{TestBroker, TestDatabase, service_settings, wait_until_async};
use msgkit::{ConfirmedPublisher, Shutdown};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::sse::SseClient;

pub const DEADLINE: Duration = Duration::from_secs(30);

/// The service on a free port, running until dropped.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub pool: PgPool,
    publisher: ConfirmedPublisher,
    _broker: TestBroker,
    _db: TestDatabase,
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

/// The service with these settings over the test defaults (e.g. `INVENTORY_STREAM_BUFFER`).
pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let mut settings = service_settings(NAME, NAME, &db, broker.settings(NAME));
    for (name, value) in extra {
        settings.source.set(*name, *value);
    }
    let service = build(settings).await.expect("build the inventory service");
    let address = format!("http://{}", service.local_addr().expect("addr"));
    let pool = service.pool().clone();
    let publisher = ConfirmedPublisher::open(
        &broker.settings("test"),
        &contracts::topology(),
        &Shutdown::new(),
    )
    .await
    .unwrap();
    let shutdown = Shutdown::new();
    let running = tokio::spawn(service.run_until_stopped(shutdown.clone()));
    TestApp {
        address,
        client: reqwest::Client::new(),
        pool,
        publisher,
        _broker: broker,
        _db: db,
        shutdown,
        running: Some(running),
    }
}

impl TestApp {
    /// Stop the service; how long it took (panics past `deadline`).
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

    /// `GET /stock/{sku}`.
    pub async fn get_stock(&self, sku: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/stock/{sku}", self.address))
            .send()
            .await
            .expect("GET /stock/{sku}")
    }

    /// `GET /stock/stream{query}`, resuming after `last_event_id` when given.
    pub async fn open_stream(&self, query: &str, last_event_id: Option<i64>) -> reqwest::Response {
        let mut request = self
            .client
            .get(format!("{}/stock/stream{query}", self.address));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        request.send().await.expect("GET /stock/stream")
    }

    pub async fn stream(&self, query: &str) -> SseClient {
        SseClient::new(self.open_stream(query, None).await)
    }

    /// An `order.placed` for these lines, published for the service's consumer.
    pub async fn place(&self, lines: &[(&str, u32)]) -> Uuid {
        let order_id = Uuid::new_v4();
        let event = OrderPlaced {
            order_id,
            customer_id: "c-1".into(),
            items: lines
                .iter()
                .map(|&(sku, quantity)| OrderLine {
                    sku: sku.into(),
                    quantity,
                })
                .collect(),
            placed_at: chrono::Utc::now(),
            location: None,
        };
        let message = OutgoingMessage::event(
            event_type::ORDER_PLACED.name(),
            &order_id.to_string(),
            "test",
            &event,
        )
        .unwrap();
        assert!(
            self.publisher
                .publish(&message)
                .await
                .unwrap()
                .is_confirmed()
        );
        order_id
    }

    /// The SKU's value once its version reached `version`.
    pub async fn wait_for_version(&self, sku: &str, version: i64) -> Value {
        wait_until_async(&format!("{sku} at version {version}"), DEADLINE, || async {
            let value: Value = self.get_stock(sku).await.json().await.ok()?;
            (value["version"].as_i64()? >= version).then_some(value)
        })
        .await
    }
}
