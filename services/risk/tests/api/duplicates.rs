//! The same `transaction_id` never counts twice on the broker side either: a replay publishes
//! a copy under a new message id (the inbox cannot tell), a redelivery repeats the message id
//! (the inbox can). A count threshold shows what the engine counted.

use chrono::{DateTime, Duration, TimeZone, Utc};
use contracts::TransactionRecorded;
use contracts::event_type::TRANSACTION_RECORDED;
use msgkit::message::OutgoingMessage;
use msgkit::testing::wait_until_async;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{DEADLINE, TestApp, spawn_app};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap()
}

fn recorded(id: &str, at: DateTime<Utc>) -> TransactionRecorded {
    TransactionRecorded {
        transaction_id: id.to_owned(),
        user_id: "u-1".to_owned(),
        amount_cents: 5_000,
        currency: "CNY".to_owned(),
        location: "Shanghai".to_owned(),
        occurred_at: at,
    }
}

/// `transaction.recorded` as risk's outbox sends it: correlated by the user.
fn message(transaction: &TransactionRecorded) -> OutgoingMessage {
    OutgoingMessage::event(
        TRANSACTION_RECORDED.name(),
        &transaction.user_id,
        "risk",
        transaction,
    )
    .unwrap()
}

impl TestApp {
    async fn publish(&self, message: &OutgoingMessage) {
        let publisher = self.broker.publisher(&contracts::topology()).await;
        assert!(publisher.publish(message).await.unwrap().is_confirmed());
        publisher.close().await;
    }

    /// `msgkit_consumed_total` of the risk queue with this outcome.
    async fn consumed(&self, outcome: &str) -> f64 {
        self.metric(
            "msgkit_consumed_total",
            &[("queue", "risk"), ("outcome", outcome)],
        )
        .await
        .unwrap_or(0.0)
    }
}

#[tokio::test]
async fn a_transaction_replayed_under_a_new_message_id_or_redelivered_is_counted_once() {
    let mut app = spawn_app().await;
    // More than two transactions of u-1 within ten minutes.
    let rule = json!({
        "key": "user_id",
        "kind": {"type": "threshold", "when": "amount_cents > 0", "aggregate": "count",
                 "over_ms": 600_000, "above": 2},
        "severity": "medium",
    });
    let created = app.send(Method::POST, "/rules", Some(&rule)).await;
    assert_eq!(created.status(), 201);
    let rule_id = created.json::<serde_json::Value>().await.unwrap()["id"].clone();

    let first = recorded("t-1", t0());
    let second = recorded("t-2", t0() + Duration::seconds(1));
    let second_message = message(&second);
    app.publish(&message(&first)).await;
    app.wait_until_handled(1).await;
    app.publish(&second_message).await;
    app.wait_until_handled(2).await;

    // A replay: the same transaction under another message id passes the inbox.
    let replayed = message(&second);
    assert_ne!(replayed.message_id, second_message.message_id);
    app.publish(&replayed).await;
    app.wait_until_handled(3).await;
    // A redelivered copy: the same message id again, which the inbox acks as a duplicate.
    app.publish(&second_message).await;
    wait_until_async(
        "the redelivered copy acked as a duplicate",
        DEADLINE,
        || async { (app.consumed("duplicate").await >= 1.0).then_some(()) },
    )
    .await;
    assert!(
        app.alerts_of("u-1").await.is_empty(),
        "two transactions, however often delivered, are not more than two"
    );

    let third = recorded("t-3", t0() + Duration::seconds(2));
    app.publish(&message(&third)).await;
    let alerts = wait_until_async("the threshold alert", DEADLINE, || async {
        let alerts = app.alerts_of("u-1").await;
        (!alerts.is_empty()).then_some(alerts)
    })
    .await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["rule_id"], rule_id);
    assert_eq!(alerts[0]["transaction_ids"], json!(["t-1", "t-2", "t-3"]));
    let published = app
        .alerts
        .collect_until("risk.alert published", DEADLINE, |got| !got.is_empty())
        .await;
    assert_eq!(published.len(), 1);
    assert_eq!(app.consumed("dead_letter").await, 0.0);
    assert_eq!(app.broker.queue_depth("risk.dlq").await, Some(0));
}
