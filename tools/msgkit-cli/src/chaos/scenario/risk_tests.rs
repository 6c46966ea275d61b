//! The risk scenario, checked without running it (a run restarts the shared broker and
//! database): its bodies are transactions risk accepts, its planted users are exactly the ones
//! risk's engine alerts on (in either arrival order, and with the repeated first transaction),
//! and each SQL invariant holds on a faithful record of that and names each kind of damage.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use contracts::{RiskAlert, TransactionRecorded};
use msgkit::testing::TestDatabase;
use risk::http::NewTransaction;
use risk::{ActiveRule, Engine, Event, KeyState};
use sqlx::PgPool;

use super::load;
use crate::chaos::checks;
use crate::chaos::load::{LoadResult, bodies};

/// Requests per load rendered: every pattern several times (the variants repeat every 4, 5, 7).
const REQUESTS: u64 = 70;

/// Each load's transactions by request number, parsed as risk's API parses them.
fn planted(loads: &[super::LoadSpec]) -> BTreeMap<String, Vec<(String, TransactionRecorded)>> {
    loads
        .iter()
        .map(|spec| {
            let parsed = bodies(spec, REQUESTS)
                .into_iter()
                .map(|(tag, body)| {
                    let raw: serde_json::Value = serde_json::from_str(&body).unwrap();
                    let transaction = NewTransaction::parse(&raw)
                        .unwrap_or_else(|e| panic!("load {}: {body} is refused: {e:?}", spec.name));
                    (tag, transaction.event().clone())
                })
                .collect();
            (spec.name.clone(), parsed)
        })
        .collect()
}

fn event(t: &TransactionRecorded) -> Event {
    Event {
        transaction_id: t.transaction_id.clone(),
        user_id: t.user_id.clone(),
        amount_cents: t.amount_cents,
        currency: t.currency.clone(),
        location: t.location.clone(),
        occurred_at: t.occurred_at,
    }
}

/// What the default rule raises on `events` in this arrival order.
fn alerts(events: &[&TransactionRecorded]) -> Vec<Vec<String>> {
    let rules = [ActiveRule {
        id: 1,
        version: 1,
        compiled: Arc::new(risk::compile(&risk::default_rule()).unwrap()),
    }];
    let engine = Engine::default();
    let mut state = KeyState::default();
    events
        .iter()
        .flat_map(|t| engine.on_event(&rules, &mut state, &event(t)).alerts)
        .map(|alert| alert.events)
        .collect()
}

#[test]
fn the_engine_alerts_on_exactly_the_planted_users_in_either_order() {
    let (scenario, _) = load("risk").unwrap();
    let loads = planted(&scenario.load);
    let (first, second, repeat) = (&loads["first"], &loads["second"], &loads["repeat"]);
    assert_eq!(
        first, repeat,
        "the repeat load posts the first transactions again"
    );
    let mut patterns = BTreeSet::new();
    for ((tag, a), (_, b)) in first.iter().zip(second) {
        assert_eq!(a.user_id, b.user_id, "request n of both loads is one user");
        let pattern = a.user_id.split('-').nth(1).unwrap().to_owned();
        assert_eq!(tag.is_empty(), pattern == "hit", "{tag} vs {}", a.user_id);
        let expected: Vec<Vec<String>> = if pattern == "hit" {
            vec![vec![a.transaction_id.clone(), b.transaction_id.clone()]]
        } else {
            Vec::new()
        };
        assert_eq!(alerts(&[a, b]), expected, "{} in order", a.user_id);
        assert_eq!(alerts(&[b, a]), expected, "{} in reverse", a.user_id);
        assert_eq!(
            alerts(&[a, b, a]),
            expected,
            "{} with the repeat",
            a.user_id
        );
        patterns.insert(pattern);
    }
    assert_eq!(patterns.len(), 4, "every pattern is planted: {patterns:?}");
}

