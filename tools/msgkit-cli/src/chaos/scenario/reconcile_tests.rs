//! The reconcile scenario, checked without running it (a run restarts the shared broker and
//! database): it has every fault kind, aimed at payment and reconcile, with the callbacks on
//! and 5 % of them lost; its drain conditions and SQL invariants hold on a faithful record of
//! a run (in a database with every service's migrations, the saga's among them) and name each
//! kind of damage; its figures count the lost callbacks and the late matches.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeSet;

use msgkit::testing::TestDatabase;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::load;
use crate::chaos::checks;

mod record;

use record::{Path, decided, exec, migrated, outbox_with, planted, record_run};

/// Every violation of every invariant.
async fn check(pool: &PgPool, scenario: &super::Scenario) -> Vec<String> {
    let captured = checks::Captured::new();
    let mut violations = Vec::new();
    for invariant in &scenario.invariants.sql {
        violations.extend(
            checks::sql_invariant(pool, invariant, &captured)
                .await
                .unwrap(),
        );
    }
    violations
}

/// The drain conditions still busy: (query, rows).
async fn busy(pool: &PgPool, scenario: &super::Scenario) -> Vec<(String, usize)> {
    let mut busy = Vec::new();
    for query in &scenario.invariants.drained_when {
        let rows = sqlx::query(sqlx::AssertSqlSafe(query.clone()))
            .fetch_all(pool)
            .await
            .unwrap();
        if !rows.is_empty() {
            busy.push((query.clone(), rows.len()));
        }
    }
    busy
}

#[tokio::test]
async fn the_invariants_pass_on_a_faithful_record_and_name_each_kind_of_damage() {
    let (scenario, _) = load("reconcile").unwrap();
    let db = TestDatabase::create().await;
    migrated(&db).await;
    let pool = db.pool().await;
    for sql in &scenario.setup_sql {
        exec(&pool, sql).await;
    }
    let orders = planted();
    record_run(&pool, &orders).await;
    assert_eq!(busy(&pool, &scenario).await, Vec::new());
    assert_eq!(check(&pool, &scenario).await, Vec::<String>::new());
    let figures = checks::figures(&pool, &scenario, &checks::Captured::new())
        .await
        .unwrap();
    let count = |path: Path| orders.iter().filter(|o| o.path == path).count();
    let lost = count(Path::Lost);
    assert_eq!(
        figures["callbacks lost / open mismatches"],
        format!("{lost}: {lost}")
    );
    assert_eq!(
        figures["mismatches the faults caused, resolved by a late match"],
        format!(
            "app-missing: {}, third-party-missing: {}",
            count(Path::LateApp),
            count(Path::LateCallback)
        )
    );
    assert!(
        orders.iter().any(|o| o.declined && o.path == Path::Lost),
        "a declined charge's callback is among the lost"
    );

    // Damage of every kind the invariants are there for, one order each.
    let of = |path: Path, nth: usize| {
        orders
            .iter()
            .filter(|o| o.path == path)
            .nth(nth)
            .unwrap()
            .order_id
    };
    let damage = |sql: &str, order: Uuid| sql.replace("$ORDER", &format!("'{order}'"));
    // Never reconciled (with its history gone too, or the sequence check would name it).
    let unreconciled = of(Path::Matched, 0);
    exec(
        &pool,
        &damage(
            "DELETE FROM reconcile.reconciliations WHERE order_id = $ORDER",
            unreconciled,
        ),
    )
    .await;
    // A lost callback's order resolved anyway.
    let lost_resolved = of(Path::Lost, 0);
    exec(&pool, &damage("UPDATE reconcile.reconciliations SET status = 'resolved', outcome = 'late-match' WHERE order_id = $ORDER", lost_resolved)).await;
    // A delivered callback left open.
    let left_open = of(Path::Matched, 1);
    exec(&pool, &damage("UPDATE reconcile.reconciliations SET status = 'open', outcome = 'third-party-missing', gateway_outcome = NULL, callback_id = NULL, gateway_amount_cents = NULL WHERE order_id = $ORDER", left_open)).await;
    // The classic false alarm: a late callback raises a second mismatch after its late match.
    let second_alarm = of(Path::LateCallback, 0);
    decided(&pool, second_alarm, "app-missing", Some("late-match")).await;
    // A mismatch published twice.
    let twice = of(Path::Lost, 1);
    outbox_with(
        &pool,
        "reconcile",
        twice,
        "reconcile.mismatch",
        json!({"outcome": "third-party-missing"}),
    )
    .await;
    // Operators never told of a resolution.
    let untold = of(Path::LateApp, 0);
    exec(&pool, &damage("DELETE FROM notify.reconcile_notifications WHERE order_id = $ORDER AND event = 'resolved'", untold)).await;
    // A callback dead-lettered by reconcile.
    let dead = of(Path::Matched, 2);
    exec(&pool, &damage("DELETE FROM reconcile.msgkit_inbox WHERE message_id IN (SELECT id::text FROM payment.msgkit_outbox WHERE message_type = 'payment.callback' AND payload->>'order_id' = ($ORDER)::text)", dead)).await;
    // A decision never published.
    let unpublished = of(Path::Matched, 3);
    exec(&pool, &damage("UPDATE reconcile.msgkit_outbox SET published_at = NULL, last_error = 'unroutable' WHERE payload->>'order_id' = ($ORDER)::text", unpublished)).await;
    // A callback never answered (the drain waits for it).
    let unsent = of(Path::Matched, 4);
    exec(
        &pool,
        &damage(
            "UPDATE payment.gateway_callbacks SET sent_at = NULL WHERE order_id = $ORDER",
            unsent,
        ),
    )
    .await;
    // A reconciliation of an order that never reached payment.
    let stranger = Uuid::now_v7();
    exec(&pool, &damage("INSERT INTO reconcile.reconciliations (order_id, outcome, status, gateway_outcome, first_seen_at, decided_at, updated_at) VALUES ($ORDER, 'app-missing', 'open', 'success', now(), now(), now())", stranger)).await;

    assert_eq!(
        busy(&pool, &scenario).await.len(),
        3,
        "unsent and unreconciled orders keep the drain busy"
    );
    let violations = check(&pool, &scenario).await;
    let expected = [
        // The first order is a declined one.
        format!(
            "order {unreconciled} reached payment (failed) but its reconciliation is missing with our side none"
        ),
        format!(
            "order {lost_resolved}: its callback (success) was lost, yet its reconciliation is resolved (late-match)"
        ),
        format!(
            "order {left_open}: its callback (success) was delivered, yet its reconciliation is open (third-party-missing)"
        ),
        format!(
            "order {second_alarm} was decided third-party-missing -> late-match -> app-missing"
        ),
        format!("order {second_alarm}: operators were told of 2 mismatches"),
        format!("order {twice}: decision third-party-missing was published 2 time(s)"),
        format!("reconcile.mismatch of order {twice} was handled 0 time(s) by notify"),
        format!("order {untold}: resolved (late-match) published true, operators told false"),
        format!("payment.callback of order {dead} was handled 0 time(s) by reconcile"),
        "reconcile's outbox row".to_owned(),
        "(reconcile.matched) was never published: unroutable".to_owned(),
        format!("of order {unsent}: lost false, sent false, received 1 time(s)"),
        format!("order {stranger} is reconciled (app-missing) but never reached payment"),
    ];
    for expected in &expected {
        assert!(
            violations.iter().any(|v| v.contains(expected.as_str())),
            "no violation says {expected:?}: {violations:#?}"
        );
    }
    assert_eq!(violations.len(), 12, "{violations:#?}");
    pool.close().await;
}

