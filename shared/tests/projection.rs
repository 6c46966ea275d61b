//! Projections of the event archive against the real RabbitMQ and PostgreSQL, run the way a
//! service runs them (`Service::project`): built from history then following live, exactly
//! once in effect across a SIGKILL mid catch-up, one active replica with takeover, a rebuild
//! equal to the live tables row for row, and a rebuild refused when retention removed part
//! of the history.
//!
//! The test projection sums an amount per key and is deliberately not idempotent: an event
//! applied twice would show in the sums.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use msgkit::message::OutgoingMessage;
use msgkit::projection::{Context, Projection, ProjectionError, admin};
use msgkit::service::Service;
use msgkit::testing::{TestBroker, TestDatabase, wait_until_async};
use msgkit::topology::Archive;
use msgkit::{ConfirmedPublisher, EventType, Shutdown, Topology};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::process::{Child, Command};

const DEADLINE: Duration = Duration::from_secs(60);
const SCHEMA: &str = "sums";
/// Set in a child's environment: the child runs the projection's service until killed.
const CHILD_DATABASE: &str = "MSGKIT_PROJECTION_CHILD_DATABASE";
const CHILD_AMQP: &str = "MSGKIT_PROJECTION_CHILD_AMQP_URL";

#[derive(Debug, Serialize, Deserialize)]
struct Added {
    key: String,
    amount: i64,
}

const ADDED: EventType<Added> = EventType::new("sum.added");

async fn on_added(mut ctx: Context<'_>, added: Added) -> Result<(), ProjectionError> {
    // The failure test's poison: refused until its test opens the gate (a fixed deployment).
    if added.key == "poison" {
        let open: Option<bool> = sqlx::query_scalar("SELECT open FROM gate")
            .fetch_optional(ctx.tx())
            .await?;
        if open != Some(true) {
            return Err(ProjectionError::Refused(format!(
                "event {} is poison",
                ctx.message_id()
            )));
        }
    }
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

fn projection() -> Projection {
    Projection::new("totals", sqlx::migrate!("./tests/projection_migrations"))
        .apply(ADDED, on_added)
}

/// The projection's service on `db`/`broker`, with `extra` settings, until `shutdown`.
async fn start(
    database: msgkit::database::DatabaseSettings,
    amqp_url: &str,
    archive: &Archive,
    extra: &[(&str, &str)],
    shutdown: &Shutdown,
) -> std::net::SocketAddr {
    let broker = msgkit::BrokerSettings::new(amqp_url, "sums");
    let mut settings = msgkit::service::ServiceSettings::from_source(
        msgkit::testing::test_config([]),
        "sums",
        0,
        SCHEMA,
    )
    .unwrap();
    settings.database = database;
    settings.broker = broker;
    settings.archive = Some(archive.clone());
    for (key, value) in extra {
        settings.source.set(*key, *value);
    }
    let service = Service::start(
        settings,
        Topology::default(),
        sqlx::migrate::Migrator::DEFAULT,
    )
    .await
    .unwrap()
    .project(projection())
    .await
    .unwrap();
    let addr = service.local_addr().unwrap();
    shutdown.spawn(service.run_until_stopped(shutdown.child()));
    addr
}

/// One event of `key` into the archive.
async fn publish_one(publisher: &ConfirmedPublisher, archive: &Archive, key: &str, amount: i64) {
    let mut message = OutgoingMessage::event(
        ADDED.name(),
        key,
        "test",
        &Added {
            key: key.to_owned(),
            amount,
        },
    )
    .unwrap();
    message.exchange = String::new();
    message.routing_key = archive.name.clone();
    assert!(publisher.publish(&message).await.unwrap().is_confirmed());
}

/// `count` events into the archive, directly (as relays would), keys `k0`..`k9`, amount `n`.
/// Returns the expected sums.
async fn publish(
    publisher: &ConfirmedPublisher,
    archive: &Archive,
    from: i64,
    count: i64,
) -> BTreeMap<String, (i64, i64)> {
    let mut expected = BTreeMap::new();
    for chunk in (from..from + count).collect::<Vec<_>>().chunks(1000) {
        let messages: Vec<OutgoingMessage> = chunk
            .iter()
            .map(|n| {
                let key = format!("k{}", n % 10);
                let entry = expected.entry(key.clone()).or_insert((0, 0));
                entry.0 += n;
                entry.1 += 1;
                let mut message = OutgoingMessage::event(
                    ADDED.name(),
                    &key,
                    "test",
                    &Added {
                        key: key.clone(),
                        amount: *n,
                    },
                )
                .unwrap();
                message.exchange = String::new();
                message.routing_key = archive.name.clone();
                message
            })
            .collect();
        let outcomes = publisher.publish_batch(&messages).await.unwrap();
        assert!(outcomes.iter().all(|o| o.is_confirmed()));
    }
    expected
}

/// A fresh database and vhost, and a publisher into `archive` (declared).
async fn setup(archive: &Archive) -> (TestDatabase, TestBroker, ConfirmedPublisher) {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let publisher = broker
        .publisher(&Topology::default().with_archive(archive.clone()))
        .await;
    (db, broker, publisher)
}

/// Stop the services of `shutdown` and close `publisher`.
async fn stop(shutdown: Shutdown, publisher: ConfirmedPublisher) {
    shutdown.trigger();
    shutdown.wait_for_tasks().await;
    publisher.close().await;
}

fn merge(a: &mut BTreeMap<String, (i64, i64)>, b: BTreeMap<String, (i64, i64)>) {
    for (key, (sum, events)) in b {
        let entry = a.entry(key).or_insert((0, 0));
        entry.0 += sum;
        entry.1 += events;
    }
}

async fn totals(pool: &PgPool) -> BTreeMap<String, (i64, i64)> {
    sqlx::query_as::<_, (String, i64, i64)>("SELECT key, sum, events FROM totals")
        .fetch_all(pool)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(key, sum, events)| (key, (sum, events)))
        .collect()
}

