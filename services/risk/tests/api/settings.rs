//! The risk service's own consumer defaults.

use msgkit::testing::{TestBroker, TestDatabase, service_settings};
use risk::startup::{KEY_STATE_LIMIT, NAME, build};

#[tokio::test]
async fn a_users_state_may_grow_beyond_the_kits_default_entry_limit() {
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let service = build(service_settings(NAME, NAME, &db, broker.settings(NAME)))
        .await
        .unwrap();
    let [consumer] = service.consumers() else {
        panic!("one consumer");
    };
    assert_eq!(consumer.queue, "risk");
    assert_eq!(consumer.state_entry_limit, KEY_STATE_LIMIT);
}
