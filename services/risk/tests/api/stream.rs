//! `GET /alerts/stream`: tokens, who sees what, resuming, lagging, replicas, reconnecting,
//! shutdown and expiry.

use std::time::Duration;

use chrono::Utc;
use msgkit::auth::{Claims, Role, TokenKey};
use msgkit::testing::wait_until_async;
use serde_json::Value;

use crate::helpers::{DEADLINE, TestApp, spawn_app, spawn_app_with, token};
use crate::sse::SseClient;
use crate::stream_support::{assert_frame_is, assert_refused, open, raise_alert, stream};

/// Long enough for a frame that should come to have come (negative checks only).
const QUIET: Duration = Duration::from_millis(500);

#[tokio::test]
async fn without_a_valid_token_the_stream_is_refused() {
    let app = spawn_app().await;
    let address = app.address.clone();
    let response = open(&app, &address, "", None, None).await;
    assert!(response.headers().contains_key("www-authenticate"));
    assert_refused(response, 401, "unauthorized").await;
    let garbage = open(&app, &address, "?access_token=v1.nope.nope", None, None).await;
    assert_refused(garbage, 401, "unauthorized").await;
    let other_key = TokenKey::new("another secret of at least 32 bytes!!").unwrap();
    let forged = other_key.issue(&Claims::new(
        "u-1",
        Role::Operator,
        Utc::now(),
        chrono::TimeDelta::minutes(5),
    ));
    assert_refused(
        open(&app, &address, "", Some(&forged), None).await,
        401,
        "unauthorized",
    )
    .await;
    let key = TokenKey::new(crate::helpers::TEST_SECRET).unwrap();
    let expired = key.issue(&Claims::new(
        "u-1",
        Role::User,
        Utc::now() - chrono::TimeDelta::hours(2),
        chrono::TimeDelta::minutes(5),
    ));
    assert_refused(
        open(&app, &address, "", Some(&expired), None).await,
        401,
        "unauthorized",
    )
    .await;
    // A user may not ask for someone else's alerts.
    let user = token("u-1", Role::User);
    assert_refused(
        open(&app, &address, "?user=u-2", Some(&user), None).await,
        403,
        "forbidden",
    )
    .await;
    let bad_id = open(&app, &address, "?last_event_id=x", Some(&user), None).await;
    assert_eq!(bad_id.status(), 422);
}

#[tokio::test]
async fn without_a_token_secret_what_needs_a_token_is_unavailable_and_recording_works() {
    let app = spawn_app_with(|settings| {
        settings.source = msgkit::testing::test_config([]);
    })
    .await;
    let response = open(
        &app,
        &app.address,
        "",
        Some(&token("u-1", Role::User)),
        None,
    )
    .await;
    assert_refused(response, 503, "no_token_secret").await;
    // Everything that needs a token is closed rather than open...
    for path in ["/alerts", "/rules"] {
        let closed = app.send(reqwest::Method::GET, path, None).await;
        assert_refused(closed, 503, "no_token_secret").await;
    }
    // ... and recording transactions, which needs none, works.
    let body = crate::helpers::transaction("t-open", "10.00", "Shanghai", chrono::Utc::now());
    assert_eq!(app.post_transaction(&body).await.status(), 202);
}

#[tokio::test]
async fn a_user_sees_only_their_own_alerts_and_an_operator_everyones() {
    let app = spawn_app().await;
    let mut one = stream(&app, &token("u-1", Role::User)).await;
    // The query parameter, as a browser's EventSource sends it.
    let query = format!("?access_token={}", token("u-2", Role::User));
    let mut two = SseClient::new(open(&app, &app.address, &query, None, None).await);
    let mut operator = stream(&app, &token("ops", Role::Operator)).await;
    let query = format!("?user=u-1&access_token={}", token("ops", Role::Operator));
    let mut operator_on_one = SseClient::new(open(&app, &app.address, &query, None, None).await);

    // u-2's alert commits first: u-1's stream must pass over it.
    let alert_two = raise_alert(&app, "u-2").await;
    let alert_one = raise_alert(&app, "u-1").await;

    let first = one.next(DEADLINE).await.expect("u-1's alert");
    assert_frame_is(&first, &alert_one);
    let first = two.next(DEADLINE).await.expect("u-2's alert");
    assert_frame_is(&first, &alert_two);
    let a = operator.next(DEADLINE).await.expect("the first alert");
    let b = operator.next(DEADLINE).await.expect("the second alert");
    assert_frame_is(&a, &alert_two);
    assert_frame_is(&b, &alert_one);
    assert!(a.seq() < b.seq(), "ids follow commit order");
    let filtered = operator_on_one.next(DEADLINE).await.expect("u-1's alert");
    assert_frame_is(&filtered, &alert_one);
    assert!(one.nothing_within(QUIET).await, "nothing else for u-1");
    assert!(two.nothing_within(QUIET).await, "nothing else for u-2");
}