async fn wait_for_totals(pool: &PgPool, expected: &BTreeMap<String, (i64, i64)>, what: &str) {
    let want: i64 = expected.values().map(|(_, events)| events).sum();
    wait_until_async(what, DEADLINE, || async {
        let seen: i64 = totals(pool).await.values().map(|(_, events)| events).sum();
        (seen >= want).then_some(())
    })
    .await;
    assert_eq!(
        &totals(pool).await,
        expected,
        "{what}: every event applied exactly once"
    );
}

async fn schema_pool(db: &TestDatabase) -> PgPool {
    let pool = db.settings(SCHEMA).connect().await.unwrap();
    msgkit::schema::migrate(&pool).await.unwrap();
    pool
}

fn small_archive() -> Archive {
    Archive {
        segment_bytes: 200_000,
        ..Archive::default()
    }
}

#[tokio::test]
async fn a_projection_added_after_the_events_builds_from_history_then_follows_live() {
    let archive = small_archive();
    let (db, broker, publisher) = setup(&archive).await;
    let mut expected = publish(&publisher, &archive, 0, 3000).await;

    let shutdown = Shutdown::new();
    let addr = start(
        db.settings(SCHEMA),
        &broker.amqp_url(),
        &archive,
        &[],
        &shutdown,
    )
    .await;
    let pool = schema_pool(&db).await;
    wait_for_totals(&pool, &expected, "the history").await;

    merge(&mut expected, publish(&publisher, &archive, 3000, 50).await);
    wait_for_totals(&pool, &expected, "live events").await;

    let status = admin::status(&pool).await.unwrap();
    assert_eq!(status.len(), 1);
    let status = &status[0];
    assert_eq!(status.name, "totals");
    assert_eq!(
        status.started_from,
        Some(0),
        "its history starts at the archive's start"
    );
    assert_eq!(status.applied, 3050);
    assert!(status.position.unwrap() >= 3049);
    assert!(status.active_instance.is_some());
    let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("msgkit_projection_active{projection=\"totals\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("msgkit_projection_lag_seconds{projection=\"totals\"} 0"),
        "{metrics}"
    );

    stop(shutdown, publisher).await;
}

