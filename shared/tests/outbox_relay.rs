//! The outbox relay against the real RabbitMQ and PostgreSQL: each test has its own vhost and
//! database.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::HashMap;
use std::time::Duration;

use lapin::message::Delivery;
use msgkit::message::{ATTEMPT_HEADER, cloud_events, header_i64, header_str};
use msgkit::outbox::{self, OutboxMessage};
use msgkit::testing::{TcpProxy, TestBroker, TestDatabase, wait_until, wait_until_async};
use msgkit::{BrokerSettings, OutboxRelay, RelayConfig, Shutdown, Topology, TraceParent};
use serde_json::json;
use sqlx::PgPool;

const DEADLINE: Duration = Duration::from_secs(30);

struct Harness {
    pool: PgPool,
    broker: TestBroker,
    _db: TestDatabase,
}

async fn harness() -> Harness {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let pool = db.pool().await;
    msgkit::schema::migrate(&pool)
        .await
        .expect("migrate outbox");
    Harness {
        pool,
        broker,
        _db: db,
    }
}

fn fast_config() -> RelayConfig {
    RelayConfig {
        poll_interval: Duration::from_millis(200),
        retry_initial: Duration::from_millis(100),
        retry_max: Duration::from_millis(400),
        ..RelayConfig::new("test-service")
    }
}

/// Start a relay owned by `shutdown`.
fn start_relay(
    pool: &PgPool,
    settings: BrokerSettings,
    config: RelayConfig,
    shutdown: &Shutdown,
) -> OutboxRelay {
    let relay = OutboxRelay::new(pool.clone(), settings, Topology::default(), config);
    shutdown.spawn(relay.clone().run(shutdown.child()));
    relay
}

async fn enqueue(pool: &PgPool, message: &OutboxMessage) {
    let mut tx = pool.begin().await.expect("begin");
    outbox::enqueue(&mut tx, message).await.expect("enqueue");
    tx.commit().await.expect("commit");
}

async fn unpublished(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM msgkit_outbox WHERE published_at IS NULL")
        .fetch_one(pool)
        .await
        .expect("count")
}

async fn stop(shutdown: Shutdown) {
    shutdown.trigger();
    tokio::time::timeout(DEADLINE, shutdown.wait_for_tasks())
        .await
        .expect("relay stops promptly on shutdown");
}

fn body(delivery: &Delivery) -> serde_json::Value {
    serde_json::from_slice(&delivery.data).expect("JSON body")
}

#[tokio::test]
async fn a_relayed_message_carries_the_whole_contract_and_is_marked_published() {
    let h = harness().await;
    let mut probe = h.broker.probe("events", "#").await;
    let trace = TraceParent::new_root();
    let message = OutboxMessage::event("order.placed", "order-1", &json!({"order_id": "order-1"}))
        .unwrap()
        .with_trace(&trace);
    enqueue(&h.pool, &message).await;

    let shutdown = Shutdown::new();
    start_relay(
        &h.pool,
        h.broker.settings("relay"),
        fast_config(),
        &shutdown,
    );
    let delivery = probe.next(DEADLINE).await.expect("message published");

    let props = &delivery.properties;
    assert_eq!(
        props.message_id().as_ref().unwrap().as_str(),
        message.id().to_string()
    );
    assert_eq!(props.kind().as_ref().unwrap().as_str(), "order.placed");
    assert_eq!(*props.delivery_mode(), Some(2));
    assert_eq!(
        props.content_type().as_ref().unwrap().as_str(),
        "application/json"
    );
    assert_eq!(props.correlation_id().as_ref().unwrap().as_str(), "order-1");
    assert_eq!(props.app_id().as_ref().unwrap().as_str(), "test-service");
    assert!(props.timestamp().is_some());
    let sent: TraceParent = header_str(props, "traceparent").unwrap().parse().unwrap();
    assert_eq!(
        sent.trace_id(),
        trace.trace_id(),
        "the writer's trace continues"
    );
    assert_eq!(header_i64(props, ATTEMPT_HEADER), Some(1));
    // The CloudEvents binary-mode attributes, mapped from the properties above.
    let id = message.id().to_string();
    for (name, value) in [
        (cloud_events::SPECVERSION, "1.0"),
        (cloud_events::ID, id.as_str()),
        (cloud_events::SOURCE, "urn:msgkit:service:test-service"),
        (cloud_events::TYPE, "order.placed"),
        (cloud_events::SUBJECT, "order-1"),
    ] {
        assert_eq!(header_str(props, name), Some(value), "{name}");
    }
    let time = header_str(props, cloud_events::TIME).expect("cloudEvents_time");
    assert!(
        chrono::DateTime::parse_from_rfc3339(time).is_ok(),
        "cloudEvents_time is RFC 3339: {time}"
    );
    assert_eq!(delivery.routing_key.as_str(), "order.placed");
    assert_eq!(body(&delivery)["order_id"], "order-1");

    wait_until_async("the row to be marked published", DEADLINE, || async {
        (unpublished(&h.pool).await == 0).then_some(())
    })
    .await;
    stop(shutdown).await;
}

