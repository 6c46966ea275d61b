//! Typed routes on a running service, against the real RabbitMQ and PostgreSQL: a route
//! receives its type, an unrouted type meets its policy, and routes that disagree with the
//! queue's bindings stop the service from starting.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use msgkit::consume::{Context, HandlerError, Routes, UNROUTED_ERROR_TYPE, Unrouted};
use msgkit::message::{OutgoingMessage, header_i64, header_str};
use msgkit::service::{Service, ServiceError};
use msgkit::testing::{TestBroker, TestDatabase, service_settings, wait_until_async};
use msgkit::{ConfirmedPublisher, EventType, Shutdown, Topology, WorkQueue};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    account: String,
    cents: i64,
}

const CREDITED: EventType<Entry> = EventType::new("ledger.credited");
const DEBITED: EventType<Entry> = EventType::new("ledger.debited");

async fn credit(mut ctx: Context<'_>, entry: Entry) -> Result<(), HandlerError> {
    apply(&mut ctx, &entry, entry.cents).await
}

async fn debit(mut ctx: Context<'_>, entry: Entry) -> Result<(), HandlerError> {
    apply(&mut ctx, &entry, -entry.cents).await
}

async fn apply(ctx: &mut Context<'_>, entry: &Entry, cents: i64) -> Result<(), HandlerError> {
    let message_type = ctx.message_type();
    sqlx::query("INSERT INTO entries (account, cents, message_type) VALUES ($1, $2, $3)")
        .bind(&entry.account)
        .bind(cents)
        .bind(message_type)
        .execute(ctx.tx())
        .await?;
    Ok(())
}

fn topology() -> Topology {
    Topology::default()
        .with_queue(WorkQueue::new("ledger").bind("ledger.#"))
        .with_queue(WorkQueue::new("lenient").bind("lenient.#"))
        .with_queue(WorkQueue::new("strict").bind(CREDITED).bind(DEBITED))
        .with_queue(WorkQueue::new("batched").bind("batched.#"))
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

async fn start(queue: &str, routes: Routes) -> Running {
    start_with(queue, routes, 1, &[]).await
}

/// A service consuming `queue` with `routes` in batches of up to `batch`, after `backlog`
/// (type, account, cents) was published, so that batches form.
async fn start_with(
    queue: &str,
    routes: Routes,
    batch: usize,
    backlog: &[(&str, &str, i64)],
) -> Running {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    // Declares the topology, so the backlog waits in its queue.
    let publisher = broker.publisher(&topology()).await;
    for (message_type, account, cents) in backlog {
        publish(&publisher, message_type, account, *cents).await;
    }
    let settings = service_settings(queue, queue, &db, broker.settings(queue));
    let service = Service::start(settings, topology(), Migrator::DEFAULT)
        .await
        .unwrap();
    let pool = service.pool().clone();
    // `tx` tells which entries were committed together.
    sqlx::query(
        "CREATE TABLE entries (account text, cents bigint, message_type text, \
                               tx bigint NOT NULL DEFAULT txid_current())",
    )
    .execute(&pool)
    .await
    .unwrap();
    let config = msgkit::consume::ConsumerConfig::new(queue, queue).batch(batch);
    let service = service.consume_with(config, routes).unwrap();
    let url = format!("http://{}", service.local_addr().unwrap());
    let shutdown = Shutdown::new();
    tokio::spawn(service.run_until_stopped(shutdown.clone()));
    Running {
        url,
        pool,
        broker,
        publisher,
        shutdown,
        _db: db,
    }
}

async fn publish(publisher: &ConfirmedPublisher, message_type: &str, account: &str, cents: i64) {
    let entry = Entry {
        account: account.to_owned(),
        cents,
    };
    let message = OutgoingMessage::event(message_type, account, "test", &entry).unwrap();
    assert!(publisher.publish(&message).await.unwrap().is_confirmed());
}

impl Running {
    async fn publish(&self, message_type: &str, account: &str, cents: i64) {
        publish(&self.publisher, message_type, account, cents).await;
    }

    async fn wait_for_entries(&self, account: &str, count: i64) -> Vec<(i64, String)> {
        wait_until_async(
            &format!("{count} entries of {account}"),
            DEADLINE,
            || async {
                let rows: Vec<(i64, String)> = sqlx::query_as(
                    "SELECT cents, message_type FROM entries WHERE account = $1 ORDER BY cents",
                )
                .bind(account)
                .fetch_all(&self.pool)
                .await
                .unwrap();
                (rows.len() as i64 == count).then_some(rows)
            },
        )
        .await
    }

    async fn stop(self) {
        self.shutdown.trigger();
    }
}

#[tokio::test]
async fn each_route_receives_its_own_event_type_decoded() {
    let routes = Routes::new().route(CREDITED, credit).route(DEBITED, debit);
    let running = start("ledger", routes).await;
    running.publish("ledger.credited", "acc-1", 500).await;
    running.publish("ledger.debited", "acc-1", 200).await;
    let rows = running.wait_for_entries("acc-1", 2).await;
    assert_eq!(
        rows,
        [
            (-200, "ledger.debited".to_owned()),
            (500, "ledger.credited".to_owned())
        ]
    );
    running.stop().await;
}

#[tokio::test]
async fn an_unrouted_type_is_dead_lettered_with_its_reason() {
    let routes = Routes::new().route(CREDITED, credit).route(DEBITED, debit);
    let running = start("ledger", routes).await;
    running.publish("ledger.audited", "acc-2", 1).await;
    let dead = running.broker.take_one("ledger.dlq", DEADLINE).await;
    let props = &dead.delivery.properties;
    assert_eq!(header_str(props, "x-failure-reason"), Some("poison"));
    assert_eq!(
        header_str(props, "x-exception-type"),
        Some(UNROUTED_ERROR_TYPE)
    );
    assert_eq!(
        header_str(props, "x-exception-message"),
        Some("no route for message type \"ledger.audited\"")
    );
    assert_eq!(header_i64(props, "x-attempt"), Some(1), "never retried");
    running.stop().await;
}

#[tokio::test]
async fn an_unrouted_type_can_be_acknowledged_without_effect_by_policy() {
    let routes = Routes::new()
        .route(EventType::<Entry>::new("lenient.credited"), credit)
        .unrouted(Unrouted::Acknowledge);
    let running = start("lenient", routes).await;
    running.publish("lenient.audited", "acc-3", 1).await;
    running.publish("lenient.credited", "acc-3", 7).await;
    running.wait_for_entries("acc-3", 1).await;
    // Settled as handled: its inbox row committed (with no effect), and nothing dead-lettered.
    wait_until_async("the unrouted message in the inbox", DEADLINE, || async {
        let seen: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM msgkit_inbox WHERE message_type = 'lenient.audited'",
        )
        .fetch_one(&running.pool)
        .await
        .unwrap();
        (seen == 1).then_some(())
    })
    .await;
    wait_until_async("lenient and lenient.dlq empty", DEADLINE, || async {
        let work = running.broker.queue_totals("lenient").await;
        let dead = running.broker.queue_totals("lenient.dlq").await;
        (work == Some((0, 0)) && dead == Some((0, 0))).then_some(())
    })
    .await;
    running.stop().await;
}