#[tokio::test]
async fn resuming_after_a_disconnect_loses_and_repeats_nothing() {
    let app = spawn_app().await;
    let operator = token("ops", Role::Operator);
    let mut first = stream(&app, &operator).await;
    let a = raise_alert(&app, "u-a").await;
    let seen = first.next(DEADLINE).await.expect("the first alert");
    assert_frame_is(&seen, &a);
    drop(first);

    // Raised while no stream is open.
    let b = raise_alert(&app, "u-b").await;
    let c = raise_alert(&app, "u-c").await;

    // As a browser's EventSource reconnects: the Last-Event-ID header.
    let mut resumed =
        SseClient::new(open(&app, &app.address, "", Some(&operator), Some(seen.seq())).await);
    // As a new EventSource after a token refresh: the query parameters.
    let query = format!("?access_token={operator}&last_event_id={}", seen.seq());
    let mut by_query = SseClient::new(open(&app, &app.address, &query, None, None).await);
    let fb = resumed.next(DEADLINE).await.expect("b");
    let fc = resumed.next(DEADLINE).await.expect("c");
    assert_frame_is(&fb, &b);
    assert_frame_is(&fc, &c);
    assert!(seen.seq() < fb.seq() && fb.seq() < fc.seq());
    assert_frame_is(&by_query.next(DEADLINE).await.expect("b"), &b);
    assert_frame_is(&by_query.next(DEADLINE).await.expect("c"), &c);

    // Then live, once each.
    let d = raise_alert(&app, "u-d").await;
    assert_frame_is(&resumed.next(DEADLINE).await.expect("d"), &d);
    assert_frame_is(&by_query.next(DEADLINE).await.expect("d"), &d);
    assert!(resumed.nothing_within(QUIET).await, "nothing repeated");

    let pushed = app
        .metric("risk_push_seconds_count", &[])
        .await
        .unwrap_or(0.0);
    assert!(pushed >= 3.0, "live pushes are timed: {pushed}");
    let decided = app
        .metric("risk_decision_seconds_count", &[])
        .await
        .unwrap_or(0.0);
    assert_eq!(decided, 4.0, "each alert's decision is timed once");
    let connected = app.metric("risk_streams_connected", &[]).await;
    assert_eq!(
        connected,
        Some(2.0),
        "the dropped stream is no longer counted"
    );
}

#[tokio::test]
async fn a_stream_on_one_replica_gets_the_alerts_decided_on_another() {
    let app = spawn_app().await;
    let replica = app.replica().await;
    let operator = token("ops", Role::Operator);
    let mut on_a = stream(&app, &operator).await;
    let mut on_b = SseClient::new(open(&app, &replica.address, "", Some(&operator), None).await);

    let mut raised = Vec::new();
    for user in ["u-1", "u-2", "u-3", "u-4"] {
        raised.push(raise_alert(&app, user).await);
    }
    let deciders: Vec<String> = sqlx::query_scalar("SELECT DISTINCT decided_by::text FROM alerts")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    // Whichever replica decided each alert, both streams get every one, in the same order:
    // each replica's stream is fed by its own listener, through the database.
    let mut ids = Vec::new();
    for alert in &raised {
        let a = on_a.next(DEADLINE).await.expect("an alert on A");
        let b = on_b.next(DEADLINE).await.expect("an alert on B");
        assert_frame_is(&a, alert);
        assert_eq!(a, b);
        ids.push(a.seq());
    }
    assert!(ids.is_sorted(), "{ids:?}");
    assert!(!deciders.is_empty());
    drop(replica);
}

#[tokio::test]
async fn a_stream_ends_when_the_service_stops() {
    let mut app = spawn_app().await;
    let mut open_stream = stream(&app, &token("ops", Role::Operator)).await;
    let took = app.stop(Duration::from_secs(10)).await;
    assert!(took < Duration::from_secs(5), "stopped in {took:?}");
    assert_eq!(open_stream.next(DEADLINE).await, None, "the stream ended");
}

