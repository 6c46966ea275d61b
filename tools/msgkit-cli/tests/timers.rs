//! `msgkit timers` against a real database: what an operator sees of pending timers, and
//! cancelling one.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use msgkit::testing::TestDatabase;
use serde_json::Value;
use sqlx::PgPool;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn msgkit(db: &TestDatabase, args: &[&str]) -> Run {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_msgkit"))
        .env("DATABASE_URL", db.url())
        .args(["timers", "--service", "risk", "--schema", "risk_timers"])
        .args(args)
        .output()
        .await
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The risk service's schema with the kit's tables and two timers: one an hour overdue, one
/// due in an hour.
async fn schema_with_timers(db: &TestDatabase) -> PgPool {
    let pool = db.settings("risk_timers").connect().await.unwrap();
    msgkit::schema::migrate(&pool).await.unwrap(); // the service's own schema, as it runs
    sqlx::query(
        "INSERT INTO msgkit_timers (consumer, name, key, due_at, payload, set_at) VALUES \
         ('risk', 'callback-due', 'pay-1', now() - interval '1 hour', '{\"amount\": 5}', now()), \
         ('risk', 'callback-due', 'pay-2', now() + interval '1 hour', '{}', now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool
}

#[tokio::test]
async fn an_operator_lists_pending_timers_soonest_first_and_sees_which_are_overdue() {
    let db = TestDatabase::create().await;
    let _pool = schema_with_timers(&db).await;
    let table = msgkit(&db, &["list"]).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("CONSUMER"), "{}", table.stdout);
    assert!(
        lines[1].contains("pay-1") && lines[1].contains("overdue by"),
        "{}",
        table.stdout
    );
    assert!(
        lines[2].contains("pay-2") && lines[2].contains("due in"),
        "{}",
        table.stdout
    );

    let overdue = msgkit(&db, &["--json", "list", "--overdue"]).await;
    let timers: Value = serde_json::from_str(&overdue.stdout).unwrap();
    let keys: Vec<&str> = timers
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["pay-1"]);

    let shown = msgkit(
        &db,
        &["--json", "show", "--name", "callback-due", "--key", "pay-1"],
    )
    .await;
    let timer: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(timer["payload"]["amount"], 5);
    assert!(timer["overdue_by_secs"].as_f64().unwrap() > 3500.0);
}

#[tokio::test]
async fn a_cancelled_timer_is_gone_and_cancelling_it_again_is_not_found() {
    let db = TestDatabase::create().await;
    let pool = schema_with_timers(&db).await;
    let cancelled = msgkit(&db, &["cancel", "--name", "callback-due", "--key", "pay-2"]).await;
    assert_eq!(cancelled.code, 0, "{}", cancelled.stderr);
    let left: Vec<String> = sqlx::query_scalar("SELECT key FROM msgkit_timers")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, ["pay-1"]);
    let again = msgkit(&db, &["cancel", "--name", "callback-due", "--key", "pay-2"]).await;
    assert_eq!(again.code, 66, "not found: {}", again.stderr);
}

#[tokio::test]
async fn an_unreachable_database_and_a_schema_without_timers_have_their_own_exit_codes() {
    let db = TestDatabase::create().await;
    // A schema the kit never migrated: no msgkit_timers table.
    db.settings("risk_timers").connect().await.unwrap();
    let empty = msgkit(&db, &["list"]).await;
    assert_eq!(empty.code, 66, "not found: {}", empty.stderr);
    assert!(
        empty.stderr.contains("no msgkit_timers table"),
        "{}",
        empty.stderr
    );

    let unreachable = tokio::process::Command::new(env!("CARGO_BIN_EXE_msgkit"))
        .env(
            "DATABASE_URL",
            "postgres://postgres:secret@127.0.0.1:1/none",
        )
        .args(["timers", "--service", "risk", "list"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert_eq!(unreachable.status.code(), Some(69), "unavailable: {stderr}");
    assert!(
        !stderr.contains("secret"),
        "the password stays out: {stderr}"
    );
}
