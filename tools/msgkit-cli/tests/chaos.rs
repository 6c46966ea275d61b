//! The chaos runner can fail: against a deliberately broken consumer it reports lost orders.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use serde_json::Value;

#[tokio::test]
async fn the_chaos_runner_catches_a_consumer_that_acks_before_committing() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_msgkit"))
        .args(["chaos", "--scenario", "broken-ack", "--json"])
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
    let violations: Vec<&str> = report["violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        violations.iter().any(|v| v.contains("(lost)")),
        "the lost orders are named: {violations:?}"
    );
}
