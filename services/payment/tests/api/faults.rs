//! The gateway's injectable callback faults, and its retries, with the gateway's own table as
//! the ground truth.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use payment::signature::{CallbackKey, SIGNATURE_HEADER};
use uuid::Uuid;

use msgkit::testing::wait_until_async;

use crate::helpers::{DEADLINE, TEST_SECRET, reserve, spawn_app_with, spawn_app_with_clock};

#[tokio::test]
async fn a_lost_callback_is_recorded_as_lost_and_never_sent() {
    let mut app = spawn_app_with(&[("GATEWAY_CALLBACK_LOSS_RATE", "1")]).await;
    let order_id = Uuid::new_v4();
    reserve(&app.pool, order_id, 5_000).await;
    let owed = app.wait_for_sent(1).await;
    assert_eq!(owed.len(), 1);
    assert!(owed[0].lost && !owed[0].sent, "{owed:?}");
    assert_eq!(owed[0].order_id, order_id);
    // Past its due time and a whole poll of the sender: still nothing.
    assert!(
        app.published
            .next(Duration::from_millis(1_500))
            .await
            .is_none(),
        "a lost callback is never published"
    );
    assert!(app.received().await.is_empty());
    assert_eq!(app.owed().await[0].attempts, 0, "never even tried");
    let lost = app
        .metric("payment_gateway_callbacks_lost_total", &[])
        .await;
    assert_eq!(lost, Some(1.0));
}

#[tokio::test]
async fn a_duplicated_callback_is_sent_twice_and_stored_and_published_once() {
    let mut app = spawn_app_with(&[("GATEWAY_CALLBACK_DUPLICATE_RATE", "1")]).await;
    reserve(&app.pool, Uuid::new_v4(), 5_000).await;
    let owed = app.wait_for_sent(1).await;
    assert_eq!((owed[0].copies, owed[0].attempts), (2, 1), "{owed:?}");
    assert_eq!(app.received().await.len(), 1);
    assert_eq!(app.outbox_count("payment.callback").await, 1);
    app.next_published().await;
    assert!(
        app.published
            .next(Duration::from_millis(500))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn a_wrong_amount_callback_reports_more_than_was_charged() {
    let mut app = spawn_app_with(&[("GATEWAY_CALLBACK_WRONG_AMOUNT_RATE", "1")]).await;
    reserve(&app.pool, Uuid::new_v4(), 5_000).await;
    let owed = app.wait_for_sent(1).await;
    assert_eq!(owed[0].charged_amount_cents, 5_000);
    assert!((5_001..=5_100).contains(&owed[0].amount_cents), "{owed:?}");
    let published = app.next_published().await;
    assert_eq!(published["amount_cents"], owed[0].amount_cents);
}

#[tokio::test]
async fn reordered_callbacks_of_orders_charged_together_arrive_newest_first() {
    let window_ms = 2_000;
    let app = spawn_app_with(&[
        ("GATEWAY_CALLBACK_DELAY_MS", "0"),
        ("GATEWAY_CALLBACK_REORDER_MS", &window_ms.to_string()),
    ])
    .await;
    // Two charges a few milliseconds apart share a hold window unless a window boundary falls
    // between them; such a pair proves nothing, and the next pair is tried.
    for round in 1..=3 {
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
        reserve(&app.pool, first, 100).await;
        reserve(&app.pool, second, 100).await;
        app.wait_for_received(round * 2).await;
        let arrivals: Vec<(Uuid, i64, DateTime<Utc>)> = sqlx::query_as(
            "SELECT g.order_id, g.seq, p.received_at FROM gateway_callbacks g \
             JOIN payment_callbacks p USING (callback_id) \
             WHERE g.order_id IN ($1, $2) ORDER BY p.received_at",
        )
        .bind(first)
        .bind(second)
        .fetch_all(&app.pool)
        .await
        .unwrap();
        let apart = arrivals[1].2 - arrivals[0].2;
        if apart < chrono::Duration::milliseconds(window_ms / 2) {
            assert!(
                arrivals[0].1 > arrivals[1].1,
                "held together, the later charge is sent first: {arrivals:?}"
            );
            return;
        }
    }
    panic!("three pairs of charges each straddled a hold window");
}

/// A merchant endpoint that refuses the first `refusals` requests with 503, then accepts,
/// recording what it got.
async fn flaky_endpoint(refusals: usize) -> (String, Arc<Mutex<Vec<(StatusCode, bool)>>>) {
    let seen: Arc<Mutex<Vec<(StatusCode, bool)>>> = Arc::default();
    let key = CallbackKey::new(TEST_SECRET).unwrap();
    let record = seen.clone();
    let route = axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
        let (record, key) = (record.clone(), key.clone());
        async move {
            let signature = headers
                .get(SIGNATURE_HEADER)
                .and_then(|value| value.to_str().ok());
            let verified = key.verify(signature, &body).is_ok();
            let mut seen = record.lock().unwrap();
            let status = if seen.len() < refusals {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            seen.push((status, verified));
            status
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/hook", route);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test]
async fn a_refused_callback_is_retried_with_backoff_until_the_endpoint_answers_2xx() {
    let (url, seen) = flaky_endpoint(3).await;
    let app = spawn_app_with(&[("GATEWAY_CALLBACK_URL", &url)]).await;
    reserve(&app.pool, Uuid::new_v4(), 5_000).await;
    let owed = app.wait_for_sent(1).await;
    assert_eq!(owed[0].attempts, 4, "three refusals, then accepted");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter()
            .map(|(status, _)| status.as_u16())
            .collect::<Vec<_>>(),
        [503, 503, 503, 200]
    );
    assert!(
        seen.iter().all(|(_, verified)| *verified),
        "every attempt signed"
    );
    let last_error: Option<String> = sqlx::query_scalar("SELECT last_error FROM gateway_callbacks")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(last_error, None, "cleared once sent");
    let attempts = "payment_gateway_callback_attempts_total";
    assert_eq!(
        app.metric(attempts, &[("result", "refused")]).await,
        Some(3.0)
    );
    assert_eq!(
        app.metric(attempts, &[("result", "accepted")]).await,
        Some(1.0)
    );
}

#[tokio::test]
async fn a_callback_is_sent_when_its_time_comes_and_not_before() {
    let clock = msgkit::clock::Clock::system();
    // Ten minutes of delay, and as long between retries: the test moves the clock instead.
    let (url, seen) = flaky_endpoint(1).await;
    let app = spawn_app_with_clock(
        &[
            ("GATEWAY_CALLBACK_DELAY_MS", "600000"),
            ("GATEWAY_CALLBACK_RETRY_MS", "600000"),
            ("GATEWAY_CALLBACK_URL", &url),
        ],
        clock.clone(),
    )
    .await;
    reserve(&app.pool, Uuid::new_v4(), 5_000).await;
    wait_until_async("the callback planned", DEADLINE, || async {
        (app.owed().await.len() == 1).then_some(())
    })
    .await;
    // An absence: a whole poll of the sender (1 s) must go by without a request.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(seen.lock().unwrap().is_empty(), "sent before its time");

    clock.advance(Duration::from_secs(600));
    wait_until_async("the first attempt, refused", DEADLINE, || async {
        (app.owed().await[0].attempts == 1 && seen.lock().unwrap().len() == 1).then_some(())
    })
    .await;
    assert!(!app.owed().await[0].sent);
    // The retry waits ten minutes (± jitter) of the clock.
    clock.advance(Duration::from_secs(900));
    let owed = app.wait_for_sent(1).await;
    assert_eq!(owed[0].attempts, 2);
    assert_eq!(seen.lock().unwrap().len(), 2);
}
