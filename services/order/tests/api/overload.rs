//! Admission control of `POST /orders`: with small limits and no inventory or payment running
//! (so every accepted order stays pending), new orders are shed with 503 + Retry-After,
//! `/readyz` says why, replays and reads still answer, nothing accepted is lost, and orders
//! are accepted again once the backlog drains.

use std::cell::RefCell;
use std::collections::HashSet;

use msgkit::testing::{metric_value, wait_until_async};
use serde_json::Value;

use crate::helpers::{DEADLINE, TestApp, spawn_app_with, valid_order};

/// The probe reads every 20 ms, so that the waits below are short.
const FAST_PROBE: (&str, &str) = ("ORDER_ADMISSION_INTERVAL_MS", "20");

/// POST new orders until one is shed; returns the 503 and adds every accepted order to
/// `accepted` (the probe may let a few past the limit before its next reading).
async fn post_until_shed(app: &TestApp, accepted: &mut HashSet<String>) -> reqwest::Response {
    let seen = RefCell::new(std::mem::take(accepted));
    let shed = wait_until_async("POST /orders to be shed", DEADLINE, || async {
        let response = app.post_order(&valid_order()).await;
        if response.status() == 202 {
            let body: Value = response.json().await.ok()?;
            seen.borrow_mut()
                .insert(body["order_id"].as_str()?.to_owned());
            return None;
        }
        Some(response)
    })
    .await;
    *accepted = seen.into_inner();
    shed
}

/// POST new orders until one is accepted again.
async fn post_until_accepted(app: &TestApp, accepted: &mut HashSet<String>) {
    let id: String = wait_until_async("POST /orders to be accepted again", DEADLINE, || async {
        let response = app.post_order(&valid_order()).await;
        if response.status() != 202 {
            return None;
        }
        let body: Value = response.json().await.ok()?;
        Some(body["order_id"].as_str()?.to_owned())
    })
    .await;
    accepted.insert(id);
}

async fn readyz(app: &TestApp) -> (u16, Value) {
    let response = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Wait until the relay and the consumer are connected, so that `/readyz` answers on
/// admission alone.
async fn wait_ready(app: &TestApp) {
    wait_until_async("/readyz to be 200", DEADLINE, || async {
        (readyz(app).await.0 == 200).then_some(())
    })
    .await;
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Every accepted order is in the database, and its `order.placed` was published.
async fn nothing_lost(app: &TestApp, accepted: &HashSet<String>) {
    let ids: Vec<uuid::Uuid> = accepted.iter().map(|id| id.parse().unwrap()).collect();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        stored as usize,
        accepted.len(),
        "every accepted order is stored"
    );
    assert_eq!(
        app.count("orders").await as usize,
        accepted.len(),
        "no others"
    );
    let keys: Vec<String> = accepted.iter().cloned().collect();
    wait_until_async(
        "every accepted order's event to be published",
        DEADLINE,
        || {
            let keys = keys.clone();
            async move {
                let published: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM msgkit_outbox \
                 WHERE aggregate_id = ANY($1) AND message_type = 'order.placed' \
                 AND published_at IS NOT NULL",
                )
                .bind(&keys)
                .fetch_one(&app.pool)
                .await
                .ok()?;
                (published as usize == keys.len()).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn new_orders_are_shed_past_the_pending_limit_and_accepted_again_once_it_drains() {
    let app = spawn_app_with(&[FAST_PROBE, ("ORDER_ADMISSION_MAX_PENDING", "5")]).await;
    wait_ready(&app).await;
    let mut accepted = HashSet::new();
    let first = app
        .client
        .post(format!("{}/orders", app.address))
        .header("idempotency-key", "before-the-limit")
        .json(&valid_order())
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    accepted.insert(first["order_id"].as_str().unwrap().to_owned());

    let shed = post_until_shed(&app, &mut accepted).await;
    assert!(
        accepted.len() >= 5,
        "shed only at the limit: {}",
        accepted.len()
    );
    assert_eq!(shed.status(), 503);
    assert!((1..=30).contains(&retry_after(&shed)));
    let body: Value = shed.json().await.unwrap();
    assert_eq!(body["error"], "overloaded");
    assert_eq!(body["reason"], "pending");
    assert!(body["pending"].as_u64().unwrap() >= 5, "{body}");

    let (status, ready) = readyz(&app).await;
    assert_eq!(status, 200, "shedding leaves the replica ready: {ready}");
    assert_eq!(ready["admission"]["admitting"], false, "{ready}");
    assert_eq!(ready["admission"]["reason"], "pending", "{ready}");

    // An accepted order's retry gets its first answer; reads are not shed.
    let replay = app
        .client
        .post(format!("{}/orders", app.address))
        .header("idempotency-key", "before-the-limit")
        .json(&valid_order())
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 202);
    assert_eq!(replay.json::<Value>().await.unwrap(), first);
    let order_id = first["order_id"].as_str().unwrap();
    assert_eq!(app.get_order(order_id).await.status(), 200);
    let metrics = msgkit::testing::scrape(&app.client, &app.address).await;
    let label = [("service", "order")];
    assert!(metric_value(&metrics, "msgkit_admission_shed_total", &label).unwrap() >= 1.0);
    assert!(metric_value(&metrics, "msgkit_admission_backlog", &label).unwrap() >= 5.0);
    assert_eq!(
        metric_value(&metrics, "msgkit_admission_shedding", &label),
        Some(1.0)
    );

    nothing_lost(&app, &accepted).await;

    // The saga finishes them (here by SQL: inventory and payment are not running).
    sqlx::query("UPDATE orders SET status = 'confirmed' WHERE status = 'pending'")
        .execute(&app.pool)
        .await
        .unwrap();
    post_until_accepted(&app, &mut accepted).await;
    let (_, ready) = readyz(&app).await;
    assert_eq!(ready["admission"]["admitting"], true, "{ready}");
    nothing_lost(&app, &accepted).await;
}

#[tokio::test]
async fn new_orders_are_shed_while_the_oldest_pending_order_is_too_old() {
    let app = spawn_app_with(&[FAST_PROBE, ("ORDER_ADMISSION_MAX_PENDING_AGE_MS", "60000")]).await;
    wait_ready(&app).await;
    let mut accepted = HashSet::new();
    post_until_accepted(&app, &mut accepted).await;
    // An order left pending for an hour (the saga stuck, say), without waiting an hour.
    sqlx::query("UPDATE orders SET created_at = now() - interval '1 hour'")
        .execute(&app.pool)
        .await
        .unwrap();

    let shed = post_until_shed(&app, &mut accepted).await;
    assert_eq!(shed.status(), 503);
    assert!(retry_after(&shed) >= 1);
    let body: Value = shed.json().await.unwrap();
    assert_eq!(body["reason"], "pending_age", "{body}");
    assert!(body["oldest_pending_age_ms"].as_u64().unwrap() >= 3_600_000);
    let (status, ready) = readyz(&app).await;
    assert_eq!(status, 200);
    assert_eq!(ready["admission"]["reason"], "pending_age", "{ready}");

    // Only the old order needs to finish; the young ones accepted meanwhile may stay pending.
    sqlx::query(
        "UPDATE orders SET status = 'confirmed' WHERE created_at < now() - interval '1 minute'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    post_until_accepted(&app, &mut accepted).await;
    nothing_lost(&app, &accepted).await;
}