#[tokio::test]
async fn a_service_whose_routes_disagree_with_the_bindings_refuses_to_start() {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let settings = service_settings("strict", "strict", &db, broker.settings("strict"));
    let service = Service::start(settings, topology(), Migrator::DEFAULT)
        .await
        .unwrap();
    let config = msgkit::consume::ConsumerConfig::new("strict", "strict");
    // Bound to credited and debited; routes credited and a type nobody binds.
    let routes = Routes::new()
        .route(CREDITED, credit)
        .route(EventType::<Entry>::new("ledger.reversed"), debit);
    let Err(ServiceError::Bindings(error)) = service.consume_with(config, routes) else {
        panic!("the service must refuse to start");
    };
    let text = error.to_string();
    assert!(
        text.contains("routed but not bound (add a binding in the topology): ledger.reversed"),
        "{text}"
    );
    assert!(
        text.contains("bound but not routed (add a route or remove the binding): ledger.debited"),
        "{text}"
    );
}

#[tokio::test]
async fn metrics_show_what_the_consumer_keeps_read_from_the_database() {
    let routes = Routes::new().route(CREDITED, credit).route(DEBITED, debit);
    let running = start("ledger", routes).await;
    sqlx::query(
        "INSERT INTO msgkit_state (consumer, key, value, updated_at) \
         VALUES ('ledger', 'a', '1', now()), ('ledger', 'b', '2', now())",
    )
    .execute(&running.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO msgkit_timers (consumer, name, key, due_at, payload, set_at) VALUES \
         ('ledger', 't', 'late', now() - interval '1 hour', '{}', now()), \
         ('ledger', 't', 'soon', now() + interval '1 hour', '{}', now())",
    )
    .execute(&running.pool)
    .await
    .unwrap();
    let exposition = msgkit::testing::scrape(&reqwest::Client::new(), &running.url).await;
    let gauge =
        |name: &str| msgkit::testing::metric_value(&exposition, name, &[("consumer", "ledger")]);
    assert_eq!(gauge("msgkit_state_entries"), Some(2.0));
    assert_eq!(gauge("msgkit_timers_pending"), Some(2.0));
    assert_eq!(gauge("msgkit_timers_pending_overdue"), Some(1.0));
    running.stop().await;
}