#[tokio::test]
async fn an_enqueue_whose_transaction_rolls_back_leaves_nothing_to_publish() {
    let h = harness().await;
    let mut tx = h.pool.begin().await.unwrap();
    let message = OutboxMessage::event("order.placed", "order-1", &json!({})).unwrap();
    outbox::enqueue(&mut tx, &message).await.unwrap();
    tx.rollback().await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM msgkit_outbox")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn the_relay_wakes_on_commit_without_waiting_for_its_poll() {
    let h = harness().await;
    let mut probe = h.broker.probe("events", "#").await;
    let shutdown = Shutdown::new();
    let relay = start_relay(
        &h.pool,
        h.broker.settings("relay"),
        RelayConfig {
            poll_interval: Duration::from_secs(3600),
            ..fast_config()
        },
        &shutdown,
    );
    // Let the relay reach its idle wait (connected, first empty batch done) before enqueueing.
    let stats = relay.stats();
    wait_until("the relay to connect", DEADLINE, || stats.connected()).await;
    // A second empty batch cannot be observed; enqueue twice so that one of the commits lands
    // while the relay is listening.
    for n in 0..2 {
        let message =
            OutboxMessage::event("order.placed", format!("order-{n}"), &json!({})).unwrap();
        enqueue(&h.pool, &message).await;
    }
    let received = probe
        .collect_until(
            "both messages, well before the hour-long poll",
            Duration::from_secs(20),
            |r| r.len() == 2,
        )
        .await;
    assert_eq!(received.len(), 2);
    stop(shutdown).await;
}

#[tokio::test]
async fn an_unroutable_message_is_kept_and_reported_then_delivered_once_a_queue_is_bound() {
    let h = harness().await;
    // Declare the exchange but bind nothing for this key.
    let _declared = h.broker.probe("events", "something.else").await;
    let message = OutboxMessage::event("nobody.listens", "agg-1", &json!({"n": 1})).unwrap();
    enqueue(&h.pool, &message).await;

    let shutdown = Shutdown::new();
    let relay = start_relay(
        &h.pool,
        h.broker.settings("relay"),
        fast_config(),
        &shutdown,
    );
    let stats = relay.stats();

    let error: String = wait_until_async(
        "the failure to be recorded on the row",
        DEADLINE,
        || async {
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT last_error FROM msgkit_outbox WHERE attempts >= 2",
            )
            .fetch_optional(&h.pool)
            .await
            .unwrap()
            .flatten()
        },
    )
    .await;
    assert!(error.contains("unroutable"), "error was {error:?}");
    assert!(error.contains("NO_ROUTE"), "error was {error:?}");
    // The counters move just after the commit that the query above saw.
    wait_until("the relay to count both refusals", DEADLINE, || {
        stats.failed() >= 2
    })
    .await;
    assert_eq!(
        unpublished(&h.pool).await,
        1,
        "an unroutable message is never marked published"
    );
    let backlog = outbox::backlog(&h.pool).await.unwrap();
    assert_eq!((backlog.pending, backlog.failing), (1, 1));

    let mut probe = h.broker.probe("events", "nobody.listens").await;
    let delivery = probe.next(DEADLINE).await.expect("delivered once bound");
    assert_eq!(
        delivery.properties.message_id().as_ref().unwrap().as_str(),
        message.id().to_string()
    );
    wait_until_async("the row to be marked published", DEADLINE, || async {
        (unpublished(&h.pool).await == 0).then_some(())
    })
    .await;
    stop(shutdown).await;
}

