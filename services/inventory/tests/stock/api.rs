//! What a shop page sees: stock values, and their changes as they commit.

use std::time::Duration;

use msgkit::testing::{metric_value, scrape, wait_until_async};
use serde_json::Value;

use crate::helpers::{DEADLINE, spawn_app, spawn_app_with};
use crate::sse::{Frame, SseClient};

/// A frame's stock value, checked for shape.
fn value(frame: &Frame) -> Value {
    assert_eq!(frame.event.as_deref(), Some("stock"));
    let data = frame.json();
    for field in ["sku", "available", "reserved", "version", "updated_at"] {
        assert!(!data[field].is_null(), "{field} in {data}");
    }
    data
}

async fn next_value(stream: &mut SseClient) -> (i64, Value) {
    let frame = stream.next(DEADLINE).await.expect("a frame");
    (frame.seq(), value(&frame))
}

#[tokio::test]
async fn get_stock_returns_the_seeded_value() {
    let app = spawn_app().await;
    let response = app.get_stock("SKU-LIMITED").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["sku"], "SKU-LIMITED");
    assert_eq!(body["available"], 3);
    assert_eq!(body["reserved"], 0);
    assert_eq!(body["version"], 1);
    assert!(body["updated_at"].is_string(), "{body}");
}

#[tokio::test]
async fn get_stock_of_an_unknown_sku_is_a_404_problem() {
    let app = spawn_app().await;
    let response = app.get_stock("SKU-NOPE").await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "not_found", "{body}");
    assert!(body["message"].is_string(), "{body}");
}

#[tokio::test]
async fn a_reservation_shows_on_an_open_stream_with_its_new_version() {
    let app = spawn_app().await;
    let mut stream = app.stream("?sku=SKU-1").await;
    let (first_id, first) = next_value(&mut stream).await;
    assert_eq!(first["sku"], "SKU-1");
    assert_eq!(first["version"], 1);

    app.place(&[("SKU-1", 2)]).await;
    let (id, changed) = next_value(&mut stream).await;
    assert!(id > first_id, "ids grow: {first_id} then {id}");
    assert_eq!(changed["sku"], "SKU-1");
    assert_eq!(changed["version"], 2);
    assert_eq!(changed["available"], 100_000 - 2);
    assert_eq!(changed["reserved"], 2);
    assert_eq!(
        app.get_stock("SKU-1").await.json::<Value>().await.unwrap(),
        changed
    );
}

#[tokio::test]
async fn changes_while_no_stream_is_open_are_in_the_first_streams_start_and_not_sent_again() {
    // With no stream open the feed's listener reads nothing; the first stream must still
    // start from the current values and then get each later change once.
    let app = spawn_app().await;
    app.place(&[("SKU-1", 2)]).await;
    app.place(&[("SKU-1", 3)]).await;
    wait_until_async("both reservations committed", DEADLINE, || async {
        let body: Value = app.get_stock("SKU-1").await.json().await.unwrap();
        (body["version"] == 3).then_some(())
    })
    .await;
    let mut stream = app.stream("?sku=SKU-1").await;
    let (first_id, first) = next_value(&mut stream).await;
    assert_eq!(first["version"], 3, "{first}");
    app.place(&[("SKU-1", 1)]).await;
    let (id, changed) = next_value(&mut stream).await;
    assert!(id > first_id, "ids grow: {first_id} then {id}");
    assert_eq!(
        changed["version"], 4,
        "the next change, not an older one again: {changed}"
    );
    assert_eq!(changed["available"], 100_000 - 6);
    app.place(&[("SKU-1", 1)]).await;
    let (_, next) = next_value(&mut stream).await;
    assert_eq!(next["version"], 5, "{next}");
}

#[tokio::test]
async fn a_stream_without_skus_starts_with_every_current_value() {
    let app = spawn_app().await;
    let mut stream = app.stream("").await;
    let mut skus = Vec::new();
    for _ in 0..6 {
        let (_, value) = next_value(&mut stream).await;
        skus.push(value["sku"].as_str().unwrap().to_owned());
    }
    skus.sort();
    assert_eq!(
        skus,
        [
            "SKU-1",
            "SKU-2",
            "SKU-3",
            "SKU-GONE",
            "SKU-LIMITED",
            "SKU-LUX"
        ]
    );
    assert!(stream.nothing_within(Duration::from_millis(300)).await);
}

#[tokio::test]
async fn resuming_with_last_event_id_sends_only_newer_values() {
    let app = spawn_app().await;
    let mut stream = app.stream("?sku=SKU-1&sku=SKU-2&sku=SKU-3").await;
    let mut last = 0;
    for _ in 0..3 {
        last = last.max(next_value(&mut stream).await.0);
    }
    drop(stream);

    app.place(&[("SKU-2", 5)]).await;
    app.wait_for_version("SKU-2", 2).await;

    let query = "?sku=SKU-1&sku=SKU-2&sku=SKU-3";
    for resumed in [
        app.open_stream(query, Some(last)).await,
        app.open_stream(&format!("{query}&last_event_id={last}"), None)
            .await,
    ] {
        let mut resumed = SseClient::new(resumed);
        let (id, value) = next_value(&mut resumed).await;
        assert!(id > last);
        assert_eq!(value["sku"], "SKU-2");
        assert_eq!(value["version"], 2);
        assert_eq!(value["available"], 50_000 - 5);
        assert!(
            resumed.nothing_within(Duration::from_millis(300)).await,
            "nothing it had already"
        );
    }
}

