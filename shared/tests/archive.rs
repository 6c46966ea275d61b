//! The event archive against the real RabbitMQ: the relay writes every event to the stream as
//! a second confirmed copy, an event no work queue takes still stays in its outbox, and
//! retention removes old segments.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use msgkit::message::OutgoingMessage;
use msgkit::outbox::{self, OutboxMessage};
use msgkit::projection::admin;
use msgkit::testing::{TestBroker, TestDatabase, wait_until_async};
use msgkit::topology::Archive;
use msgkit::{OutboxRelay, RelayConfig, Shutdown, Topology, WorkQueue};
use serde_json::json;
use sqlx::PgPool;

const DEADLINE: Duration = Duration::from_secs(30);

fn topology(archive: Archive) -> Topology {
    Topology::default()
        .with_queue(WorkQueue::new("shipping").bind("order.*"))
        .with_archive(archive)
}

async fn enqueue(pool: &PgPool, event: &str, n: u32) {
    let mut tx = pool.begin().await.unwrap();
    let message = OutboxMessage::event(event, format!("agg-{n}"), &json!({ "n": n })).unwrap();
    outbox::enqueue(&mut tx, &message).await.unwrap();
    tx.commit().await.unwrap();
}

async fn outbox_rows(pool: &PgPool) -> Vec<(String, bool, Option<String>)> {
    sqlx::query_as(
        "SELECT message_type, published_at IS NOT NULL, last_error FROM msgkit_outbox ORDER BY created_at",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn relay(pool: &PgPool, broker: &TestBroker, topology: Topology) -> Shutdown {
    let shutdown = Shutdown::new();
    let config = RelayConfig {
        poll_interval: Duration::from_millis(100),
        retry_initial: Duration::from_millis(100),
        retry_max: Duration::from_millis(300),
        ..RelayConfig::new("archive-test")
    };
    let relay = OutboxRelay::new(pool.clone(), broker.settings("relay"), topology, config);
    shutdown.spawn(relay.run(shutdown.child()));
    shutdown
}

#[tokio::test]
async fn the_relay_archives_every_event_and_an_event_no_queue_takes_stays_in_the_outbox() {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let pool = db.kit_pool().await;
    let shutdown = relay(&pool, &broker, topology(Archive::default())).await;

    enqueue(&pool, "order.placed", 1).await;
    wait_until_async("order.placed published", DEADLINE, || async {
        let rows = outbox_rows(&pool).await;
        rows.iter()
            .all(|(_, published, _)| *published)
            .then_some(())
    })
    .await;
    let archived = broker.take_one("shipping", DEADLINE).await;
    assert_eq!(
        archived.properties.kind().as_ref().map(|k| k.as_str()),
        Some("order.placed")
    );

    // An operator deletes the only work queue bound to order.*: with the archive on, the event
    // must still be refused and kept, not look delivered because the archive took a copy.
    let connection = broker.connect().await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_delete(
            "shipping".into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    // The relay re-declares its topology only when it reconnects: it keeps running as it is.
    enqueue(&pool, "order.cancelled", 2).await;
    let refused = wait_until_async(
        "order.cancelled refused with a reason",
        DEADLINE,
        || async {
            let rows = outbox_rows(&pool).await;
            rows.into_iter()
                .find(|(event, published, error)| {
                    event == "order.cancelled" && !published && error.is_some()
                })
                .and_then(|(_, _, error)| error)
        },
    )
    .await;
    assert!(refused.contains("unroutable"), "{refused}");
    assert!(!refused.contains("archive copy"), "{refused}");

    // Retried while refused, and archived once: its copy is not written again on each retry.
    wait_until_async("three attempts of the refused row", DEADLINE, || async {
        let attempts: i32 = sqlx::query_scalar(
            "SELECT attempts FROM msgkit_outbox WHERE message_type = 'order.cancelled'",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        (attempts >= 3).then_some(())
    })
    .await;
    let bounds = admin::archive_bounds(&broker.settings("bounds"), "events.archive")
        .await
        .unwrap();
    assert_eq!(bounds.first.map(|(offset, _)| offset), Some(0));
    let archived = archived_types(&broker).await;
    assert_eq!(
        archived,
        ["order.placed", "order.cancelled"],
        "each event archived once"
    );

    shutdown.trigger();
    shutdown.wait_for_tasks().await;
    connection.close(200, "done".into()).await.ok();
}

/// The types of every event in the archive, in order (a consumer from `first` until the
/// stream has nothing more for half a second).
async fn archived_types(broker: &TestBroker) -> Vec<String> {
    use futures_util::StreamExt;
    let connection = broker.connect().await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .basic_qos(100, lapin::options::BasicQosOptions { global: false })
        .await
        .unwrap();
    let mut arguments = lapin::types::FieldTable::default();
    arguments.insert(
        "x-stream-offset".into(),
        lapin::types::AMQPValue::LongString("first".into()),
    );
    let mut consumer = channel
        .basic_consume(
            "events.archive".into(),
            "archived-types".into(),
            lapin::options::BasicConsumeOptions::default(),
            arguments,
        )
        .await
        .unwrap();
    let mut types = Vec::new();
    while let Ok(Some(Ok(delivery))) =
        tokio::time::timeout(Duration::from_millis(500), consumer.next()).await
    {
        types.push(
            delivery
                .properties
                .kind()
                .as_ref()
                .map(|k| k.to_string())
                .unwrap_or_default(),
        );
        delivery
            .ack(lapin::options::BasicAckOptions::default())
            .await
            .unwrap();
    }
    connection.close(200, "done".into()).await.ok();
    types
}

#[tokio::test]
async fn a_missing_archive_keeps_events_in_the_outbox() {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let pool = db.kit_pool().await;
    // The archive is deleted by an operator after the relay declared it: the copy is
    // returned, so the row is not published, although its work queue would take it.
    let archive = Archive {
        name: "missing.archive".into(),
        ..Archive::default()
    };
    let believed = topology(archive);
    let connection = broker.connect().await;
    let channel = connection.create_channel().await.unwrap();
    let shutdown = relay(&pool, &broker, believed).await;
    wait_until_async("the relay declared the archive", DEADLINE, || async {
        broker.queue_depth("missing.archive").await
    })
    .await;
    channel
        .queue_delete(
            "missing.archive".into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    enqueue(&pool, "order.placed", 1).await;
    let refused = wait_until_async("the row refused", DEADLINE, || async {
        outbox_rows(&pool)
            .await
            .into_iter()
            .find_map(|(_, published, error)| (!published).then_some(error).flatten())
    })
    .await;
    assert!(refused.starts_with("archive copy: unroutable"), "{refused}");
    shutdown.trigger();
    shutdown.wait_for_tasks().await;
    connection.close(200, "done".into()).await.ok();
}

#[tokio::test]
async fn retention_removes_whole_old_segments() {
    let broker = TestBroker::create().await;
    let archive = Archive {
        max_bytes: 40_000,
        segment_bytes: 8_000,
        ..Archive::default()
    };
    let publisher = broker
        .publisher(&Topology::default().with_archive(archive.clone()))
        .await;
    let settings = broker.settings("bounds");
    let published = std::sync::atomic::AtomicU32::new(0);
    // Retention is applied when a segment fills: keep writing until the first retained
    // offset moves (a few hundred kilobytes at most).
    let first = wait_until_async("retention to remove a segment", DEADLINE, || async {
        let start = published.fetch_add(200, std::sync::atomic::Ordering::Relaxed);
        let batch: Vec<OutgoingMessage> = (0..200)
            .map(|n| {
                let mut message = OutgoingMessage::event(
                    "t.happened",
                    "agg",
                    "test",
                    &json!({ "n": start + n, "pad": "x".repeat(200) }),
                )
                .unwrap();
                message.exchange = String::new();
                message.routing_key = archive.name.clone();
                message
            })
            .collect();
        let outcomes = publisher.publish_batch(&batch).await.unwrap();
        assert!(outcomes.iter().all(|o| o.is_confirmed()));
        let bounds = admin::archive_bounds(&settings, &archive.name)
            .await
            .unwrap();
        bounds.first.filter(|(offset, _)| *offset > 0)
    })
    .await;
    let published = published.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        u64::from(published) > first.0,
        "some events are still retained"
    );
    publisher.close().await;
}