#[tokio::test]
async fn messages_enqueued_while_the_broker_is_cut_off_are_all_published_when_it_returns() {
    let h = harness().await;
    let mut probe = h.broker.probe("events", "#").await;
    let proxy = TcpProxy::start(h.broker.amqp_addr()).await.unwrap();
    let settings = h.broker.settings_via(&proxy.addr(), "relay");
    let shutdown = Shutdown::new();
    let relay = start_relay(&h.pool, settings, fast_config(), &shutdown);
    let stats = relay.stats();

    // Phase 1: connected, a first message goes through.
    enqueue(
        &h.pool,
        &OutboxMessage::event("t.before", "a", &json!({})).unwrap(),
    )
    .await;
    probe
        .next(DEADLINE)
        .await
        .expect("published while connected");
    // The probe can see the message before its confirm reaches the relay: a cut then would
    // leave the row unpublished (to be published again), and the backlog one larger.
    wait_until_async("the first row to be marked published", DEADLINE, || async {
        (unpublished(&h.pool).await == 0).then_some(())
    })
    .await;

    // Phase 2: the broker disappears; messages keep being accepted into the outbox.
    proxy.cut();
    msgkit::testing::wait_until("the relay to notice the broker is gone", DEADLINE, || {
        !stats.connected()
    })
    .await;
    let mut ids = Vec::new();
    for n in 0..50 {
        let message =
            OutboxMessage::event("t.during", format!("agg-{}", n % 7), &json!({"n": n})).unwrap();
        ids.push(message.id().to_string());
        enqueue(&h.pool, &message).await;
    }
    let backlog = outbox::backlog(&h.pool).await.unwrap();
    assert_eq!(backlog.pending, 50);

    // Phase 3: the broker returns; every message is published.
    proxy.restore();
    let received = probe
        .collect_until("all 50 messages after the outage", DEADLINE, |r| {
            let seen: std::collections::HashSet<_> = r
                .iter()
                .filter_map(|d| d.properties.message_id().as_ref().map(|m| m.to_string()))
                .collect();
            ids.iter().all(|id| seen.contains(id))
        })
        .await;
    assert!(received.len() >= 50);
    wait_until_async("the backlog to drain", DEADLINE, || async {
        (outbox::backlog(&h.pool).await.unwrap().pending == 0).then_some(())
    })
    .await;
    stop(shutdown).await;
}

#[tokio::test]
async fn a_relay_refused_by_the_broker_publishes_once_access_is_granted() {
    let h = harness().await;
    let mut probe = h.broker.probe("events", "#").await;
    h.broker.grant(false).await;
    enqueue(
        &h.pool,
        &OutboxMessage::event("t.refused", "a", &json!({})).unwrap(),
    )
    .await;
    let shutdown = Shutdown::new();
    let relay = start_relay(
        &h.pool,
        h.broker.settings("relay"),
        fast_config(),
        &shutdown,
    );
    let stats = relay.stats();
    // The relay keeps trying; the message waits in the outbox.
    assert!(probe.next(Duration::from_secs(2)).await.is_none());
    assert!(!stats.connected());
    assert_eq!(unpublished(&h.pool).await, 1);

    h.broker.grant(true).await;
    probe
        .next(DEADLINE)
        .await
        .expect("published once access is back");
    stop(shutdown).await;
}

