//! `msgkit projection` against a real broker and database, with a projection running in a
//! service in this process: what an operator sees, a rebuild asked for and followed to its
//! switch, and the refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use msgkit::message::OutgoingMessage;
use msgkit::projection::{Context, Projection, ProjectionError};
use msgkit::service::{Service, ServiceSettings};
use msgkit::testing::{TestBroker, TestDatabase, test_config, wait_until_async};
use msgkit::topology::Archive;
use msgkit::{EventType, Shutdown, Topology};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

const DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize, Deserialize)]
struct Added {
    key: String,
    amount: i64,
}

const ADDED: EventType<Added> = EventType::new("sum.added");

async fn on_added(mut ctx: Context<'_>, added: Added) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO totals (key, sum, events) VALUES ($1, $2, 1)
         ON CONFLICT (key) DO UPDATE SET sum = totals.sum + $2, events = totals.events + 1",
    )
    .bind(&added.key)
    .bind(added.amount)
    .execute(ctx.tx())
    .await?;
    Ok(())
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn msgkit(db: &TestDatabase, broker: &TestBroker, args: &[&str]) -> Run {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_msgkit"))
        .env("DATABASE_URL", db.url())
        .env("AMQP_URL", broker.amqp_url())
        .args(["projection", "--service", "sums"])
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

async fn publish(broker: &TestBroker, archive: &Archive, count: i64) {
    let publisher = broker
        .publisher(&Topology::default().with_archive(archive.clone()))
        .await;
    let messages: Vec<OutgoingMessage> = (0..count)
        .map(|n| {
            let added = Added {
                key: format!("k{}", n % 7),
                amount: n,
            };
            let mut message =
                OutgoingMessage::event(ADDED.name(), &added.key, "test", &added).unwrap();
            message.exchange = String::new();
            message.routing_key = archive.name.clone();
            message
        })
        .collect();
    let outcomes = publisher.publish_batch(&messages).await.unwrap();
    assert!(outcomes.iter().all(|o| o.is_confirmed()));
    publisher.close().await;
}

async fn start(db: &TestDatabase, broker: &TestBroker, archive: &Archive) -> (Shutdown, PgPool) {
    let mut settings = ServiceSettings::from_source(
        test_config([("PROJECTION_HEARTBEAT_MS", "100")]),
        "sums",
        0,
        "sums",
    )
    .unwrap();
    settings.database = db.settings("sums");
    settings.broker = broker.settings("sums");
    settings.archive = Some(archive.clone());
    let projection = Projection::new("totals", sqlx::migrate!("./tests/projection_migrations"))
        .apply(ADDED, on_added);
    let service = Service::start(
        settings,
        Topology::default(),
        sqlx::migrate::Migrator::DEFAULT,
    )
    .await
    .unwrap()
    .project(projection)
    .await
    .unwrap();
    let shutdown = Shutdown::new();
    shutdown.spawn(service.run_until_stopped(shutdown.child()));
    let pool = db.settings("sums").connect().await.unwrap();
    (shutdown, pool)
}

async fn applied(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT coalesce(sum(events), 0)::bigint FROM totals")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

#[tokio::test]
async fn an_operator_sees_the_projection_and_rebuilds_it_to_equal_tables() {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let archive = Archive::default();
    publish(&broker, &archive, 700).await;
    let (shutdown, pool) = start(&db, &broker, &archive).await;
    wait_until_async("the projection to catch up", DEADLINE, || async {
        (applied(&pool).await == 700).then_some(())
    })
    .await;

    let status = msgkit(&db, &broker, &["status"]).await;
    assert_eq!(status.code, 0, "{}", status.stderr);
    let lines: Vec<&str> = status.stdout.lines().collect();
    assert!(lines[0].starts_with("PROJECTION"), "{}", status.stdout);
    assert!(
        lines[1].starts_with("totals") && lines[1].contains("699"),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("archive starts at offset 0"),
        "{}",
        status.stdout
    );

    let rebuild = msgkit(&db, &broker, &["rebuild", "totals"]).await;
    assert_eq!(rebuild.code, 0, "{}\n{}", rebuild.stdout, rebuild.stderr);
    assert!(
        rebuild.stdout.starts_with("done: switched at offset 699"),
        "{}",
        rebuild.stdout
    );
    let differing: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ((TABLE sums.totals EXCEPT TABLE sums_totals_previous.totals)
          UNION ALL (TABLE sums_totals_previous.totals EXCEPT TABLE sums.totals)) d",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        differing, 0,
        "the rebuilt tables equal the replaced ones row for row"
    );

    let json = msgkit(&db, &broker, &["--json", "status"]).await;
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(value["projections"][0]["rebuild"]["state"], "done");
    assert_eq!(value["archive_first"][0], 0);

    let unknown = msgkit(&db, &broker, &["rebuild", "nothing"]).await;
    assert_eq!(unknown.code, 66, "{}", unknown.stderr);
    assert!(
        unknown.stderr.contains("no projection named \"nothing\""),
        "{}",
        unknown.stderr
    );
    shutdown.trigger();
    shutdown.wait_for_tasks().await;
}

#[tokio::test]
async fn a_rebuild_is_refused_with_the_reason_when_the_history_is_gone() {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let archive = Archive::default();
    let pool = db.settings("sums").connect().await.unwrap();
    msgkit::schema::migrate(&pool).await.unwrap();
    // A projection whose history starts at offset 0 while the archive (empty) no longer has it.
    sqlx::query(
        "INSERT INTO msgkit_projections (name, position, started_from, started_from_time)
         VALUES ('totals', 41, 0, now() - interval '8 days')",
    )
    .execute(&pool)
    .await
    .unwrap();
    publish(&broker, &archive, 0).await;
    let refused = msgkit(&db, &broker, &["rebuild", "totals"]).await;
    assert_eq!(refused.code, 64, "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("refusing to rebuild totals: its history starts at archive offset 0"),
        "{}",
        refused.stderr
    );
    let requested: i64 = sqlx::query_scalar("SELECT count(*) FROM msgkit_projection_rebuilds")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(requested, 0, "nothing was asked of the service");
}
