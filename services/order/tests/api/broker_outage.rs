use std::collections::HashSet;

use msgkit::testing::metric_value;
use serde_json::Value;

use crate::helpers::{DEADLINE, correlation_ids, spawn_app, spawn_app_behind_proxy, valid_order};

#[tokio::test]
async fn orders_are_accepted_while_the_broker_is_unreachable_and_all_published_when_it_returns() {
    let app = spawn_app_behind_proxy().await;
    let proxy = app.proxy.as_ref().unwrap();
    let mut probe = app.broker.probe("events", "order.placed").await;

    proxy.cut();
    let mut accepted = HashSet::new();
    for _ in 0..25 {
        let response = app.post_order(&valid_order()).await;
        assert_eq!(response.status(), 202, "orders do not depend on the broker");
        let body: Value = response.json().await.unwrap();
        accepted.insert(body["order_id"].as_str().unwrap().to_owned());
    }
    // While cut off, nothing can have been published, and readiness says why.
    msgkit::testing::wait_until_async("/readyz to report the broker missing", DEADLINE, || async {
        let response = app
            .client
            .get(format!("{}/readyz", app.address))
            .send()
            .await
            .ok()?;
        (response.status() == 503).then_some(())
    })
    .await;
    assert_eq!(
        msgkit::outbox::backlog(&app.pool).await.unwrap().pending,
        25
    );
    let during = msgkit::testing::scrape(&app.client, &app.address).await;
    let pending = |text: &str| metric_value(text, "msgkit_outbox_pending", &[("service", "order")]);
    assert_eq!(
        pending(&during),
        Some(25.0),
        "the backlog gauge rises while the broker is away"
    );
    assert!(
        metric_value(
            &during,
            "msgkit_outbox_oldest_pending_age_seconds",
            &[("service", "order")]
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(
        metric_value(
            &during,
            "msgkit_broker_connected",
            &[("component", "order/relay")]
        ),
        Some(0.0)
    );

    proxy.restore();
    let received = probe
        .collect_until(
            "every accepted order's event after the outage",
            DEADLINE,
            |r| correlation_ids(r).is_superset(&accepted),
        )
        .await;
    assert!(correlation_ids(&received).is_superset(&accepted));
    msgkit::testing::wait_until_async("the backlog gauge to fall to zero", DEADLINE, || async {
        let after = msgkit::testing::scrape(&app.client, &app.address).await;
        (pending(&after) == Some(0.0)).then_some(())
    })
    .await;
    // Ready again, without a restart.
    msgkit::testing::wait_until_async("/readyz to report ready again", DEADLINE, || async {
        let response = app
            .client
            .get(format!("{}/readyz", app.address))
            .send()
            .await
            .ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn orders_are_accepted_while_the_broker_refuses_the_service_and_published_once_it_is_allowed()
{
    let app = spawn_app().await;
    // Revoking permissions does not close connections that are already open: close them, so
    // the relay has to reconnect and is refused.
    app.broker.grant(false).await;
    app.broker.close_all_connections().await;

    let mut accepted = HashSet::new();
    for _ in 0..10 {
        let response = app.post_order(&valid_order()).await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        accepted.insert(body["order_id"].as_str().unwrap().to_owned());
    }
    app.broker.grant(true).await;
    msgkit::testing::wait_until_async("the outbox to drain", DEADLINE, || async {
        (msgkit::outbox::backlog(&app.pool).await.ok()?.pending == 0).then_some(())
    })
    .await;
    // Every event reached the inventory work queue (bound by the kit's topology).
    msgkit::testing::wait_until_async("all 10 events in the inventory queue", DEADLINE, || async {
        app.broker
            .queue_depth("inventory")
            .await
            .filter(|d| *d == 10)
    })
    .await;
}
