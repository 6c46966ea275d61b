//! A per-client rate limit on `POST /orders` (off by default): a client past its burst gets
//! 429 + Retry-After and nothing is stored; reads are not limited.

use msgkit::testing::{metric_value, scrape};
use serde_json::Value;

use crate::helpers::{spawn_app, spawn_app_with, valid_order};

#[tokio::test]
async fn a_client_past_its_burst_gets_429_with_retry_after_and_nothing_is_stored() {
    // One order every ten seconds, two at once: the third in a row is refused, with up to ten
    // seconds to wait (less by the time the first two took).
    let app = spawn_app_with(&[
        ("ORDER_RATE_LIMIT_PER_SEC", "0.1"),
        ("ORDER_RATE_LIMIT_BURST", "2"),
    ])
    .await;
    let refused_so_far = || async {
        let metrics = scrape(&app.client, &app.address).await;
        metric_value(
            &metrics,
            "msgkit_rate_limited_total",
            &[("service", "order")],
        )
    };
    assert_eq!(
        refused_so_far().await,
        Some(0.0),
        "on /metrics from the start"
    );
    for _ in 0..2 {
        assert_eq!(app.post_order(&valid_order()).await.status(), 202);
    }
    let refused = app.post_order(&valid_order()).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (5..=10).contains(&retry_after),
        "seconds until the next order passes: {retry_after}"
    );
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(
        app.count("orders").await,
        2,
        "the refused order was not stored"
    );
    // Reading is not limited.
    assert_eq!(
        app.get_order("00000000-0000-0000-0000-000000000000")
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn without_a_configured_limit_a_client_is_never_refused() {
    let app = spawn_app().await;
    for _ in 0..20 {
        assert_eq!(app.post_order(&valid_order()).await.status(), 202);
    }
}