/// The child mode: the projection's service until it is killed.
async fn child_service(database: String, amqp: String) {
    let database = msgkit::database::DatabaseSettings {
        url: database.into(),
        schema: SCHEMA.to_owned(),
        max_connections: 5,
    };
    let shutdown = Shutdown::new();
    // Small batches: the catch-up takes long enough to be killed in the middle of it.
    start(
        database,
        &amqp,
        &small_archive(),
        &[
            ("PROJECTION_BATCH", "20"),
            ("PROJECTION_TAKEOVER_POLL_MS", "100"),
        ],
        &shutdown,
    )
    .await;
    std::future::pending::<()>().await;
}

fn start_child(db: &TestDatabase, broker: &TestBroker) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sigkilled_mid_catch_up_it_resumes_from_its_checkpoint_and_one_replica_of_two_leads",
            "--nocapture",
        ])
        .env(CHILD_DATABASE, db.url())
        .env(CHILD_AMQP, broker.amqp_url())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn leader(pool: &PgPool) -> Option<(String, i64)> {
    sqlx::query_as("SELECT active_instance, applied FROM msgkit_projections WHERE name = 'totals'")
        .fetch_optional(pool)
        .await
        .ok()
        .flatten()
        .and_then(|(instance, applied): (Option<String>, i64)| instance.map(|i| (i, applied)))
}

fn pid_of(instance: &str) -> u32 {
    instance.rsplit('/').next().unwrap().parse().unwrap()
}

async fn kill(mut child: Child) {
    child.start_kill().unwrap();
    let status = child.wait().await.unwrap();
    assert!(!status.success(), "killed, not exited: {status:?}");
}

#[tokio::test]
async fn sigkilled_mid_catch_up_it_resumes_from_its_checkpoint_and_one_replica_of_two_leads() {
    if let (Ok(database), Ok(amqp)) = (std::env::var(CHILD_DATABASE), std::env::var(CHILD_AMQP)) {
        return child_service(database, amqp).await;
    }
    let archive = small_archive();
    let (db, broker, publisher) = setup(&archive).await;
    let mut expected = publish(&publisher, &archive, 0, 20_000).await;
    let pool = schema_pool(&db).await;

    let first = start_child(&db, &broker);
    let first_pid = first.id().unwrap();
    let applied = wait_until_async("the first replica to be catching up", DEADLINE, || async {
        leader(&pool)
            .await
            .filter(|(_, applied)| *applied >= 1000)
            .map(|(_, a)| a)
    })
    .await;
    kill(first).await;
    assert!(
        applied < 20_000,
        "killed in the middle of the catch-up ({applied} applied)"
    );

    // Two replicas now: one leads, resumes from the checkpoint, and the sums come out exact.
    let second = start_child(&db, &broker);
    let third = start_child(&db, &broker);
    wait_for_totals(&pool, &expected, "the catch-up after the kill").await;
    let (instance, _) = leader(&pool).await.unwrap();
    let leading = pid_of(&instance);
    assert_ne!(leading, first_pid);
    let (active, standby) = if leading == second.id().unwrap() {
        (second, third)
    } else {
        assert_eq!(leading, third.id().unwrap(), "one of the two leads");
        (third, second)
    };
    let standby_pid = standby.id().unwrap();

    // The leader dies: the standby takes over and applies what comes next, once.
    kill(active).await;
    merge(
        &mut expected,
        publish(&publisher, &archive, 20_000, 100).await,
    );
    wait_for_totals(&pool, &expected, "events after the takeover").await;
    let (instance, _) = leader(&pool).await.unwrap();
    assert_eq!(pid_of(&instance), standby_pid, "the standby took over");
    kill(standby).await;
    publisher.close().await;
}

