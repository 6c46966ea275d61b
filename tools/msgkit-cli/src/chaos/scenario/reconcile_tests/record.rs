//! A faithful record of a reconcile chaos run, written straight into the run's tables: what
//! payment, reconcile and notify leave when every order is reconciled as the faults allow.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use msgkit::testing::TestDatabase;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// How an order of the faithful record was reconciled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Path {
    /// Both sides within the window.
    Matched,
    /// A fault held the callback beyond the window: third-party-missing, then late-match.
    LateCallback,
    /// A fault held our side beyond the window: app-missing, then late-match.
    LateApp,
    /// The callback was lost: third-party-missing, open.
    Lost,
}

impl Path {
    fn history(self) -> &'static [&'static str] {
        match self {
            Self::Matched => &["matched"],
            Self::LateCallback => &["third-party-missing", "late-match"],
            Self::LateApp => &["app-missing", "late-match"],
            Self::Lost => &["third-party-missing"],
        }
    }
}

pub(super) struct Planted {
    pub(super) order_id: Uuid,
    pub(super) declined: bool,
    pub(super) amount_cents: i64,
    pub(super) path: Path,
}

/// Forty orders: every fifth declined, the lost callbacks among both kinds, late matches of
/// both kinds.
pub(super) fn planted() -> Vec<Planted> {
    (0..40)
        .map(|i| {
            let path = if i % 7 == 3 {
                Path::Lost
            } else if i % 4 == 1 {
                Path::LateCallback
            } else if i % 9 == 2 {
                Path::LateApp
            } else {
                Path::Matched
            };
            Planted {
                order_id: Uuid::now_v7(),
                declined: i % 5 == 0,
                amount_cents: 1000 + i,
                path,
            }
        })
        .collect()
}

pub(super) async fn exec(pool: &PgPool, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(pool)
        .await
        .unwrap();
}

/// An outbox row of `schema`, published; its id.
async fn outbox(pool: &PgPool, schema: &str, order_id: Uuid, message_type: &str) -> Uuid {
    outbox_with(pool, schema, order_id, message_type, json!({})).await
}

pub(super) async fn outbox_with(
    pool: &PgPool,
    schema: &str,
    order_id: Uuid,
    message_type: &str,
    extra: serde_json::Value,
) -> Uuid {
    let id = Uuid::now_v7();
    let mut payload = json!({"order_id": order_id});
    if let (Some(payload), Some(extra)) = (payload.as_object_mut(), extra.as_object()) {
        payload.extend(extra.clone());
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {schema}.msgkit_outbox (id, aggregate_id, exchange, routing_key, message_type, payload, published_at) \
         VALUES ($1, $2, 'events', $3, $3, $4, now())"
    )))
    .bind(id)
    .bind(order_id.to_string())
    .bind(message_type)
    .bind(payload)
    .execute(pool)
    .await
    .unwrap();
    id
}

async fn handled(pool: &PgPool, schema: &str, consumer: &str, id: Uuid, message_type: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {schema}.msgkit_inbox (consumer, message_id, message_type) VALUES ($1, $2, $3)"
    )))
    .bind(consumer)
    .bind(id.to_string())
    .bind(message_type)
    .execute(pool)
    .await
    .unwrap();
}

/// A decision of reconcile: its history row, its event, and notify's handling of it.
pub(super) async fn decided(pool: &PgPool, order_id: Uuid, outcome: &str, previous: Option<&str>) {
    sqlx::query("INSERT INTO reconcile.reconciliation_history (order_id, outcome, previous, at, message_id) VALUES ($1, $2, $3, now(), $4)")
        .bind(order_id).bind(outcome).bind(previous).bind(Uuid::now_v7().to_string())
        .execute(pool).await.unwrap();
    let (message_type, event) = match outcome {
        "matched" => ("reconcile.matched", None),
        "late-match" => ("reconcile.resolved", Some("resolved")),
        _ => ("reconcile.mismatch", Some("mismatch")),
    };
    let id = outbox_with(
        pool,
        "reconcile",
        order_id,
        message_type,
        json!({"outcome": outcome, "decided_at": "2026-11-30T08:00:00Z"}),
    )
    .await;
    if let Some(event) = event {
        handled(pool, "notify", "notify", id, message_type).await;
        sqlx::query("INSERT INTO notify.reconcile_notifications (order_id, event, outcome, message) VALUES ($1, $2, $3, 'told')")
            .bind(order_id).bind(event).bind(outcome)
            .execute(pool).await.unwrap();
    }
}