#[tokio::test]
async fn a_body_that_does_not_decode_into_the_routes_payload_is_dead_lettered_as_poison() {
    let routes = Routes::new().route(CREDITED, credit).route(DEBITED, debit);
    let running = start("ledger", routes).await;
    let wrong = serde_json::json!({"account": 7});
    let message = OutgoingMessage::event("ledger.credited", "acc-4", "test", &wrong).unwrap();
    assert!(
        running
            .publisher
            .publish(&message)
            .await
            .unwrap()
            .is_confirmed()
    );
    let dead = running.broker.take_one("ledger.dlq", DEADLINE).await;
    let props = &dead.delivery.properties;
    assert_eq!(header_str(props, "x-failure-reason"), Some("poison"));
    let error_type = header_str(props, "x-exception-type").unwrap();
    assert!(error_type.ends_with("UndecodableBody"), "{error_type}");
    assert_eq!(header_i64(props, "x-attempt"), Some(1), "never retried");
    running.stop().await;
}

const NOTED: EventType<Entry> = EventType::new("audit.noted");
const NUMBERED: EventType<Entry> = EventType::new("audit.numbered").in_sequence("audit");

/// Records the entry and publishes two follow-ups, one of them numbered in a key sequence;
/// 13 is poison.
async fn note(mut ctx: Context<'_>, entry: Entry) -> Result<(), HandlerError> {
    if entry.cents == 13 {
        return Err(HandlerError::poison(std::io::Error::other("unlucky")));
    }
    apply(&mut ctx, &entry, entry.cents).await?;
    ctx.publish(NOTED, &entry).await?;
    ctx.publish(NUMBERED, &entry).await?;
    Ok(())
}

#[tokio::test]
async fn follow_ups_published_in_a_batch_commit_with_it_in_order_and_only_with_it() {
    // A batch's follow-ups are written together just before it commits: they must come out
    // as if each were written when published (one row each, in order, numbered without gaps),
    // and the ones of a batch that rolled back (at 13) must not survive it.
    let backlog: Vec<(&str, &str, i64)> =
        (1..=30).map(|n| ("batched.entered", "acc-b", n)).collect();
    let routes = Routes::new().route(EventType::<Entry>::new("batched.entered"), note);
    let running = start_with("batched", routes, 10, &backlog).await;
    running.wait_for_entries("acc-b", 29).await;
    let dead = running.broker.take_one("batched.dlq", DEADLINE).await;
    assert_eq!(
        header_str(&dead.delivery.properties, "x-failure-reason"),
        Some("poison")
    );
    let transactions: i64 = sqlx::query_scalar("SELECT count(DISTINCT tx) FROM entries")
        .fetch_one(&running.pool)
        .await
        .unwrap();
    assert!(
        transactions < 29,
        "batches did not form: {transactions} transactions"
    );

    let rows: Vec<(String, i64, Option<String>, bool)> = sqlx::query_as(
        "SELECT message_type, (payload->>'cents')::bigint, headers->>'x-key-seq', \
                headers ? 'traceparent' \
         FROM msgkit_outbox ORDER BY seq",
    )
    .fetch_all(&running.pool)
    .await
    .unwrap();
    assert_eq!(
        rows.len(),
        58,
        "two follow-ups per applied message: {rows:?}"
    );
    assert!(
        rows.iter().all(|row| row.3),
        "every follow-up continues its message's trace"
    );
    // Concurrent batches interleave their rows; each message's two keep their order.
    let mut cents: Vec<i64> = Vec::new();
    for (at, row) in rows.iter().enumerate() {
        if row.0 == "audit.noted" {
            cents.push(row.1);
            let numbered = rows
                .iter()
                .position(|r| r.0 == "audit.numbered" && r.1 == row.1);
            assert!(
                numbered.is_some_and(|n| n > at),
                "{row:?} before its pair: {rows:?}"
            );
        }
    }
    cents.sort_unstable();
    let expected: Vec<i64> = (1..=30).filter(|n| *n != 13).collect();
    assert_eq!(cents, expected, "each applied message's follow-ups once");
    let numbers: Vec<String> = rows.iter().filter_map(|row| row.2.clone()).collect();
    let gapless: Vec<String> = (1..=29).map(|n: i64| n.to_string()).collect();
    assert_eq!(
        numbers, gapless,
        "numbered in row order, without the rolled-back batch's"
    );
    running.stop().await;
}
