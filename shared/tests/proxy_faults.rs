//! The fault-injecting proxy against the real RabbitMQ and PostgreSQL: each fault shows on a
//! real client (lapin, sqlx, the outbox relay). Each test has its own vhost and database.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use msgkit::outbox::{self, OutboxMessage};
use msgkit::testing::{TcpProxy, TestBroker, TestDatabase, metric_value, wait_until};
use msgkit::{ConfirmedPublisher, OutboxRelay, RelayConfig, Shutdown, Topology};
use serde_json::json;
use sqlx::{Connection, PgConnection};

const DEADLINE: Duration = Duration::from_secs(8);
const LATENCY: Duration = Duration::from_millis(150);
/// A round trip crosses the proxy twice: at least `2 * LATENCY`, less a little for timer
/// granularity.
const ROUND_TRIP_FLOOR: Duration = Duration::from_millis(280);
const QUEUE: &str = "proxied";

/// A publisher with confirms whose connection goes through `proxy`, and the queue it
/// publishes to (declared directly, so that only the publishes cross the proxy).
async fn publisher_through(broker: &TestBroker, proxy: &TcpProxy) -> ConfirmedPublisher {
    let setup = broker.settings("test/setup").connect().await.unwrap();
    let channel = setup.create_channel().await.unwrap();
    channel
        .queue_declare(
            QUEUE.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let connection = broker
        .settings_via(&proxy.addr(), "test/proxied")
        .connect()
        .await
        .unwrap();
    ConfirmedPublisher::without_declaring(connection)
        .await
        .unwrap()
}

/// Publish `body` to [`QUEUE`] and wait for the broker's confirm; returns how long it took.
async fn publish_confirmed(publisher: &ConfirmedPublisher, body: &[u8]) -> Duration {
    let started = Instant::now();
    let outcome = publisher
        .publish_raw("", QUEUE, body, lapin::BasicProperties::default())
        .await
        .unwrap();
    assert!(outcome.is_confirmed(), "{:?}", outcome.failure_reason());
    started.elapsed()
}

#[tokio::test]
async fn added_latency_delays_a_publish_confirm_round_trip_by_twice_the_latency() {
    let broker = TestBroker::create().await;
    let proxy = TcpProxy::start(broker.amqp_addr()).await.unwrap();
    let publisher = publisher_through(&broker, &proxy).await;

    let mut baseline = Duration::MAX;
    for _ in 0..3 {
        baseline = baseline.min(publish_confirmed(&publisher, b"fast").await);
    }
    assert!(
        baseline < ROUND_TRIP_FLOOR,
        "without latency a round trip took {baseline:?}"
    );

    proxy.control().set_latency(LATENCY);
    let slow = publish_confirmed(&publisher, b"slow").await;
    assert!(slow >= ROUND_TRIP_FLOOR, "with latency it took {slow:?}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn added_latency_delays_a_database_query() {
    let db = TestDatabase::create().await;
    let upstream = db.options();
    let upstream = format!("{}:{}", upstream.get_host(), upstream.get_port());
    let proxy = TcpProxy::start(&upstream).await.unwrap();
    let port: u16 = proxy.addr().rsplit(':').next().unwrap().parse().unwrap();
    let mut connection = PgConnection::connect_with(&db.options().host("127.0.0.1").port(port))
        .await
        .unwrap();

    proxy.control().set_latency(LATENCY);
    let started = Instant::now();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(one, 1);
    assert!(took >= ROUND_TRIP_FLOOR, "SELECT 1 took {took:?}");
    connection.close().await.unwrap();
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_bandwidth_cap_slows_a_bulk_publish_to_the_capped_rate() {
    let broker = TestBroker::create().await;
    let proxy = TcpProxy::start(broker.amqp_addr()).await.unwrap();
    let publisher = publisher_through(&broker, &proxy).await;
    let control = proxy.control();
    let before = control.counters().bytes_to_upstream;

    // 400 KB at 200 KB/s: two seconds, less the bucket's small burst.
    control.set_bandwidth(Some(200_000));
    let body = vec![b'x'; 100_000];
    let started = Instant::now();
    for _ in 0..4 {
        publish_confirmed(&publisher, &body).await;
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "400 KB took only {took:?}"
    );
    let sent = control.counters().bytes_to_upstream - before;
    assert!(sent >= 400_000, "only {sent} bytes counted");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_relay_cut_off_by_a_partition_reconnects_after_restore_and_publishes_again() {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let pool = db.pool().await;
    msgkit::schema::migrate(&pool).await.unwrap();
    let mut probe = broker.probe("events", "#").await;
    let proxy = TcpProxy::start(broker.amqp_addr()).await.unwrap();
    let relay = OutboxRelay::new(
        pool.clone(),
        broker.settings_via(&proxy.addr(), "relay"),
        Topology::default(),
        RelayConfig {
            poll_interval: Duration::from_millis(200),
            ..RelayConfig::new("test-service")
        },
    );
    let stats = relay.stats();
    let shutdown = Shutdown::new();
    shutdown.spawn(relay.run(shutdown.child()));
    let reconnects = || {
        metric_value(
            &stats.render_metrics(),
            "msgkit_broker_reconnects_total",
            &[],
        )
        .unwrap_or_default()
    };
    enqueue(&pool, "t.before").await;
    probe
        .next(DEADLINE)
        .await
        .expect("published before the cut");
    assert_eq!(reconnects(), 0.0);

    proxy.cut();
    wait_until("the relay to lose its connection", DEADLINE, || {
        !stats.connected()
    })
    .await;
    wait_until("the relay's reconnects to be refused", DEADLINE, || {
        proxy.refused() >= 1
    })
    .await;

    proxy.restore();
    wait_until("the relay to reconnect", DEADLINE, || {
        stats.connected() && reconnects() >= 1.0
    })
    .await;
    let id = enqueue(&pool, "t.after").await;
    // At least once: a batch the cut interrupted may be published again before it.
    probe
        .collect_until("the message enqueued after restore", DEADLINE, |received| {
            received.iter().any(|delivery| {
                delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .is_some_and(|m| m.as_str() == id)
            })
        })
        .await;
    shutdown.trigger();
    tokio::time::timeout(DEADLINE, shutdown.wait_for_tasks())
        .await
        .unwrap();
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_query_sent_into_a_black_hole_completes_only_once_restored() {
    let db = TestDatabase::create().await;
    let upstream = db.options();
    let upstream = format!("{}:{}", upstream.get_host(), upstream.get_port());
    let proxy = TcpProxy::start(&upstream).await.unwrap();
    let port: u16 = proxy.addr().rsplit(':').next().unwrap().parse().unwrap();
    let mut connection = PgConnection::connect_with(&db.options().host("127.0.0.1").port(port))
        .await
        .unwrap();
    let control = proxy.control();

    proxy.blackhole();
    let before = control.counters();
    let mut query = Box::pin(sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&mut connection));
    // Not a synchronisation sleep: how long the query is given to show it is held.
    let held = tokio::time::timeout(Duration::from_millis(500), &mut query).await;
    assert!(held.is_err(), "the query got through a black hole");
    let during = control.counters();
    assert_eq!(during.bytes_to_upstream, before.bytes_to_upstream);
    assert_eq!(during.open, 1, "the connection stays open");

    proxy.restore();
    let one = tokio::time::timeout(DEADLINE, query)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one, 1);
    connection.close().await.unwrap();
    proxy.shutdown().await;
}

/// Enqueue an event with routing key `key`; returns its message id.
async fn enqueue(pool: &sqlx::PgPool, key: &str) -> String {
    let message = OutboxMessage::event(key, "agg", &json!({})).unwrap();
    let mut tx = pool.begin().await.unwrap();
    outbox::enqueue(&mut tx, &message).await.unwrap();
    tx.commit().await.unwrap();
    message.id().to_string()
}
