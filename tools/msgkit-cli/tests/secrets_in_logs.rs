//! Every service reads its secrets from files (`NAME_FILE`, as container platforms mount them)
//! and never logs one: not the broker's or the database's password, not a token secret, not a
//! token a client sent. Each service binary runs with debug logs, its URLs and secrets given as
//! files, a broker that refuses connections (so the relay logs the URL it tried, over and over)
//! and requests carrying a token in the query and in `Authorization`.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use msgkit::auth::{Claims, Role, TokenKey};
use msgkit::testing::{TestDatabase, wait_until_async};
use support::{Running, binary, free_port};

const DEADLINE: Duration = Duration::from_secs(60);
const AMQP_USER: &str = "user-from-a-file";
const AMQP_PASSWORD: &str = "amqp-S3cret-from-a-file";
const DB_PASSWORD: &str = "db-S3cret-from-a-file";
/// Every token secret the services read (risk's and rebate's streams, payment's callbacks).
const TOKEN_SECRET: &str = "token-S3cret-from-a-file-0123456789abcdef";
const CALLBACK_SECRET: &str = "callback-S3cret-from-a-file-0123456789abcdef";

const SERVICES: [&str; 7] = [
    "order",
    "inventory",
    "payment",
    "notify",
    "risk",
    "reconcile",
    "rebate",
];

/// Write `content` to a file of `dir` named `name` (with the trailing newline an editor adds).
fn secret_file(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{content}\n")).unwrap();
    path.to_string_lossy().into_owned()
}

async fn check(service: &str, dir: &Path) {
    let db = TestDatabase::create().await;
    let database_url = db.url().replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{DB_PASSWORD}@"),
        1,
    );
    let dead_broker = free_port();
    let files = dir.join(service);
    std::fs::create_dir_all(&files).unwrap();
    let port = free_port();
    let token = TokenKey::new(TOKEN_SECRET.as_bytes().to_vec())
        .unwrap()
        .issue(&Claims::new(
            "c-1",
            Role::Operator,
            Utc::now(),
            TimeDelta::minutes(5),
        ));
    let mut command = Command::new(binary(service));
    command
        .env(
            "DATABASE_URL_FILE",
            secret_file(&files, "database_url", &database_url),
        )
        .env(
            "AMQP_URL_FILE",
            secret_file(
                &files,
                "amqp_url",
                &format!("amqp://{AMQP_USER}:{AMQP_PASSWORD}@127.0.0.1:{dead_broker}/%2f"),
            ),
        )
        .env(
            "TOKEN_SECRET_FILE",
            secret_file(&files, "token_secret", TOKEN_SECRET),
        )
        .env(
            "GATEWAY_CALLBACK_SECRET_FILE",
            secret_file(&files, "callback_secret", CALLBACK_SECRET),
        )
        .env("ARCHIVE_ENABLED", "true")
        .env("AMQP_RECONNECT_MAX_MS", "200")
        .env(
            format!("{}_HTTP_ADDR", service.to_ascii_uppercase()),
            format!("127.0.0.1:{port}"),
        )
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "debug");
    let running = Running::start(&mut command);

    // The broker URL came from its file: the refused connection is logged with the file's
    // user, and its password redacted.
    let redacted = format!("{AMQP_USER}:***@");
    wait_until_async(
        &format!("{service} to log the redacted broker URL it read from its file"),
        DEADLINE,
        || async { running.has_logged(&redacted).then_some(()) },
    )
    .await;
    // A service whose HTTP API is up gets requests with a token in the query string and in
    // `Authorization` (each answered before the logs are read; what the request spans carry
    // is checked where they are exported, risk's stream_logs test); one that waits for the
    // broker before serving is checked for its start-up logs only.
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let served = client
        .get(format!("{base}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .is_ok();
    if served {
        for path in ["/readyz", "/alerts", "/alerts/stream", "/metrics"] {
            let _ = client
                .get(format!("{base}{path}?access_token={token}"))
                .bearer_auth(&token)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .unwrap();
        }
    }
    // The database URL came from its file: the service made its schema there.
    let pool = db.pool().await;
    wait_until_async(
        &format!("{service}'s outbox in the database its URL file names"),
        DEADLINE,
        || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE tablename = 'msgkit_outbox')",
            )
            .fetch_one(&pool)
            .await
            .ok()
            .filter(|present| *present)
        },
    )
    .await;
    pool.close().await;
    let output = running.stop();

    for (what, secret) in [
        ("the AMQP password", AMQP_PASSWORD),
        ("the database password", DB_PASSWORD),
        ("the token secret", TOKEN_SECRET),
        ("the callback secret", CALLBACK_SECRET),
        ("a client's token", token.as_str()),
        ("a token's signature", token.rsplit('.').next().unwrap()),
    ] {
        assert!(
            !output.contains(secret),
            "{service} logged {what}:\n{output}"
        );
    }
    drop(db);
}

#[tokio::test]
async fn no_service_logs_a_secret_it_read_from_a_file_or_a_token_it_was_sent() {
    let dir = std::env::temp_dir().join(format!("msgkit-secrets-{}", uuid::Uuid::new_v4()));
    for service in SERVICES {
        check(service, &dir).await;
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
