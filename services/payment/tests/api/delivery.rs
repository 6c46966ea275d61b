//! Delivery: the gateway sends each callback when it is due, retries it with backoff until
//! the endpoint answers 2xx, and a stop abandons nothing it cannot hand back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use msgkit::testing::wait_until_async;
use payment::signature::{CallbackKey, SIGNATURE_HEADER};
use uuid::Uuid;

use crate::helpers::{DEADLINE, Owed, TEST_SECRET, reserve, spawn_app_with, spawn_app_with_clock};

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
    let (later, now) = (Uuid::new_v4(), Uuid::new_v4());
    reserve(&app.pool, later, 5_000).await;
    reserve(&app.pool, now, 7_000).await;
    wait_until_async("both callbacks planned", DEADLINE, || async {
        (app.owed().await.len() == 2).then_some(())
    })
    .await;
    // One callback made due at once: the sender round that sends it (refused: the endpoint's
    // first answer) claimed every due callback, and the other was not among them.
    sqlx::query("UPDATE gateway_callbacks SET due_at = now() WHERE order_id = $1")
        .bind(now)
        .execute(&app.pool)
        .await
        .unwrap();
    let attempts = |owed: &[Owed], order| {
        owed.iter()
            .find(|owed| owed.order_id == order)
            .map(|owed| (owed.attempts, owed.sent))
    };
    // The sender counts an attempt when it claims the callback, before sending it: wait for
    // the endpoint to have seen it too.
    wait_until_async("the due callback tried", DEADLINE, || async {
        let tried = attempts(&app.owed().await, now) == Some((1, false));
        (tried && seen.lock().unwrap().len() == 1).then_some(())
    })
    .await;
    assert_eq!(
        attempts(&app.owed().await, later),
        Some((0, false)),
        "sent before its time"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);

    // Its time comes on the clock: sent, and accepted.
    clock.advance(Duration::from_secs(600));
    wait_until_async("the later callback sent", DEADLINE, || async {
        (attempts(&app.owed().await, later) == Some((1, true))).then_some(())
    })
    .await;
    // The refused one is retried ten minutes (± jitter) of the clock after its attempt.
    clock.advance(Duration::from_secs(900));
    wait_until_async(
        "the refused callback retried and sent",
        DEADLINE,
        || async { (attempts(&app.owed().await, now) == Some((2, true))).then_some(()) },
    )
    .await;
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_stop_abandons_a_hanging_callback_and_hands_the_claimed_ones_back() {
    // An endpoint that takes every request and never answers.
    let hung = Arc::new(tokio::sync::Notify::new());
    let seen = hung.clone();
    let route = axum::routing::post(move || {
        let seen = seen.clone();
        async move {
            seen.notify_one();
            std::future::pending::<()>().await
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(
        async move { axum::serve(listener, axum::Router::new().route("/hook", route)).await },
    );
    let mut app = spawn_app_with(&[
        ("GATEWAY_CALLBACK_URL", &url),
        // Both due at one instant, so that one round claims both.
        ("GATEWAY_CALLBACK_REORDER_MS", "1000"),
    ])
    .await;
    reserve(&app.pool, Uuid::new_v4(), 100).await;
    reserve(&app.pool, Uuid::new_v4(), 200).await;
    wait_until_async("both callbacks planned", DEADLINE, || async {
        (app.owed().await.len() == 2).then_some(())
    })
    .await;
    tokio::time::timeout(DEADLINE, hung.notified())
        .await
        .expect("a callback in flight");

    let started = std::time::Instant::now();
    app.stop(Duration::from_secs(10)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the stop did not wait for the hanging request: {:?}",
        started.elapsed()
    );
    // The service closed its pool: look with another.
    let pool = app.db.settings("payment").connect().await.unwrap();
    let owed: Vec<(i32, bool, bool)> = sqlx::query_as(
        "SELECT attempts, sent_at IS NOT NULL, due_at <= now() FROM gateway_callbacks",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        owed,
        [(0, false, true), (0, false, true)],
        "handed back: not sent, attempts not counted, due again at once (not after a lease)"
    );
}
