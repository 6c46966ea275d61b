//! The operator's view of a dead letter in the RabbitMQ management UI, checked in headless
//! Chromium (`scripts/ui-deps.sh` installs it and playwright-core; `make test` runs it first).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::PathBuf;

use msgkit::testing::wait_until_async;
use saga::{DEADLINE, Saga};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test]
async fn an_operator_reads_the_failure_headers_of_a_dead_letter_in_the_management_ui() {
    let saga = Saga::start(&[
        ("INVENTORY_FAULT_TRANSIENT_RATE", "1.0"),
        ("RETRY_INITIAL_DELAY_MS", "30"),
        ("RETRY_MAX_DELAY_MS", "100"),
        ("RETRY_MAX_ATTEMPTS", "3"),
    ])
    .await;
    saga.place_order("c-1", &[("SKU-1", 1)]).await;
    wait_until_async("a dead letter in inventory.dlq", DEADLINE, || async {
        (saga.broker.queue_depth("inventory.dlq").await == Some(1)).then_some(())
    })
    .await;

    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace().join("target"));
    std::fs::create_dir_all(target.join("ui")).unwrap();
    let screenshot = target.join("ui/management-ui-dlq.png");
    let _ = std::fs::remove_file(&screenshot);
    let script = workspace().join("tools/ui-screenshot/dlq-screenshot.mjs");
    let output = tokio::process::Command::new("node")
        .arg(&script)
        .env("VHOST", saga.broker.vhost())
        .env("QUEUE", "inventory.dlq")
        .env("OUT", &screenshot)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run node ({e}); run scripts/ui-deps.sh"));
    assert!(
        output.status.success(),
        "the browser check failed (run scripts/ui-deps.sh if Chromium or playwright-core is missing):\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let png = std::fs::read(&screenshot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG was written");
    assert!(
        png.len() > 10_000,
        "the screenshot has content ({} bytes)",
        png.len()
    );
    // The message was only looked at: it is still in the DLQ.
    assert_eq!(saga.broker.queue_depth("inventory.dlq").await, Some(1));
    if std::env::var("MSGKIT_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        std::fs::copy(
            &screenshot,
            workspace().join("docs/images/management-ui-dlq.png"),
        )
        .unwrap();
    }
    saga.stop().await;
}