#[tokio::test]
async fn two_relays_publish_every_event_in_per_aggregate_order() {
    let h = harness().await;
    let mut probe = h.broker.probe("events", "#").await;
    let shutdown = Shutdown::new();
    let config = RelayConfig {
        batch_size: 20,
        ..fast_config()
    };
    const AGGREGATES: usize = 40;
    const EVENTS_EACH: usize = 25;
    // A backlog first (the first half of every aggregate's events), so both relays find many
    // events of one aggregate pending at once; then writers keep committing the second half
    // while both relays run, as under real load.
    let write = |pool: PgPool, writer: usize, seqs: std::ops::Range<usize>| async move {
        for seq in seqs {
            for aggregate in (writer..AGGREGATES).step_by(4) {
                let message = OutboxMessage::event(
                    "t.sequenced",
                    format!("agg-{aggregate}"),
                    &json!({"aggregate": aggregate, "seq": seq}),
                )
                .unwrap();
                enqueue(&pool, &message).await;
            }
        }
    };
    for writer in 0..4 {
        write(h.pool.clone(), writer, 0..EVENTS_EACH / 2).await;
    }
    let first = start_relay(
        &h.pool,
        h.broker.settings("relay-1"),
        config.clone(),
        &shutdown,
    );
    let second = start_relay(&h.pool, h.broker.settings("relay-2"), config, &shutdown);
    let mut writers = Vec::new();
    for writer in 0..4 {
        writers.push(tokio::spawn(write(
            h.pool.clone(),
            writer,
            EVENTS_EACH / 2..EVENTS_EACH,
        )));
    }
    for writer in writers {
        writer.await.unwrap();
    }

    let total = AGGREGATES * EVENTS_EACH;
    let received = probe
        .collect_until(
            "every event from the two relays",
            Duration::from_secs(90),
            |r| r.len() >= total,
        )
        .await;
    let mut next_seq: HashMap<u64, u64> = HashMap::new();
    for delivery in &received {
        let body = body(delivery);
        let aggregate = body["aggregate"].as_u64().unwrap();
        let seq = body["seq"].as_u64().unwrap();
        let expected = next_seq.entry(aggregate).or_insert(0);
        assert_eq!(seq, *expected, "aggregate {aggregate} out of order");
        *expected += 1;
    }
    assert_eq!(received.len(), total, "no event lost or duplicated");
    assert!(
        first.stats().published() > 0 && second.stats().published() > 0,
        "both relays took part: {} / {}",
        first.stats().published(),
        second.stats().published()
    );
    stop(shutdown).await;
}

#[tokio::test]
async fn published_rows_are_deleted_after_the_retention_period() {
    let h = harness().await;
    let mut probe = h.broker.probe("events", "#").await;
    let shutdown = Shutdown::new();
    start_relay(
        &h.pool,
        h.broker.settings("relay"),
        RelayConfig {
            retention: Duration::from_millis(200),
            cleanup_interval: Duration::from_millis(100),
            ..fast_config()
        },
        &shutdown,
    );
    enqueue(
        &h.pool,
        &OutboxMessage::event("t.cleanup", "a", &json!({})).unwrap(),
    )
    .await;
    probe.next(DEADLINE).await.expect("published");
    wait_until_async("the published row to be deleted", DEADLINE, || async {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM msgkit_outbox")
            .fetch_one(&h.pool)
            .await
            .unwrap();
        (rows == 0).then_some(())
    })
    .await;
    stop(shutdown).await;
}

#[tokio::test]
async fn the_backlog_reports_pending_rows_and_the_age_of_the_oldest() {
    let h = harness().await;
    let empty = outbox::backlog(&h.pool).await.unwrap();
    assert_eq!(
        (empty.pending, empty.oldest_pending_age),
        (0, Duration::ZERO)
    );
    enqueue(
        &h.pool,
        &OutboxMessage::event("t.x", "a", &json!({})).unwrap(),
    )
    .await;
    sqlx::query("UPDATE msgkit_outbox SET created_at = now() - interval '90 seconds'")
        .execute(&h.pool)
        .await
        .unwrap();
    enqueue(
        &h.pool,
        &OutboxMessage::event("t.x", "b", &json!({})).unwrap(),
    )
    .await;
    let backlog = outbox::backlog(&h.pool).await.unwrap();
    assert_eq!(backlog.pending, 2);
    assert!(backlog.oldest_pending_age >= Duration::from_secs(90));
    assert!(backlog.oldest_pending_age < Duration::from_secs(120));
}
