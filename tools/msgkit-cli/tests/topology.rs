//! `msgkit topology apply` declares the whole topology on a fresh vhost, idempotently.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use msgkit::testing::TestBroker;
use serde_json::Value;

async fn apply(broker: &TestBroker) -> (Option<i32>, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_msgkit"))
        .env("AMQP_URL", broker.amqp_url())
        .env("ARCHIVE_ENABLED", "true")
        .args(["topology", "apply", "--json"])
        .output()
        .await
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn apply_declares_every_queue_its_dead_letter_queue_the_delay_tiers_and_the_archive() {
    let broker = TestBroker::create().await;
    let (code, stdout, stderr) = apply(&broker).await;
    assert_eq!(code, Some(0), "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["archive"], true);
    let queues: Vec<String> = report["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        queues,
        contracts::topology()
            .queues()
            .iter()
            .map(|q| q.name().to_owned())
            .collect::<Vec<_>>()
    );
    let tier = msgkit::topology::delay_tier_name(msgkit::topology::delay_tiers().next().unwrap());
    for queue in queues
        .iter()
        .flat_map(|q| [q.clone(), format!("{q}.dlq")])
        .chain([tier, "events.archive".to_owned()])
    {
        assert!(
            broker.queue_depth(&queue).await.is_some(),
            "{queue} was not declared"
        );
    }
    // Again, as at every deployment: nothing to change, no error.
    let (code, _, stderr) = apply(&broker).await;
    assert_eq!(code, Some(0), "{stderr}");
}
