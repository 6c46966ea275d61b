//! Direct dispatch, against the real RabbitMQ and PostgreSQL: a service publishes its
//! consumers' follow-up events itself right after their transaction commits, and an event
//! that would overtake an unpublished one of its aggregate is left to the relay, in order.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use msgkit::consume::{ConsumerConfig, Context, HandlerError, Routes};
use msgkit::message::OutgoingMessage;
use msgkit::service::{Service, ServiceSettings};
use msgkit::testing::{TestBroker, TestDatabase, test_config, wait_until_async};
use msgkit::{ConfirmedPublisher, EventType, Shutdown, Topology, WorkQueue};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    account: String,
    n: i64,
}

const ENTERED: EventType<Entry> = EventType::new("ledger.entered");
const NOTED: EventType<Entry> = EventType::new("audit.noted");

async fn note(mut ctx: Context<'_>, entry: Entry) -> Result<(), HandlerError> {
    ctx.publish(NOTED, &entry).await?;
    Ok(())
}

fn topology() -> Topology {
    Topology::default()
        .with_queue(WorkQueue::new("ledger").bind(ENTERED))
        .with_queue(WorkQueue::new("audit").bind("audit.#"))
}

struct Running {
    url: String,
    pool: PgPool,
    broker: TestBroker,
    publisher: ConfirmedPublisher,
    shutdown: Shutdown,
    _db: TestDatabase,
}

/// A service with its relay polling every `poll_ms` consuming `ledger` in batches of up to 10.
async fn start(poll_ms: &str) -> Running {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let source = test_config([
        ("OUTBOX_POLL_INTERVAL_MS", poll_ms),
        ("OUTBOX_DIRECT_DISPATCH", "true"),
    ]);
    let mut settings = ServiceSettings::from_source(source, "ledger", 0, "ledger").unwrap();
    settings.database = db.settings("ledger");
    settings.broker = broker.settings("ledger");
    let service = Service::start(settings, topology(), Migrator::DEFAULT)
        .await
        .unwrap()
        .with_relay();
    let pool = service.pool().clone();
    let service = service
        .consume_with(
            ConsumerConfig::new("ledger", "ledger").batch(10),
            Routes::new().route(ENTERED, note),
        )
        .unwrap();
    let url = format!("http://{}", service.local_addr().unwrap());
    let shutdown = Shutdown::new();
    tokio::spawn(service.run_until_stopped(shutdown.clone()));
    let publisher = broker.publisher(&topology()).await;
    Running {
        url,
        pool,
        broker,
        publisher,
        shutdown,
        _db: db,
    }
}

impl Running {
    async fn enter(&self, account: &str, n: i64) {
        let entry = Entry {
            account: account.to_owned(),
            n,
        };
        let message = OutgoingMessage::event(ENTERED.name(), account, "test", &entry).unwrap();
        assert!(
            self.publisher
                .publish(&message)
                .await
                .unwrap()
                .is_confirmed()
        );
    }

    async fn metric(&self, name: &str) -> f64 {
        let exposition = msgkit::testing::scrape(&reqwest::Client::new(), &self.url).await;
        msgkit::testing::metric_value(&exposition, name, &[("service", "ledger")]).unwrap_or(0.0)
    }

    /// Wait until `audit` holds `count` messages (a passive declare: the management API's
    /// figures lag by seconds).
    async fn wait_for_audit(&self, count: u32) {
        wait_until_async(&format!("{count} in audit"), DEADLINE, || async {
            (self.broker.queue_depth("audit").await == Some(count)).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn follow_ups_are_published_by_the_service_that_wrote_them_without_the_relays_claim() {
    // The relay polls once a minute: what goes out within the test went out because something
    // woke it, and direct rows do not.
    let running = start("60000").await;
    for n in 0..20 {
        running.enter(&format!("acc-{n}"), n).await;
    }
    running.wait_for_audit(20).await;
    assert_eq!(running.metric("msgkit_outbox_dispatched_total").await, 20.0);
    assert_eq!(running.metric("msgkit_relay_published_total").await, 20.0);
    let unmarked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM msgkit_outbox WHERE published_at IS NULL")
            .fetch_one(&running.pool)
            .await
            .unwrap();
    assert_eq!(unmarked, 0, "every dispatched row is marked");
    let message = running.broker.take_one("audit", DEADLINE).await;
    let props = &message.delivery.properties;
    assert_eq!(
        props.kind().as_ref().map(|k| k.as_str()),
        Some("audit.noted")
    );
    assert_eq!(props.app_id().as_ref().map(|a| a.as_str()), Some("ledger"));
    assert!(props.correlation_id().is_some(), "{props:?}");
    running.shutdown.trigger();
}

#[tokio::test]
async fn an_event_behind_an_unpublished_one_of_its_aggregate_is_left_to_the_relay_in_order() {
    let running = start("200").await;
    // An earlier event of acc-x the broker refused, waiting for its retry in an hour.
    sqlx::query(
        "INSERT INTO msgkit_outbox (id, aggregate_id, exchange, routing_key, message_type, payload, next_attempt_at) \
         VALUES (gen_random_uuid(), 'acc-x', 'events', 'audit.noted', 'audit.noted', \
                 '{\"account\": \"acc-x\", \"n\": 0}', now() + interval '1 hour')",
    )
    .execute(&running.pool)
    .await
    .unwrap();
    running.enter("acc-x", 1).await;
    running.enter("acc-y", 2).await;
    // acc-y's goes out at once; acc-x's must not overtake its predecessor.
    running.wait_for_audit(1).await;
    let behind: (bool, bool) = sqlx::query_as(
        "SELECT published_at IS NULL, next_attempt_at <= created_at FROM msgkit_outbox \
         WHERE aggregate_id = 'acc-x' AND payload->>'n' = '1'",
    )
    .fetch_one(&running.pool)
    .await
    .unwrap();
    assert_eq!(
        behind,
        (true, true),
        "unpublished, and the relay's (due at once)"
    );
    assert_eq!(running.metric("msgkit_outbox_dispatched_total").await, 1.0);

    // The predecessor's retry comes due: the relay publishes both, in order.
    sqlx::query("UPDATE msgkit_outbox SET next_attempt_at = now() WHERE aggregate_id = 'acc-x'")
        .execute(&running.pool)
        .await
        .unwrap();
    sqlx::query("SELECT pg_notify('msgkit_outbox_' || current_schema(), '')")
        .execute(&running.pool)
        .await
        .unwrap();
    running.wait_for_audit(3).await;
    let mut order = Vec::new();
    for _ in 0..3 {
        let message = running.broker.take_one("audit", DEADLINE).await;
        let body: serde_json::Value = serde_json::from_slice(&message.delivery.data).unwrap();
        order.push((
            body["account"].as_str().unwrap().to_owned(),
            body["n"].as_i64().unwrap(),
        ));
    }
    let acc_x: Vec<i64> = order
        .iter()
        .filter(|(account, _)| account == "acc-x")
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(acc_x, [0, 1], "acc-x's events in their order: {order:?}");
    running.shutdown.trigger();
}