#[tokio::test]
async fn changes_to_one_sku_arrive_in_version_order() {
    let app = spawn_app().await;
    let mut stream = app.stream("?sku=SKU-3").await;
    let (mut last_id, first) = next_value(&mut stream).await;
    let mut version = first["version"].as_i64().unwrap();
    // Two orders at once: handled concurrently or in one batch, the stock changes twice.
    tokio::join!(app.place(&[("SKU-3", 1)]), app.place(&[("SKU-3", 2)]));
    while version < 3 {
        let (id, value) = next_value(&mut stream).await;
        let next = value["version"].as_i64().unwrap();
        assert!(id > last_id && next > version, "{version} then {value}");
        (last_id, version) = (id, next);
        if version == 3 {
            assert_eq!(value["available"], 10_000 - 3);
            assert_eq!(value["reserved"], 3);
        }
    }
    assert_eq!(version, 3);
}

#[tokio::test]
async fn a_change_committed_later_gets_a_later_id_even_when_it_started_first() {
    let app = spawn_app().await;
    let mut stream = app.stream("?sku=SKU-1&sku=SKU-2").await;
    let (a, _) = next_value(&mut stream).await;
    let (b, _) = next_value(&mut stream).await;
    let before = a.max(b);

    // The first transaction changes SKU-1, the second SKU-2 and commits first.
    let mut first = app.pool.begin().await.unwrap();
    sqlx::query("UPDATE stock SET available = available - 1 WHERE sku = 'SKU-1'")
        .execute(&mut *first)
        .await
        .unwrap();
    let mut second = app.pool.begin().await.unwrap();
    sqlx::query("UPDATE stock SET available = available - 1 WHERE sku = 'SKU-2'")
        .execute(&mut *second)
        .await
        .unwrap();
    second.commit().await.unwrap();
    let (second_id, value) = next_value(&mut stream).await;
    assert_eq!(value["sku"], "SKU-2");
    first.commit().await.unwrap();
    let (first_id, value) = next_value(&mut stream).await;
    assert_eq!(value["sku"], "SKU-1");
    assert!(before < second_id && second_id < first_id);

    // A client that saw only the second resumes after it and still gets the first.
    let mut resumed = SseClient::new(
        app.open_stream("?sku=SKU-1&sku=SKU-2", Some(second_id))
            .await,
    );
    let (id, value) = next_value(&mut resumed).await;
    assert_eq!((id, value["sku"].as_str()), (first_id, Some("SKU-1")));
}

#[tokio::test]
async fn a_stream_that_falls_behind_reads_the_table_and_still_loses_nothing() {
    // A buffer of one change, and one transaction changing three SKUs: the listener
    // broadcasts three values at once and the stream lags.
    let app = spawn_app_with(&[("INVENTORY_STREAM_BUFFER", "1")]).await;
    let query = "?sku=SKU-1&sku=SKU-2&sku=SKU-3";
    let mut stream = app.stream(query).await;
    let mut last = 0;
    for _ in 0..3 {
        last = last.max(next_value(&mut stream).await.0);
    }
    sqlx::query(
        "UPDATE stock SET available = available - 1 WHERE sku IN ('SKU-1', 'SKU-2', 'SKU-3')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let mut skus = Vec::new();
    for _ in 0..3 {
        let (id, value) = next_value(&mut stream).await;
        assert!(id > last, "in feed order, none repeated: {last} then {id}");
        assert_eq!(value["version"], 2, "{value}");
        last = id;
        skus.push(value["sku"].as_str().unwrap().to_owned());
    }
    skus.sort();
    assert_eq!(skus, ["SKU-1", "SKU-2", "SKU-3"]);
    assert!(
        stream.nothing_within(Duration::from_millis(300)).await,
        "nothing repeated"
    );
}

#[tokio::test]
async fn a_stream_keeps_following_after_the_listener_loses_its_connection() {
    let app = spawn_app().await;
    let mut stream = app.stream("?sku=SKU-1").await;
    next_value(&mut stream).await;
    let terminated: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND query ILIKE 'LISTEN%inventory_stock%'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(terminated, 1, "the stock listener's connection");
    // Committed while the listener is away (it waits 100 ms before reconnecting): nothing
    // announces it, the streams' reread after the listener reconnects sends it.
    sqlx::query("UPDATE stock SET available = available - 4 WHERE sku = 'SKU-1'")
        .execute(&app.pool)
        .await
        .unwrap();
    let (_, value) = next_value(&mut stream).await;
    assert_eq!(value["version"], 2);
    assert_eq!(value["available"], 100_000 - 4);
    // And the listener follows again.
    app.place(&[("SKU-1", 1)]).await;
    let (_, value) = next_value(&mut stream).await;
    assert_eq!(value["version"], 3);
    assert_eq!(value["reserved"], 1);
}

#[tokio::test]
async fn a_stream_of_too_many_skus_is_refused_with_400() {
    let app = spawn_app().await;
    let query: Vec<String> = (0..=inventory::http::MAX_SKUS)
        .map(|n| format!("sku=SKU-{n}"))
        .collect();
    let response = app
        .open_stream(&format!("?{}", query.join("&")), None)
        .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "bad_request", "{body}");
    assert_eq!(body["field"], "sku", "{body}");
}

#[tokio::test]
async fn a_stream_is_counted_while_open_and_ends_when_the_service_stops() {
    let mut app = spawn_app().await;
    let mut stream = app.stream("?sku=SKU-1").await;
    next_value(&mut stream).await;
    wait_until_async("the stream counted", DEADLINE, || async {
        let exposition = scrape(&app.client, &app.address).await;
        (metric_value(&exposition, "inventory_stock_streams_connected", &[]) == Some(1.0))
            .then_some(())
    })
    .await;

    let took = app.stop(Duration::from_secs(10)).await;
    assert!(took < Duration::from_secs(5), "stopped in {took:?}");
    assert_eq!(stream.next(DEADLINE).await, None, "the stream ended");
}