async fn rows_differing(pool: &PgPool, a: &str, b: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM ((TABLE {a} EXCEPT TABLE {b}) UNION ALL (TABLE {b} EXCEPT TABLE {a})) d"
    )))
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn rebuild_finished(pool: &PgPool) -> admin::RebuildStatus {
    wait_until_async("the rebuild to finish", DEADLINE, || async {
        admin::rebuild_status(pool, "totals")
            .await
            .ok()
            .flatten()
            .filter(admin::RebuildStatus::is_finished)
    })
    .await
}

#[tokio::test]
async fn a_rebuild_equals_the_live_projection_row_for_row_and_then_follows_live() {
    let archive = small_archive();
    let (db, broker, publisher) = setup(&archive).await;
    let mut expected = publish(&publisher, &archive, 0, 2000).await;
    let shutdown = Shutdown::new();
    start(
        db.settings(SCHEMA),
        &broker.amqp_url(),
        &archive,
        &[("PROJECTION_HEARTBEAT_MS", "100")],
        &shutdown,
    )
    .await;
    let pool = schema_pool(&db).await;
    wait_for_totals(&pool, &expected, "the live projection").await;

    let bounds = admin::archive_bounds(&broker.settings("cli"), &archive.name)
        .await
        .unwrap();
    admin::request_rebuild(&pool, "totals", &bounds)
        .await
        .unwrap();
    let again = admin::request_rebuild(&pool, "totals", &bounds).await;
    assert!(
        matches!(
            &again,
            Err(admin::RebuildRequestError::InProgress(..)) | Ok(())
        ),
        "{again:?}"
    );
    let rebuild = rebuild_finished(&pool).await;
    assert_eq!(rebuild.state, "done", "{rebuild:?}");
    assert_eq!(rebuild.applied, 2000);
    // The replaced tables are kept beside the new ones: equal, row for row.
    assert_eq!(
        rows_differing(&pool, "sums.totals", "sums_totals_previous.totals").await,
        0
    );
    assert_eq!(totals(&pool).await, expected);

    // The live loop goes on, into the new tables.
    merge(&mut expected, publish(&publisher, &archive, 2000, 30).await);
    wait_for_totals(&pool, &expected, "live events after the switch").await;
    let leftovers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_namespace WHERE nspname = 'sums_totals_rebuild'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        leftovers, 0,
        "the rebuild's schema is gone after the switch"
    );
    stop(shutdown, publisher).await;
}

#[tokio::test]
async fn a_rebuild_is_refused_when_retention_removed_part_of_the_history() {
    let archive = Archive {
        max_bytes: 30_000,
        segment_bytes: 6_000,
        ..Archive::default()
    };
    let (db, broker, publisher) = setup(&archive).await;
    // Few enough events that retention cannot have removed any before the projection reads
    // them (an event takes several hundred bytes with its headers: 50 of them came near the
    // stream's 30,000 bytes, and a projection starting late on a loaded machine found its
    // first events gone).
    let mut expected = publish(&publisher, &archive, 0, 10).await;
    let shutdown = Shutdown::new();
    start(
        db.settings(SCHEMA),
        &broker.amqp_url(),
        &archive,
        &[("PROJECTION_HEARTBEAT_MS", "100")],
        &shutdown,
    )
    .await;
    let pool = schema_pool(&db).await;
    wait_for_totals(&pool, &expected, "the first events").await;

    // Write until retention has removed the segment holding the projection's first event, in
    // rounds the projection applies before the next, each well under the retention's size
    // (retention must not overtake it: that is another loss, not this test's).
    let settings = broker.settings("cli");
    let mut from = 10;
    let bounds = loop {
        merge(&mut expected, publish(&publisher, &archive, from, 20).await);
        from += 20;
        wait_for_totals(&pool, &expected, "the live projection").await;
        let bounds = admin::archive_bounds(&settings, &archive.name)
            .await
            .unwrap();
        if bounds.first.is_some_and(|(offset, _)| offset > 0) {
            break bounds;
        }
        assert!(from < 20_000, "retention never removed a segment");
    };
    let refused = admin::request_rebuild(&pool, "totals", &bounds)
        .await
        .unwrap_err();
    let message = refused.to_string();
    assert!(matches!(
        refused,
        admin::RebuildRequestError::HistoryGone(_)
    ));
    assert!(message.contains("starts at archive offset 0"), "{message}");
    assert!(message.contains("retention removed"), "{message}");
    stop(shutdown, publisher).await;
}

