//! A resource alarm blocks confirmed publishes while it is on and lets them through once the
//! guard restores the node's setting.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

use msgkit::testing::wait_until_async;

use super::scratch_node::ScratchNode;
use crate::chaos::faults::alarm::{AlarmKind, BrokerNode, raise_alarm};

/// The scratch node refreshes its statistics every second (5 s by default); a deadline with room.
const STATS: Duration = Duration::from_secs(30);

/// Both alarms and the dropped guard on one scratch node, one after the other: a node's boot
/// is most of the time here, and three nodes booting at once slow every other test of the run.
#[tokio::test]
async fn each_alarm_blocks_confirmed_publishes_until_restored_and_a_dropped_guard_restores_too() {
    let node = ScratchNode::start(1).await;
    let target = BrokerNode::local(&node.name, node.management_port);
    alarm_blocks_publishes_until_restored(&node, &target, AlarmKind::Memory, &["0.4"]).await;
    // RabbitMQ's default disk_free_limit is 50 MB.
    alarm_blocks_publishes_until_restored(&node, &target, AlarmKind::Disk, &["50000000"]).await;
    a_dropped_guard_still_restores_the_setting(&target).await;
}

async fn alarm_blocks_publishes_until_restored(
    node: &ScratchNode,
    target: &BrokerNode,
    kind: AlarmKind,
    default: &[&str],
) {
    let connection = Connection::connect(&node.amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let queue = "faults-probe";
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    wait_until_async("the node's statistics, without alarm", STATS, || async {
        (target.alarm_shown(kind).await.unwrap() == Some(false)).then_some(())
    })
    .await;

    let guard = raise_alarm(target, kind).await.unwrap();
    assert_eq!(guard.previous_setting(), default, "the node's own setting");
    assert_eq!(target.alarm_shown(kind).await.unwrap(), Some(true));
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            b"during the alarm",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    tokio::pin!(confirm);
    // The broker stops reading a publishing connection while an alarm is on.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut confirm)
            .await
            .is_err(),
        "no confirm while the {kind:?} alarm is on"
    );
    msgkit::testing::wait_until(
        "connection.blocked from the broker",
        Duration::from_secs(10),
        || connection.status().blocked(),
    )
    .await;

    guard.restore().await.unwrap();
    assert_eq!(
        target.alarm_shown(kind).await.unwrap(),
        Some(false),
        "alarm cleared"
    );
    let confirmation = tokio::time::timeout(Duration::from_secs(10), confirm)
        .await
        .expect("the confirm arrives after the restore")
        .unwrap();
    assert!(confirmation.is_ack(), "{confirmation:?}");
    msgkit::testing::wait_until(
        "connection.unblocked from the broker",
        Duration::from_secs(10),
        || !connection.status().blocked(),
    )
    .await;
}

async fn a_dropped_guard_still_restores_the_setting(target: &BrokerNode) {
    let guard = raise_alarm(target, AlarmKind::Memory).await.unwrap();
    // As on an error path: the guard goes out of scope without restore().
    drop(guard);
    let cleared = crate::chaos::faults::wait_for(
        "the memory alarm cleared",
        Duration::from_secs(30),
        || async {
            let shown = target.alarm_shown(AlarmKind::Memory).await?;
            Ok((shown == Some(false)).then_some(()))
        },
    )
    .await;
    assert!(cleared.is_ok(), "{cleared:?}");
}

#[test]
fn the_settings_the_node_reports_become_rabbitmqctl_arguments() {
    let memory = |answer: &str| AlarmKind::Memory.parse_setting(answer);
    assert_eq!(memory("0.4\n"), Some(vec!["0.4".to_owned()]));
    assert_eq!(memory("{relative,0.6}"), Some(vec!["0.6".to_owned()]));
    assert_eq!(
        memory("{absolute,1073741824}"),
        Some(vec!["absolute".to_owned(), "1073741824".to_owned()])
    );
    assert_eq!(memory("{error,nope}"), None);
    assert_eq!(
        AlarmKind::Disk.parse_setting("50000000"),
        Some(vec!["50000000".to_owned()])
    );
    assert_eq!(AlarmKind::Disk.parse_setting("50MB"), None);
}