/// Each fault kind once; a new kind does not compile here until it has a name, and then
/// fails the test below until the reconcile scenario has it too.
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
fn the_reconcile_scenario_has_every_fault_kind_aimed_at_payment_and_reconcile_with_callbacks_lost()
{
    let (scenario, _) = load("reconcile").unwrap();
    let kinds: BTreeSet<&str> = scenario.faults.iter().map(|f| kind_name(&f.kind)).collect();
    assert_eq!(kinds.len(), 10, "{kinds:?}");
    let taken: BTreeSet<&str> = scenario
        .faults
        .iter()
        .filter_map(|f| f.kind.service())
        .collect();
    assert_eq!(taken, BTreeSet::from(["payment", "reconcile"]));
    let last = scenario
        .faults
        .iter()
        .map(|f| f.at_secs)
        .fold(0.0, f64::max);
    assert!(
        last < scenario.duration_secs as f64,
        "faults end under load"
    );
    let env = |service: &str| {
        scenario
            .services
            .iter()
            .find(|s| s.name == service)
            .unwrap_or_else(|| panic!("no {service} in the scenario"))
            .env
            .clone()
    };
    let payment = env("payment");
    assert!(payment["GATEWAY_CALLBACK_SECRET"].len() >= 32);
    assert_eq!(payment["GATEWAY_CALLBACK_LOSS_RATE"], "0.05");
    assert!(env("reconcile").contains_key("RECONCILE_HTTP_ADDR"));
    assert!(
        env("notify").contains_key("NOTIFY_HTTP_ADDR"),
        "notify tells operators"
    );
}
