//! `GET /alerts/stream`: tokens, who sees what, resuming, replicas, shutdown, and tokens kept
//! out of the logs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use msgkit::auth::{Claims, Role, TokenKey};
use msgkit::testing::wait_until_async;
use serde_json::{Value, json};

use crate::helpers::{DEADLINE, TestApp, spawn_app, spawn_app_with, token};
use crate::sse::SseClient;

/// Long enough for a frame that should come to have come (negative checks only).
const QUIET: Duration = Duration::from_millis(500);

/// A large amount in Shanghai, then (once handled) a small one in Beijing 3 minutes later:
/// the default rule's alert for `user`. Returns the stored alert.
async fn raise_alert(app: &TestApp, user: &str) -> Value {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap();
    let first = format!("{user}-big");
    let second = format!("{user}-elsewhere");
    let body = |id: &str, amount: &str, location: &str, at| {
        json!({
            "transaction_id": id, "user_id": user, "amount": amount, "currency": "CNY",
            "location": location, "occurred_at": at,
        })
    };
    let handled_before = handled(app).await;
    let response = app
        .post_transaction(&body(&first, "12000.00", "Shanghai", t0.to_rfc3339()))
        .await;
    assert_eq!(response.status(), 202);
    // Handled before the second is sent, so that the two are evaluated in order.
    app.wait_until_handled(handled_before + 1).await;
    let at = (t0 + chrono::Duration::minutes(3)).to_rfc3339();
    let response = app
        .post_transaction(&body(&second, "50.00", "Beijing", at))
        .await;
    assert_eq!(response.status(), 202);
    wait_until_async(&format!("an alert for {user}"), DEADLINE, || async {
        app.alerts_of(user).await.into_iter().next()
    })
    .await
}

async fn handled(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM msgkit_inbox WHERE message_type = 'transaction.recorded'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// `GET {address}/alerts/stream{query}` with a Bearer token when given.
async fn open(
    app: &TestApp,
    address: &str,
    query: &str,
    bearer: Option<&str>,
    last_event_id: Option<i64>,
) -> reqwest::Response {
    let mut request = app.client.get(format!("{address}/alerts/stream{query}"));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    request.send().await.expect("GET /alerts/stream")
}

async fn stream(app: &TestApp, bearer: &str) -> SseClient {
    SseClient::new(open(app, &app.address, "", Some(bearer), None).await)
}

fn assert_frame_is(frame: &crate::sse::Frame, alert: &Value) {
    assert_eq!(frame.event.as_deref(), Some("alert"));
    let data = frame.json();
    assert_eq!(data["alert_id"], alert["alert_id"], "{data}");
    assert_eq!(data["seq"].as_i64(), Some(frame.seq()));
    for field in [
        "rule_id",
        "rule_version",
        "severity",
        "user_id",
        "transaction_ids",
    ] {
        assert_eq!(data[field], alert[field], "{field}");
    }
    assert!(
        data["at"].is_string() && data["created_at"].is_string(),
        "{data}"
    );
}

async fn assert_refused(response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
}

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
async fn without_a_token_secret_the_stream_is_unavailable_and_the_rest_works() {
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
    let alerts = app.send(reqwest::Method::GET, "/alerts", None).await;
    assert_eq!(alerts.status(), 200);
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

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn a_token_in_the_query_never_reaches_the_logs() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
        .with_ansi(false)
        .finish();
    // This test's runtime has one thread: the service's tasks log here too.
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = spawn_app().await;
    let good = token("u-1", Role::User);
    let mut live = SseClient::new(
        open(
            &app,
            &app.address,
            &format!("?access_token={good}&last_event_id=0"),
            None,
            None,
        )
        .await,
    );
    let refused = open(
        &app,
        &app.address,
        "?access_token=v1.secret-garbage.zzz",
        None,
        None,
    )
    .await;
    assert_eq!(refused.status(), 401);
    let alert = raise_alert(&app, "u-1").await;
    assert_frame_is(&live.next(DEADLINE).await.expect("the alert"), &alert);
    drop(live);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("access_token=REDACTED"),
        "the query is recorded, redacted"
    );
    assert!(
        logs.contains("alert stream refused"),
        "the refusal is logged"
    );
    assert!(logs.contains("alert pushed"), "the push is logged");
    let signature = good.rsplit('.').next().unwrap();
    assert!(
        !logs.contains(signature),
        "a token's signature is in the logs"
    );
    assert!(
        !logs.contains("secret-garbage"),
        "a refused token is in the logs"
    );
}
