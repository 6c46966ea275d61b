//! `msgkit dlq` against the real broker: the binary as an operator runs it.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;

use chrono::Utc;
use lapin::options::BasicGetOptions;
use msgkit::message::{OutgoingMessage, header_i64, header_str};
use msgkit::testing::{TestBroker, wait_until_async};
use msgkit::{ConfirmedPublisher, Shutdown};
use saga::{DEADLINE, Saga};
use serde_json::Value;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

async fn msgkit(broker: &TestBroker, args: &[&str]) -> Run {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_msgkit"))
        .env("AMQP_URL", broker.amqp_url())
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

async fn wait_depth(broker: &TestBroker, queue: &str, depth: u32) {
    wait_until_async(
        &format!("{queue} to hold {depth} message(s)"),
        DEADLINE,
        || async { (broker.queue_depth(queue).await == Some(depth)).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_dead_lettered_order_is_replayed_after_the_fix_and_completes_exactly_once() {
    let mut saga = Saga::start(&[
        ("INVENTORY_FAULT_TRANSIENT_RATE", "1.0"),
        ("RETRY_INITIAL_DELAY_MS", "30"),
        ("RETRY_MAX_DELAY_MS", "100"),
        ("RETRY_MAX_ATTEMPTS", "3"),
    ])
    .await;
    let before = saga.stock("SKU-1").await;
    let order_id = saga.place_order("c-1", &[("SKU-1", 3)]).await;
    wait_depth(&saga.broker, "inventory.dlq", 1).await;

    // list: grouped by fingerprint, and reading leaves the message where it is.
    let list = msgkit(&saga.broker, &["dlq", "list", "--json"]).await;
    assert_eq!(list.code, 0, "{}", list.stderr);
    let listed = list.json();
    let group = &listed["groups"][0];
    assert_eq!(group["queue"], "inventory.dlq");
    assert_eq!(
        group["fingerprint"],
        "retries-exhausted/msgkit::faults::InjectedFailure@inventory"
    );
    assert_eq!(group["count"], 1);
    let message_id = group["message_ids"][0].as_str().unwrap().to_owned();
    wait_depth(&saga.broker, "inventory.dlq", 1).await;
    let table = msgkit(&saga.broker, &["dlq", "list"]).await;
    assert!(
        table.stdout.contains("inventory.dlq  1"),
        "{}",
        table.stdout
    );
    assert!(
        table
            .stdout
            .contains("retries-exhausted/msgkit::faults::InjectedFailure@inventory")
    );

    // show: the headers an operator needs, the body as JSON.
    let shown = msgkit(&saga.broker, &["dlq", "show", &message_id, "--json"]).await;
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    let shown = shown.json();
    assert_eq!(shown["headers"]["x-failure-reason"], "retries-exhausted");
    assert_eq!(shown["headers"]["x-failed-service"], "inventory");
    assert_eq!(shown["headers"]["x-attempt"], 3);
    assert_eq!(shown["body"]["order_id"], order_id.as_str());
    assert_eq!(shown["correlation_id"], order_id.as_str());

    // A dry run changes nothing.
    let dry = msgkit(
        &saga.broker,
        &[
            "dlq",
            "replay",
            "--queue",
            "inventory.dlq",
            "--dry-run",
            "--json",
        ],
    )
    .await;
    assert_eq!(dry.json()["count"], 1);
    wait_depth(&saga.broker, "inventory.dlq", 1).await;
    assert_eq!(saga.order(&order_id).await["status"], "pending");

    // The operator fixes the consumer, then replays.
    saga.restart_inventory(&[]).await;
    let replay = msgkit(
        &saga.broker,
        &[
            "dlq",
            "replay",
            "--queue",
            "inventory.dlq",
            "--message-id",
            &message_id,
            "--json",
        ],
    )
    .await;
    assert_eq!(replay.code, 0, "{}", replay.stderr);
    let replayed = replay.json();
    assert_eq!(replayed["count"], 1);
    assert_eq!(replayed["messages"][0]["to"], "inventory");

    assert_eq!(saga.wait_final(&order_id).await["status"], "confirmed");
    saga.wait_notifications(&order_id, 1).await;
    assert_eq!(
        saga.broker.queue_depth("inventory.dlq").await,
        Some(0),
        "moved, not copied"
    );
    assert_eq!(saga.stock("SKU-1").await, before - 3, "stock taken once");
    assert_eq!(saga.charges(&order_id).await.len(), 1, "charged once");
    let history = saga.order(&order_id).await["history"].clone();
    let reserved = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["event"] == "inventory.reserved")
        .count();
    assert_eq!(reserved, 1, "other consumers saw no duplicate: {history}");
    saga.stop().await;
}

/// A dead letter as the kit writes it, published straight into `inventory.dlq`.
fn dead_letter(reason: &str, failed_minutes_ago: i64) -> OutgoingMessage {
    let mut message = OutgoingMessage::event(
        "order.placed",
        "order-1",
        "order",
        &serde_json::json!({"n": 1}),
    )
    .unwrap();
    message.exchange = String::new();
    message.routing_key = "inventory.dlq".into();
    message.attempt = 8;
    let failed_at = Utc::now() - chrono::Duration::minutes(failed_minutes_ago);
    message.headers = BTreeMap::from([
        (
            "traceparent".to_owned(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
        ),
        ("x-failure-reason".to_owned(), reason.to_owned()),
        ("x-exception-type".to_owned(), "test::Boom".to_owned()),
        ("x-exception-message".to_owned(), "boom".to_owned()),
        ("x-failed-service".to_owned(), "inventory".to_owned()),
        ("x-failed-at".to_owned(), failed_at.to_rfc3339()),
        ("x-original-queue".to_owned(), "inventory".to_owned()),
        (
            "x-original-routing-key".to_owned(),
            "order.placed".to_owned(),
        ),
        ("x-original-exchange".to_owned(), "events".to_owned()),
    ]);
    message
}

async fn broker_with_dead_letters(letters: &[OutgoingMessage]) -> TestBroker {
    let broker = TestBroker::create().await;
    let publisher = ConfirmedPublisher::open(
        &broker.settings("test"),
        &contracts::topology(),
        &Shutdown::new(),
    )
    .await
    .unwrap();
    for letter in letters {
        assert!(publisher.publish(letter).await.unwrap().is_confirmed());
    }
    publisher.close().await;
    broker
}

#[tokio::test]
async fn a_replay_keeps_the_id_and_trace_resets_the_attempt_and_records_itself() {
    let letter = dead_letter("retries-exhausted", 5);
    let broker = broker_with_dead_letters(std::slice::from_ref(&letter)).await;
    let run = msgkit(&broker, &["dlq", "replay", "--queue", "inventory.dlq"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("replayed 1 message(s)"),
        "{}",
        run.stdout
    );

    let connection = broker.connect().await;
    let channel = connection.create_channel().await.unwrap();
    let got = channel
        .basic_get("inventory".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the message is back in the consumer's own work queue");
    let props = &got.delivery.properties;
    assert_eq!(
        props.message_id().as_ref().unwrap().as_str(),
        letter.message_id
    );
    assert_eq!(props.kind().as_ref().unwrap().as_str(), "order.placed");
    assert_eq!(
        header_str(props, "traceparent"),
        letter.headers.get("traceparent").map(String::as_str)
    );
    assert_eq!(header_i64(props, "x-attempt"), Some(1));
    assert_eq!(header_i64(props, "x-replay-count"), Some(1));
    assert!(header_str(props, "x-replayed-at").is_some());
    assert!(header_str(props, "x-failure-reason").is_none());
    assert_eq!(
        header_str(props, "x-original-routing-key"),
        Some("order.placed")
    );
    assert_eq!(broker.queue_depth("inventory.dlq").await, Some(0));
    for other in ["payment", "order", "notify"] {
        assert_eq!(
            broker.queue_depth(other).await,
            Some(0),
            "no copy reached {other}"
        );
    }
}

#[tokio::test]
async fn filters_choose_what_is_replayed_and_what_stays() {
    let old = dead_letter("retries-exhausted", 120);
    let recent = dead_letter("retries-exhausted", 1);
    let poison = dead_letter("poison", 120);
    let broker = broker_with_dead_letters(&[old.clone(), recent.clone(), poison.clone()]).await;

    let run = msgkit(
        &broker,
        &[
            "dlq",
            "replay",
            "--queue",
            "inventory.dlq",
            "--fingerprint",
            "retries-exhausted/test::Boom@inventory",
            "--older-than",
            "1h",
            "--json",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["count"], 1);
    assert_eq!(report["messages"][0]["message_id"], old.message_id.as_str());
    wait_depth(&broker, "inventory.dlq", 2).await;
    wait_depth(&broker, "inventory", 1).await;
}

#[tokio::test]
async fn purge_needs_confirmation_and_reports_what_it_removed() {
    let broker = broker_with_dead_letters(&[
        dead_letter("poison", 3),
        dead_letter("poison", 2),
        dead_letter("retries-exhausted", 1),
    ])
    .await;
    let refused = msgkit(&broker, &["dlq", "purge", "--queue", "inventory.dlq"]).await;
    assert_eq!(refused.code, 64);
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    wait_depth(&broker, "inventory.dlq", 3).await;

    let run = msgkit(
        &broker,
        &[
            "dlq",
            "purge",
            "--queue",
            "inventory.dlq",
            "--fingerprint",
            "poison/test::Boom@inventory",
            "--yes",
            "--json",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["count"], 2);
    wait_depth(&broker, "inventory.dlq", 1).await;
}

#[tokio::test]
async fn errors_are_clear_and_have_distinct_exit_codes() {
    let broker = broker_with_dead_letters(&[]).await;
    let unknown = msgkit(&broker, &["dlq", "replay", "--queue", "nothing.dlq"]).await;
    assert_eq!(unknown.code, 66);
    assert!(
        unknown
            .stderr
            .contains("no dead-letter queue \"nothing.dlq\""),
        "{}",
        unknown.stderr
    );

    let bad_filter = msgkit(&broker, &["dlq", "replay", "--older-than", "soon"]).await;
    assert_eq!(bad_filter.code, 64, "{}", bad_filter.stderr);

    let missing = msgkit(&broker, &["dlq", "show", "no-such-id"]).await;
    assert_eq!(missing.code, 66, "{}", missing.stderr);

    let unreachable = tokio::process::Command::new(env!("CARGO_BIN_EXE_msgkit"))
        .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env("RABBITMQ_MANAGEMENT_URL", "http://127.0.0.1:1")
        .args(["dlq", "list"])
        .output()
        .await
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(69));
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(
        stderr.contains("cannot connect to RabbitMQ at amqp://guest:***@127.0.0.1:1"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("guest:guest"),
        "no credentials in errors: {stderr}"
    );
}

#[tokio::test]
async fn the_cli_reaches_the_broker_over_tls_verified_against_the_configured_ca() {
    let broker = TestBroker::create().await;
    let ca = msgkit::testing::tls::ca_file();
    let other = msgkit::testing::tls::other_ca_file();
    let list = |ca: Option<std::path::PathBuf>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_msgkit"));
        command
            .env("AMQP_URL", broker.amqps_url())
            .args(["dlq", "list", "--json"]);
        if let Some(ca) = ca {
            command.env("AMQP_TLS_CA_CERT_FILE", ca);
        }
        async move {
            let output = command.output().await.unwrap();
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }
    };
    let (code, stderr) = list(Some(ca)).await;
    assert_eq!(code, Some(0), "{stderr}");

    let (code, stderr) = list(None).await;
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("AMQP_TLS_CA_CERT_FILE"), "{stderr}");

    let (code, stderr) = list(Some(other)).await;
    assert_eq!(code, Some(69), "{stderr}");
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
    assert!(!stderr.contains("guest:guest"), "{stderr}");
}