/// Write what a faithful run would leave: every transaction stored, published once and handled
/// once, and the engine's alerts stored and published.
async fn record_run(pool: &PgPool, loads: &BTreeMap<String, Vec<(String, TransactionRecorded)>>) {
    let mut stored = BTreeMap::new();
    for (_, t) in loads.values().flatten() {
        stored.insert(t.transaction_id.clone(), t.clone());
    }
    for t in stored.values() {
        sqlx::query("INSERT INTO transactions (transaction_id, user_id, amount_cents, currency, location, occurred_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&t.transaction_id).bind(&t.user_id).bind(t.amount_cents).bind(&t.currency).bind(&t.location).bind(t.occurred_at)
            .execute(pool).await.unwrap();
        let id = outbox(
            pool,
            &t.user_id,
            "transaction.recorded",
            serde_json::to_value(t).unwrap(),
        )
        .await;
        sqlx::query("INSERT INTO msgkit_inbox (consumer, message_id, message_type) VALUES ('risk', $1, 'transaction.recorded')")
            .bind(id.to_string()).execute(pool).await.unwrap();
    }
    for ((_, a), (_, b)) in loads["first"].iter().zip(&loads["second"]) {
        for pair in alerts(&[a, b]) {
            alert(pool, &a.user_id, pair).await;
        }
    }
}

async fn outbox(
    pool: &PgPool,
    user: &str,
    message_type: &str,
    payload: serde_json::Value,
) -> uuid::Uuid {
    let id = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO msgkit_outbox (id, aggregate_id, exchange, routing_key, message_type, payload, published_at) VALUES ($1, $2, 'events', $3, $3, $4, now())")
        .bind(id).bind(user).bind(message_type).bind(payload)
        .execute(pool).await.unwrap();
    id
}

async fn alert(pool: &PgPool, user: &str, transaction_ids: Vec<String>) {
    let alert = RiskAlert {
        alert_id: uuid::Uuid::now_v7(),
        user_id: user.to_owned(),
        rule_id: 1,
        rule_version: 1,
        severity: "high".to_owned(),
        transaction_ids,
        at: chrono::Utc::now(),
    };
    sqlx::query("INSERT INTO alerts (alert_id, rule_id, rule_version, user_id, severity, transaction_ids, at) VALUES ($1, 1, 1, $2, 'high', $3, $4)")
        .bind(alert.alert_id).bind(user).bind(&alert.transaction_ids).bind(alert.at)
        .execute(pool).await.unwrap();
    outbox(
        pool,
        user,
        "risk.alert",
        serde_json::to_value(&alert).unwrap(),
    )
    .await;
    sqlx::query("INSERT INTO notify.risk_notifications (alert_id, user_id, rule_id, rule_version, transaction_ids, message) VALUES ($1, $2, 1, 1, $3, 'alert')")
        .bind(alert.alert_id).bind(user).bind(&alert.transaction_ids)
        .execute(pool).await.unwrap();
}

async fn exec_on(pool: &PgPool, sql: &'static str) {
    sqlx::query(sql).execute(pool).await.unwrap();
}

/// Every violation of every invariant, and the figures (which must run).
async fn check(
    pool: &PgPool,
    scenario: &super::Scenario,
    captured: &checks::Captured,
) -> Vec<String> {
    let mut violations = Vec::new();
    for invariant in &scenario.invariants.sql {
        violations.extend(
            checks::sql_invariant(pool, invariant, captured)
                .await
                .unwrap(),
        );
    }
    checks::figures(pool, scenario, captured).await.unwrap();
    violations
}

#[tokio::test]
async fn the_invariants_pass_on_a_faithful_record_and_name_each_kind_of_damage() {
    let (scenario, _) = load("risk").unwrap();
    let loads = planted(&scenario.load);
    let db = TestDatabase::create().await;
    let risk_pool = db.settings("risk").connect().await.unwrap();
    msgkit::schema::migrate(&risk_pool).await.unwrap();
    sqlx::migrate!("../../services/risk/migrations")
        .run(&risk_pool)
        .await
        .unwrap();
    let notify_pool = db.settings("notify").connect().await.unwrap();
    msgkit::schema::migrate(&notify_pool).await.unwrap();
    sqlx::migrate!("../../services/notify/migrations")
        .run(&notify_pool)
        .await
        .unwrap();
    notify_pool.close().await;
    record_run(&risk_pool, &loads).await;
    // A transaction parked for its user's turn and released: a second outbox row of the same
    // message (its original id in a header), which is not a second publication.
    exec_on(&risk_pool, "INSERT INTO msgkit_outbox (id, aggregate_id, exchange, routing_key, message_type, payload, headers, published_at) \
        SELECT gen_random_uuid(), aggregate_id, '', 'risk', message_type, payload, jsonb_build_object('x-msgkit-message-id', id::text), now() \
        FROM msgkit_outbox WHERE payload->>'transaction_id' = 'chaos-hit-4-a'").await;
    let mut captured: checks::Captured = loads
        .iter()
        .map(|(name, sent)| {
            let mut result = LoadResult::default();
            for (tag, t) in sent {
                result
                    .captured
                    .entry(tag.clone())
                    .or_default()
                    .push(t.transaction_id.clone());
            }
            (name.clone(), result)
        })
        .collect();
    let pool = db.pool().await;
    assert_eq!(
        check(&pool, &scenario, &captured).await,
        Vec::<String>::new()
    );

    // Damage of every kind the invariants are there for.
    captured
        .get_mut("first")
        .unwrap()
        .captured
        .entry(String::new())
        .or_default()
        .push("chaos-hit-999-a".into());
    let exec = |sql: &'static str| {
        let pool = risk_pool.clone();
        async move { sqlx::query(sql).execute(&pool).await.unwrap() }
    };
    exec("DELETE FROM msgkit_outbox WHERE payload->>'user_id' = 'chaos-hit-0' AND message_type = 'risk.alert'").await;
    exec("DELETE FROM alerts WHERE user_id = 'chaos-hit-0'").await;
    alert(
        &risk_pool,
        "chaos-city-4",
        vec!["chaos-city-4-a".into(), "chaos-city-4-b".into()],
    )
    .await;
    alert(&risk_pool, "chaos-hit-1", vec!["chaos-hit-1-b".into()]).await;
    exec("DELETE FROM msgkit_inbox WHERE message_id = (SELECT id::text FROM msgkit_outbox WHERE payload->>'transaction_id' = 'chaos-hit-2-b')").await;
    exec("UPDATE msgkit_outbox SET published_at = NULL WHERE message_type = 'risk.alert' AND payload->>'user_id' = 'chaos-hit-5'").await;
    exec("DELETE FROM notify.risk_notifications WHERE user_id = 'chaos-hit-2'").await;
    let violations = check(&pool, &scenario, &captured).await;
    for expected in [
        "transaction chaos-hit-999-a was accepted but is not stored (lost)",
        "user chaos-hit-0 posted the planted pair",
        "alert for chaos-city-4 by rule 1 v1",
        "alert for chaos-hit-1 by rule 1 v1 on [\"chaos-hit-1-b\"]",
        "user chaos-hit-1 has 2 alerts",
        "transaction chaos-hit-2-b was published 1 time(s) and handled 0 time(s)",
        "risk.alert outbox row(s), 0 published",
        "(risk.alert) was never published",
        "high-severity alert stored false, user notified true",
        "high-severity alert stored true, user notified false",
    ] {
        assert!(
            violations.iter().any(|v| v.contains(expected)),
            "no violation says {expected:?}: {violations:#?}"
        );
    }
    assert_eq!(violations.len(), 10, "{violations:#?}");
    pool.close().await;
    risk_pool.close().await;
}

