//! The projection over the archive's history: built after the events, rebuilt, followed live.

use chrono::{Duration, TimeZone, Utc};
use msgkit::auth::Role;
use msgkit::projection::admin;
use msgkit::testing::{TestBroker, TestDatabase, wait_until_async};
use msgkit::topology::ARCHIVE_STREAM;
use sqlx::PgPool;

use crate::helpers::{DEADLINE, Events, payment, refund_of, spawn_app, spawn_app_on, token};
use crate::sse::SseClient;

#[tokio::test]
async fn a_projection_started_after_the_events_builds_from_history_then_follows_live() {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let events = Events::open(&broker).await;
    let at = Utc.with_ymd_and_hms(2026, 9, 1, 8, 0, 0).unwrap();
    let mut expected = 0;
    for i in 0..30 {
        let payment = payment("c-history", 10_000 + i, at + Duration::hours(i));
        expected += payment.amount_cents * if i < 10 { 100 } else { 150 } / 10_000;
        events.paid(&payment).await;
    }
    let app = spawn_app_on(db, broker, events).await;
    let body = app.rebates_at("c-history", 30).await;
    assert_eq!(body["balance_cents"], expected, "{body}");
    // Then live: a new payment shows on the stream.
    let bearer = token("c-history", Role::User);
    let mut stream = SseClient::new(
        app.open_stream("c-history", "", Some(&bearer), Some(30))
            .await,
    );
    app.events
        .paid(&payment("c-history", 100_000, Utc::now()))
        .await;
    let frame = stream.next(DEADLINE).await.expect("a live change");
    assert_eq!(frame.seq(), 31);
}

/// Every row of `table` in `schema`, as text, sorted.
async fn rows(pool: &PgPool, schema: &str, table: &str) -> Vec<String> {
    let query = format!("SELECT t::text FROM \"{schema}\".\"{table}\" AS t ORDER BY 1");
    sqlx::query_scalar(sqlx::AssertSqlSafe(query))
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_rebuild_equals_the_live_tables_row_for_row_and_the_stream_follows_the_new_ones() {
    let app = spawn_app().await;
    let at = Utc.with_ymd_and_hms(2026, 10, 1, 8, 0, 0).unwrap();
    for i in 0..40 {
        let payment = payment(
            ["c-r1", "c-r2"][i as usize % 2],
            30_000 + i * 1_000,
            at + Duration::hours(i),
        );
        let message = app.events.paid(&payment).await;
        if i % 5 == 0 {
            app.events.publish_message(&message).await; // a duplicate
            app.events
                .refunded(&refund_of(
                    &payment,
                    at + Duration::hours(i) + Duration::minutes(5),
                ))
                .await;
        }
    }
    app.rebates_at("c-r1", 24).await;
    app.rebates_at("c-r2", 24).await;
    let bounds = admin::archive_bounds(&app.broker.settings("test/bounds"), ARCHIVE_STREAM)
        .await
        .unwrap();
    admin::request_rebuild(&app.pool, "rebate", &bounds)
        .await
        .unwrap();
    let done = wait_until_async("the rebuild to finish", DEADLINE, || async {
        admin::rebuild_status(&app.pool, "rebate")
            .await
            .unwrap()
            .filter(|status| status.is_finished())
    })
    .await;
    assert_eq!(done.state, "done", "{done:?}");
    for table in ["rebate_lines", "rebate_balances", "rebate_monthly_spend"] {
        let live = rows(&app.pool, "rebate", table).await;
        let replaced = rows(&app.pool, "rebate_rebate_previous", table).await;
        assert!(!live.is_empty(), "{table}");
        assert_eq!(
            live, replaced,
            "{table}: the rebuilt rows equal the replaced ones"
        );
    }
    // The switched-in table notifies: a stream sees the next change.
    let bearer = token("c-r1", Role::User);
    let mut stream = SseClient::new(app.open_stream("c-r1", "", Some(&bearer), Some(24)).await);
    app.events.paid(&payment("c-r1", 10_000, Utc::now())).await;
    let frame = stream
        .next(DEADLINE)
        .await
        .expect("a change after the switch");
    assert_eq!(frame.seq(), 25);
}

#[tokio::test]
async fn payments_published_through_an_outbox_relay_with_the_archive_on_reach_the_balance() {
    let app = spawn_app().await;
    // A payer service of the kit in the same database (its own schema) and vhost, relaying
    // its outbox with the archive on, as payment does.
    let mut settings =
        msgkit::testing::service_settings("payer", "payer", &app.db, app.broker.settings("payer"));
    settings.archive = Some(msgkit::topology::Archive::default());
    let payer = msgkit::service::Service::start(
        settings,
        contracts::topology(),
        sqlx::migrate::Migrator::DEFAULT,
    )
    .await
    .unwrap()
    .with_relay();
    let payer_pool = payer.pool().clone();
    let stop = msgkit::Shutdown::new();
    let running = tokio::spawn(payer.run_until_stopped(stop.clone()));
    let first = payment("c-relayed", 40_000, Utc::now());
    let second = payment("c-relayed", 70_000, Utc::now());
    let mut tx = payer_pool.begin().await.unwrap();
    for payment in [&first, &second] {
        let message = msgkit::outbox::OutboxMessage::of(
            contracts::event_type::PAYMENT_SUCCEEDED,
            payment.order_id.to_string(),
            payment,
        )
        .unwrap();
        msgkit::outbox::enqueue(&mut tx, &message).await.unwrap();
    }
    let refund = msgkit::outbox::OutboxMessage::of(
        contracts::event_type::PAYMENT_REFUNDED,
        first.order_id.to_string(),
        &refund_of(&first, Utc::now()),
    )
    .unwrap();
    // payment.refunded may have no work queue bound yet: its archive copy is written all
    // the same, and the row stays in the outbox until a queue takes it.
    msgkit::outbox::enqueue(&mut tx, &refund).await.unwrap();
    tx.commit().await.unwrap();
    let body = app.rebates_at("c-relayed", 2).await;
    assert_eq!(body["balance_cents"], 400 + 700, "{body}");
    let body = app.rebates_at("c-relayed", 3).await;
    assert_eq!(body["balance_cents"], 700, "{body}");
    stop.trigger();
    running.await.unwrap().unwrap();
}