/// What a faithful run leaves for each planted order: payment's record and ground truth,
/// reconcile's decisions and events, notify's messages to operators.
pub(super) async fn record_run(pool: &PgPool, orders: &[Planted]) {
    for (i, order) in orders.iter().enumerate() {
        let id = order.order_id;
        let (status, charge, gateway) = if order.declined {
            ("failed", "declined", "declined")
        } else {
            ("succeeded", "captured", "success")
        };
        let charge_id = format!("ch_{i}");
        let callback_id = format!("cb_{i}");
        let lost = order.path == Path::Lost;
        sqlx::query("INSERT INTO payment.payments (order_id, status, amount_cents, charge_id) VALUES ($1, $2, $3, $4)")
            .bind(id).bind(status).bind(order.amount_cents).bind(&charge_id)
            .execute(pool).await.unwrap();
        sqlx::query("INSERT INTO payment.gateway_charges (idempotency_key, charge_id, amount_cents, outcome) VALUES ($1, $2, $3, $4)")
            .bind(format!("order-{id}")).bind(&charge_id).bind(order.amount_cents).bind(charge)
            .execute(pool).await.unwrap();
        sqlx::query("INSERT INTO payment.gateway_callbacks (callback_id, idempotency_key, order_id, outcome, charged_amount_cents, amount_cents, body, lost, due_at, attempts, sent_at) \
                     VALUES ($1, $2, $3, $4, $5, $5, '{}', $6, now(), $7, CASE WHEN $6 THEN NULL ELSE now() END)")
            .bind(&callback_id).bind(format!("order-{id}")).bind(id).bind(gateway).bind(order.amount_cents).bind(lost).bind(i32::from(!lost))
            .execute(pool).await.unwrap();
        let ours = if order.declined {
            "payment.failed"
        } else {
            "payment.succeeded"
        };
        let message = outbox(pool, "payment", id, ours).await;
        handled(pool, "reconcile", "reconcile", message, ours).await;
        if !lost {
            sqlx::query("INSERT INTO payment.payment_callbacks (callback_id, order_id, charge_id, outcome, amount_cents, known_order, received_at) VALUES ($1, $2, $3, $4, $5, true, now())")
                .bind(&callback_id).bind(id).bind(&charge_id).bind(gateway).bind(order.amount_cents)
                .execute(pool).await.unwrap();
            let message = outbox(pool, "payment", id, "payment.callback").await;
            handled(pool, "reconcile", "reconcile", message, "payment.callback").await;
        }
        let history = order.path.history();
        let mut previous = None;
        for outcome in history {
            decided(pool, id, outcome, previous).await;
            previous = Some(*outcome);
        }
        let outcome = history.last().copied().unwrap();
        let row_status = match order.path {
            Path::Matched => "matched",
            Path::Lost => "open",
            Path::LateCallback | Path::LateApp => "resolved",
        };
        sqlx::query("INSERT INTO reconcile.reconciliations (order_id, outcome, status, app_outcome, app_amount_cents, gateway_outcome, gateway_amount_cents, callback_id, first_seen_at, decided_at, updated_at, time_to_match_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now(), now(), now(), $9)")
            .bind(id).bind(outcome).bind(row_status).bind(status).bind(order.amount_cents)
            .bind((!lost).then_some(gateway)).bind((!lost).then_some(order.amount_cents)).bind((!lost).then_some(callback_id.as_str()))
            .bind((!lost).then_some(if order.path == Path::Matched { 600_i64 } else { 7_000 }))
            .execute(pool).await.unwrap();
    }
}

pub(super) async fn migrated(db: &TestDatabase) {
    let migrations = [
        ("orders", sqlx::migrate!("../../services/order/migrations")),
        (
            "inventory",
            sqlx::migrate!("../../services/inventory/migrations"),
        ),
        (
            "payment",
            sqlx::migrate!("../../services/payment/migrations"),
        ),
        (
            "reconcile",
            sqlx::migrate!("../../services/reconcile/migrations"),
        ),
        ("notify", sqlx::migrate!("../../services/notify/migrations")),
    ];
    for (schema, migrator) in migrations {
        let pool = db.settings(schema).connect().await.unwrap();
        msgkit::schema::migrate(&pool).await.unwrap();
        migrator.run(&pool).await.unwrap();
        pool.close().await;
    }
}
