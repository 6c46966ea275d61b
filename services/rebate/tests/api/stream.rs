//! `GET /rebates/{customer}/stream`: tokens, the current balance on connect, live changes,
//! resuming.

use std::time::Duration;

use chrono::Utc;
use msgkit::auth::Role;
use msgkit::testing::{metric_value, scrape, wait_until_async};
use serde_json::Value;

use crate::helpers::{DEADLINE, TestApp, payment, spawn_app, token};
use crate::sse::{Frame, SseClient};

/// How long a live change may take from the archive to the stream.
const PUSH_DEADLINE: Duration = Duration::from_secs(10);

async fn refused(response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
}

fn assert_balance(frame: &Frame, customer: &str, version: i64, cents: i64) {
    assert_eq!(frame.event.as_deref(), Some("balance"));
    assert_eq!(frame.seq(), version, "{frame:?}");
    let data = frame.json();
    assert_eq!(data["customer"], customer, "{data}");
    assert_eq!(data["version"], version, "{data}");
    assert_eq!(data["balance_cents"], cents, "{data}");
}

async fn stream_of(app: &TestApp, customer: &str, last_event_id: Option<i64>) -> SseClient {
    let bearer = token(customer, Role::User);
    SseClient::new(
        app.open_stream(customer, "", Some(&bearer), last_event_id)
            .await,
    )
}

#[tokio::test]
async fn a_stream_without_a_valid_token_or_for_another_customer_is_refused() {
    let app = spawn_app().await;
    refused(
        app.open_stream("c-1", "", None, None).await,
        401,
        "unauthorized",
    )
    .await;
    refused(
        app.open_stream("c-1", "", Some("v1.bogus.token"), None)
            .await,
        401,
        "unauthorized",
    )
    .await;
    let other = token("c-2", Role::User);
    refused(
        app.open_stream("c-1", "", Some(&other), None).await,
        403,
        "forbidden",
    )
    .await;
    // Its own, in the query as an EventSource sends it; an operator's for anyone.
    let own = token("c-1", Role::User);
    let response = app
        .open_stream("c-1", &format!("?access_token={own}"), None, None)
        .await;
    assert_eq!(response.status(), 200);
    let operator = token("ops", Role::Operator);
    let response = app.open_stream("c-1", "", Some(&operator), None).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_stream_sends_the_current_balance_then_each_change_live() {
    let app = spawn_app().await;
    let mut stream = stream_of(&app, "c-live", None).await;
    let first = stream
        .next(PUSH_DEADLINE)
        .await
        .expect("the current balance");
    assert_balance(&first, "c-live", 0, 0);
    wait_until_async("the stream counted as connected", DEADLINE, || async {
        let exposition = scrape(&app.client, &app.address).await;
        (metric_value(&exposition, "rebate_streams_connected", &[]) == Some(1.0)).then_some(())
    })
    .await;
    // Another customer's change is not shown.
    app.events
        .paid(&payment("c-other", 10_000, Utc::now()))
        .await;
    app.events
        .paid(&payment("c-live", 25_000, Utc::now()))
        .await;
    let change = stream.next(PUSH_DEADLINE).await.expect("a change");
    assert_balance(&change, "c-live", 1, 250);
    app.events.paid(&payment("c-live", 1_000, Utc::now())).await;
    let change = stream.next(PUSH_DEADLINE).await.expect("a change");
    assert_balance(&change, "c-live", 2, 260);
    let exposition = scrape(&app.client, &app.address).await;
    assert!(
        metric_value(&exposition, "rebate_lines_total", &[("kind", "payment")]) >= Some(3.0),
        "{exposition}"
    );
}

#[tokio::test]
async fn a_stream_resumed_with_last_event_id_sends_the_balance_only_if_newer() {
    let app = spawn_app().await;
    app.events
        .paid(&payment("c-resume", 10_000, Utc::now()))
        .await;
    app.events
        .paid(&payment("c-resume", 20_000, Utc::now()))
        .await;
    app.rebates_at("c-resume", 2).await;
    // A client that has version 1 gets version 2 at once.
    let mut behind = stream_of(&app, "c-resume", Some(1)).await;
    let frame = behind.next(PUSH_DEADLINE).await.expect("the newer balance");
    assert_balance(&frame, "c-resume", 2, 300);
    // One that has version 2 gets nothing until the next change.
    let mut current = stream_of(&app, "c-resume", Some(2)).await;
    assert!(
        current.nothing_within(Duration::from_millis(500)).await,
        "no frame for a balance the client has"
    );
    app.events
        .paid(&payment("c-resume", 30_000, Utc::now()))
        .await;
    let frame = current.next(PUSH_DEADLINE).await.expect("the change");
    assert_balance(&frame, "c-resume", 3, 600);
    let frame = behind.next(PUSH_DEADLINE).await.expect("the change");
    assert_balance(&frame, "c-resume", 3, 600);
}

#[tokio::test]
async fn an_open_stream_ends_when_the_service_stops_without_holding_it_up() {
    let mut app = spawn_app().await;
    let mut stream = stream_of(&app, "c-stop", None).await;
    assert_balance(&stream.next(PUSH_DEADLINE).await.unwrap(), "c-stop", 0, 0);
    let started = std::time::Instant::now();
    app.service.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped in {:?}",
        started.elapsed()
    );
    assert!(
        stream.next(PUSH_DEADLINE).await.is_none(),
        "the stream ended"
    );
}
