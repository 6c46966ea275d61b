//! A batch the broker nacks makes the relay drop its channel and open a new one: on RabbitMQ
//! 3.10 a channel whose first publish to a quorum queue met a dead leader node nacks every
//! later publish to that queue, even after a new leader is elected (see docs/cluster.md).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use lapin::options::{QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use msgkit::outbox::{self, OutboxMessage};
use msgkit::testing::{TestBroker, TestDatabase, metric_value, wait_until_async};
use msgkit::{OutboxRelay, RelayConfig, Shutdown, Topology};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_nacked_batch_makes_the_relay_open_a_new_channel_and_the_row_is_published_later() {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let pool = db.kit_pool().await;

    // A queue that refuses everything: every publish routed to it is nacked.
    let _exchange = broker.probe("events", "unrelated").await;
    let connection = broker.connect().await;
    let channel = connection.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString(LongString::from("reject-publish")),
    );
    channel
        .queue_declare(
            "full".into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            "full".into(),
            "events".into(),
            "t.nacked".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let message = OutboxMessage::event("t.nacked", "agg-1", &json!({"n": 1})).unwrap();
    let mut tx = pool.begin().await.unwrap();
    outbox::enqueue(&mut tx, &message).await.unwrap();
    tx.commit().await.unwrap();

    let shutdown = Shutdown::new();
    let relay = OutboxRelay::new(
        pool.clone(),
        broker.settings("relay"),
        Topology::default(),
        RelayConfig {
            poll_interval: Duration::from_millis(200),
            retry_initial: Duration::from_millis(300),
            retry_max: Duration::from_millis(600),
            ..RelayConfig::new("test-nack")
        },
    );
    let stats = relay.stats();
    shutdown.spawn(relay.run(shutdown.child()));

    wait_until_async("a nack recorded on the row", DEADLINE, || async {
        sqlx::query_scalar::<_, Option<String>>("SELECT last_error FROM msgkit_outbox")
            .fetch_one(&pool)
            .await
            .unwrap()
            .filter(|e| e.contains("nacked"))
    })
    .await;
    // The relay's session is re-opened after nacked batches (each of which is a retry).
    let reopened = || {
        metric_value(
            &stats.render_metrics(),
            "msgkit_broker_reconnects_total",
            &[("component", "test-nack/relay")],
        )
        .unwrap_or(0.0)
    };
    wait_until_async("the relay to open a new channel", DEADLINE, || async {
        (reopened() >= 1.0 && stats.failed() >= 2).then_some(())
    })
    .await;
    assert!(
        stats.broker_errors() == 0,
        "a nack is not a broker error: the new channel is the relay's own choice"
    );

    // Once the queue no longer refuses, the row goes out on the new channel.
    channel
        .queue_delete("full".into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let mut probe = broker.probe("events", "t.nacked").await;
    let delivery = probe
        .next(DEADLINE)
        .await
        .expect("published after the nacks");
    assert_eq!(
        delivery.properties.message_id().as_ref().unwrap().as_str(),
        message.id().to_string()
    );
    let _ = connection.close(200, "done".into()).await;
    shutdown.trigger();
    tokio::time::timeout(DEADLINE, shutdown.wait_for_tasks())
        .await
        .unwrap();
}
