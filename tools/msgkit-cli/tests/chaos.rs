//! The chaos runner can fail: against deliberately broken consumers it reports what went
//! wrong and exits 1. Each proof is a short scenario of the example saga with one defect:
//! - a consumer that acks before committing, SIGKILLed mid-handling: orders are lost (the
//!   saga's SQL invariants);
//! - a consumer that never handles one event type it is bound to (the kit's invariant, from
//!   the firehose and the inboxes, names the type);
//! - a consumer that applies an effect outside its transaction, so its retry applies it again
//!   (the saga's stock invariant).
//!
//! These runs do not restart the shared broker or database, so they run beside other tests.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use serde_json::Value;

/// Run `scenario`, expect it to fail, and return its violations.
async fn violations_of(scenario: &str) -> Vec<String> {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_msgkit"))
        .args(["chaos", "--scenario", scenario, "--json"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "the run must fail:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["passed"], false);
    report["violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_chaos_runner_catches_a_consumer_that_acks_before_committing() {
    let violations = violations_of("broken-ack").await;
    assert!(
        violations.iter().any(|v| v.contains("(lost)")),
        "the lost orders are named: {violations:?}"
    );
}

#[tokio::test]
async fn the_kit_invariant_catches_a_consumer_that_never_handles_one_event_type() {
    let violations = violations_of("broken-unhandled-type").await;
    assert!(
        violations
            .iter()
            .any(|v| v.starts_with("kit:") && v.contains("order.rejected") && v.contains("notify")),
        "the kit's invariant names the type and the queue: {violations:?}"
    );
}

#[tokio::test]
async fn the_saga_invariants_catch_an_effect_applied_outside_the_transaction() {
    let violations = violations_of("broken-effect-outside-transaction").await;
    assert!(
        violations
            .iter()
            .any(|v| v.starts_with("stock of ") && v.contains("applied twice")),
        "the stock taken twice is reported: {violations:?}"
    );
}