async fn readyz(addr: std::net::SocketAddr) -> (u16, String) {
    let response = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn a_failing_event_halts_the_projection_visibly_and_a_fix_resumes_it_without_a_skip() {
    let archive = small_archive();
    let (db, broker, publisher) = setup(&archive).await;
    let pool = schema_pool(&db).await;
    sqlx::query("CREATE TABLE gate (open boolean NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO gate VALUES (false)")
        .execute(&pool)
        .await
        .unwrap();
    let mut expected = publish(&publisher, &archive, 0, 20).await;
    publish_one(&publisher, &archive, "poison", 1000).await;
    merge(&mut expected, publish(&publisher, &archive, 20, 20).await);
    let shutdown = Shutdown::new();
    let addr = start(
        db.settings(SCHEMA),
        &broker.amqp_url(),
        &archive,
        &[("PROJECTION_HEARTBEAT_MS", "100")],
        &shutdown,
    )
    .await;

    // Halted at the poison, visibly: /readyz says why, the failures count, nothing after it
    // is applied (a skip would make the tables silently wrong).
    let reason = wait_until_async("readyz to report the failure", DEADLINE, || async {
        let (status, body) = readyz(addr).await;
        (status == 503 && body.contains("is poison")).then_some(body)
    })
    .await;
    assert!(reason.contains("projection totals: failing"), "{reason}");
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains("msgkit_projection_failures_total{projection=\"totals\"} 0"),
        "{metrics}"
    );
    let applied: i64 = totals(&pool).await.values().map(|(_, events)| events).sum();
    assert!(
        applied <= 20,
        "nothing past the poison is applied ({applied})"
    );

    // The fix is deployed: the projection resumes at the poison and applies everything once.
    sqlx::query("UPDATE gate SET open = true")
        .execute(&pool)
        .await
        .unwrap();
    expected.insert("poison".into(), (1000, 1));
    wait_for_totals(&pool, &expected, "everything after the fix").await;
    wait_until_async("readyz to recover", DEADLINE, || async {
        (readyz(addr).await.0 == 200).then_some(())
    })
    .await;
    stop(shutdown, publisher).await;
}

#[tokio::test]
async fn a_lost_broker_connection_is_resumed_from_the_checkpoint() {
    let archive = small_archive();
    let (db, broker, publisher) = setup(&archive).await;
    let proxy = msgkit::testing::TcpProxy::start(broker.amqp_addr())
        .await
        .unwrap();
    let mut expected = publish(&publisher, &archive, 0, 500).await;
    let shutdown = Shutdown::new();
    let addr = start(
        db.settings(SCHEMA),
        &broker.amqp_url_via(&proxy.addr()),
        &archive,
        &[
            ("PROJECTION_HEARTBEAT_MS", "100"),
            ("AMQP_RECONNECT_MAX_MS", "200"),
        ],
        &shutdown,
    )
    .await;
    let pool = schema_pool(&db).await;
    wait_for_totals(&pool, &expected, "before the cut").await;

    proxy.cut();
    merge(&mut expected, publish(&publisher, &archive, 500, 500).await);
    wait_until_async("readyz to report the lost broker", DEADLINE, || async {
        let (status, body) = readyz(addr).await;
        (status == 503 && body.contains("projection totals")).then_some(())
    })
    .await;
    proxy.restore();
    wait_for_totals(&pool, &expected, "after the broker came back").await;
    wait_until_async("readyz to recover", DEADLINE, || async {
        (readyz(addr).await.0 == 200).then_some(())
    })
    .await;
    stop(shutdown, publisher).await;
    proxy.shutdown().await;
}
