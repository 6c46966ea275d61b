//! What the stream tests share: raising an alert, opening a stream, checking a frame.

use chrono::{TimeZone, Utc};
use msgkit::TraceParent;
use msgkit::testing::wait_until_async;
use serde_json::{Value, json};

use crate::helpers::{DEADLINE, TestApp};
use crate::sse::{Frame, SseClient};

/// A large amount in Shanghai, then (once handled) a small one in Beijing 3 minutes later:
/// the default rule's alert for `user`. Returns the stored alert.
pub async fn raise_alert(app: &TestApp, user: &str) -> Value {
    raise_traced_alert(app, user, None).await
}

/// [`raise_alert`], the second transaction's request continuing `trace` when given.
pub async fn raise_traced_alert(app: &TestApp, user: &str, trace: Option<TraceParent>) -> Value {
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
    let mut request = app
        .client
        .post(format!("{}/transactions", app.address))
        .json(&body(&second, "50.00", "Beijing", at));
    if let Some(trace) = trace {
        request = request.header("traceparent", trace.to_string());
    }
    let response = request.send().await.unwrap();
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
pub async fn open(
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

pub async fn stream(app: &TestApp, bearer: &str) -> SseClient {
    SseClient::new(open(app, &app.address, "", Some(bearer), None).await)
}

pub fn assert_frame_is(frame: &Frame, alert: &Value) {
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

pub async fn assert_refused(response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
}