/// Each fault kind once; a new kind does not compile here until it has a name, and then
/// fails the test below until the risk scenario has it too.
fn kind_name(kind: &super::FaultKind) -> &'static str {
    use super::FaultKind::*;
    match kind {
        KillService { .. } => "kill_service",
        PauseService { .. } => "pause_service",
        CloseConnections => "close_connections",
        RestartRabbitmq => "restart_rabbitmq",
        RestartPostgres => "restart_postgres",
        Partition { .. } => "partition",
        Latency { .. } => "latency",
        Bandwidth { .. } => "bandwidth",
        MemoryAlarm { .. } => "memory_alarm",
        DiskAlarm { .. } => "disk_alarm",
    }
}

#[test]
fn the_risk_scenario_has_every_fault_kind_and_each_fault_that_takes_a_service_takes_risk() {
    let (scenario, _) = load("risk").unwrap();
    let kinds: BTreeSet<&str> = scenario.faults.iter().map(|f| kind_name(&f.kind)).collect();
    assert_eq!(kinds.len(), 10, "{kinds:?}");
    for fault in &scenario.faults {
        assert_eq!(
            fault.kind.service().unwrap_or("risk"),
            "risk",
            "{}",
            fault.kind.label()
        );
    }
    let last = scenario
        .faults
        .iter()
        .map(|f| f.at_secs)
        .fold(0.0, f64::max);
    assert!(
        last < scenario.duration_secs as f64,
        "faults end under load"
    );
}