#[tokio::test]
async fn a_stream_that_falls_behind_reads_the_table_and_still_loses_nothing() {
    // A buffer of one alert, and two rules alerting on the same event: one transaction
    // commits two alerts, the listener broadcasts both at once, the stream lags.
    let app = spawn_app_with(|settings| settings.source.set("RISK_STREAM_BUFFER", "1")).await;
    let created = app
        .send(
            reqwest::Method::POST,
            "/rules",
            Some(&crate::helpers::default_rule_json()),
        )
        .await;
    assert_eq!(created.status(), 201, "{:?}", created.text().await);
    let mut operator = stream(&app, &token("ops", Role::Operator)).await;
    raise_alert(&app, "u-1").await;
    let stored = wait_until_async("two alerts", DEADLINE, || async {
        let alerts = app.alerts_of("u-1").await;
        (alerts.len() == 2).then_some(alerts)
    })
    .await;
    let first = operator.next(DEADLINE).await.expect("an alert");
    let second = operator.next(DEADLINE).await.expect("the other alert");
    assert_eq!(second.seq(), first.seq() + 1, "both, in order");
    let mut sent = [
        first.json()["alert_id"].clone(),
        second.json()["alert_id"].clone(),
    ];
    let mut expected = [stored[0]["alert_id"].clone(), stored[1]["alert_id"].clone()];
    sent.sort_by_key(Value::to_string);
    expected.sort_by_key(Value::to_string);
    assert_eq!(sent, expected);
    assert!(operator.nothing_within(QUIET).await, "nothing repeated");
}

#[tokio::test]
async fn a_stream_ends_when_its_token_expires() {
    let app = spawn_app().await;
    let key = TokenKey::new(crate::helpers::TEST_SECRET).unwrap();
    let short = key.issue(&Claims::new(
        "u-1",
        Role::User,
        Utc::now(),
        chrono::TimeDelta::seconds(2),
    ));
    let mut expiring = stream(&app, &short).await;
    assert_eq!(expiring.next(DEADLINE).await, None, "the stream ended");
}

/// The backend of the risk service's `LISTEN` connection.
async fn listener_backend(app: &TestApp) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_optional(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_feed_listener_reconnects_when_its_connection_is_killed() {
    let app = spawn_app().await;
    let mut operator = stream(&app, &token("ops", Role::Operator)).await;
    let first = wait_until_async("the listener listens", DEADLINE, || listener_backend(&app)).await;
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(first)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(killed);
    wait_until_async("the listener listens again", DEADLINE, || async {
        listener_backend(&app).await.filter(|pid| *pid != first)
    })
    .await;
    let alert = raise_alert(&app, "u-1").await;
    assert_frame_is(&operator.next(DEADLINE).await.expect("the alert"), &alert);
}

#[tokio::test]
async fn alerts_committed_concurrently_on_two_replicas_reach_every_stream_once_in_id_order() {
    let app = spawn_app().await;
    let replica = app.replica().await;
    let operator = token("ops", Role::Operator);
    let mut on_a = stream(&app, &operator).await;
    let mut on_b = SseClient::new(open(&app, &replica.address, "", Some(&operator), None).await);

    // Each user's two transactions 3 s apart in event time (within the allowed lateness, so
    // they match in either arrival order), all posted at once: both replicas' consumers
    // commit alerts concurrently.
    let users: Vec<String> = (0..12).map(|n| format!("c-{n}")).collect();
    let t0 = Utc::now() - chrono::TimeDelta::minutes(1);
    let posts = users.iter().flat_map(|user| {
        [
            (format!("{user}-big"), "12000.00", "Shanghai", t0),
            (
                format!("{user}-elsewhere"),
                "50.00",
                "Beijing",
                t0 + chrono::TimeDelta::seconds(3),
            ),
        ]
        .map(|(id, amount, location, at)| {
            let body = serde_json::json!({
                "transaction_id": id, "user_id": user, "amount": amount, "currency": "CNY",
                "location": location, "occurred_at": at.to_rfc3339(),
            });
            let app = &app;
            async move { app.post_transaction(&body).await.status() }
        })
    });
    for status in futures_util::future::join_all(posts).await {
        assert_eq!(status, 202);
    }
    let stored: i64 = wait_until_async("an alert per user", DEADLINE, || async {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM alerts")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        (count == users.len() as i64).then_some(count)
    })
    .await;

    let mut ids_a = Vec::new();
    let mut ids_b = Vec::new();
    for _ in 0..stored {
        ids_a.push(on_a.next(DEADLINE).await.expect("an alert on A").seq());
        ids_b.push(on_b.next(DEADLINE).await.expect("an alert on B").seq());
    }
    let numbered: Vec<i64> = sqlx::query_scalar("SELECT seq FROM alerts ORDER BY seq")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(numbered, (1..=stored).collect::<Vec<_>>(), "no gaps");
    assert_eq!(ids_a, numbered, "A: every alert once, in id order");
    assert_eq!(ids_b, numbered, "B: every alert once, in id order");
    let mut from_start =
        SseClient::new(open(&app, &replica.address, "", Some(&operator), Some(0)).await);
    for id in &numbered {
        assert_eq!(from_start.next(DEADLINE).await.expect("history").seq(), *id);
    }
    assert!(on_a.nothing_within(QUIET).await, "nothing repeated");
}
