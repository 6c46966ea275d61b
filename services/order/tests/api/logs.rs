use std::process::Command;

use msgkit::testing::{Running, TestDatabase, wait_until_async};
use serde_json::Value;

use crate::helpers::DEADLINE;

const AMQP_PASSWORD: &str = "amqp-S3cret-pw";
const DB_PASSWORD: &str = "db-S3cret-pw";
const INCOMING_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

#[tokio::test]
async fn json_logs_carry_trace_ids_and_never_a_password() {
    let db = TestDatabase::create().await;
    // A broker that refuses connections, so the relay logs its (redacted) URL over and over;
    // PostgreSQL trusts loopback, so its password is accepted and ignored.
    let dead_broker = free_port();
    let db_url = db.url().replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{DB_PASSWORD}@"),
        1,
    );
    let port = free_port();
    let running = Running::start(
        Command::new(env!("CARGO_BIN_EXE_order"))
            .env("DATABASE_URL", &db_url)
            .env(
                "AMQP_URL",
                format!("amqp://guest:{AMQP_PASSWORD}@127.0.0.1:{dead_broker}/%2f"),
            )
            .env("AMQP_RECONNECT_MAX_MS", "200")
            .env("ORDER_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info"),
    );

    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_until_async("the order service to answer", DEADLINE, || async {
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let response = client
        .post(format!("{base}/orders"))
        .header(
            "traceparent",
            format!("00-{INCOMING_TRACE}-b7ad6b7169203331-01"),
        )
        .json(&crate::helpers::valid_order())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        202,
        "accepted while the broker is unreachable"
    );
    // The relay fails to connect, and says so, with the URL it tried.
    wait_until_async(
        "a broker connection failure to be logged",
        DEADLINE,
        || async { running.has_logged("broker connection failed").then_some(()) },
    )
    .await;
    let output = running.stop();

    assert!(
        !output.contains(AMQP_PASSWORD),
        "the AMQP password leaked:\n{output}"
    );
    assert!(
        !output.contains(DB_PASSWORD),
        "the database password leaked:\n{output}"
    );
    let lines: Vec<Value> = output
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let refused = lines
        .iter()
        .find(|line| line["fields"]["message"] == "broker connection failed")
        .unwrap_or_else(|| panic!("no connection failure logged:\n{output}"));
    assert!(
        refused["fields"]["error"]
            .as_str()
            .unwrap()
            .contains("guest:***@"),
        "{refused}"
    );
    let accepted = lines
        .iter()
        .find(|line| line["fields"]["message"] == "order accepted")
        .unwrap_or_else(|| panic!("no 'order accepted' line:\n{output}"));
    let spans = accepted["spans"].as_array().unwrap();
    let http = spans.iter().find(|span| span["name"] == "http").unwrap();
    assert_eq!(http["trace_id"], INCOMING_TRACE, "{accepted}");
    assert_eq!(http["span_id"].as_str().unwrap().len(), 16, "{accepted}");
}
