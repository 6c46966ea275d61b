//! The leader of a quorum queue killed in the three-node cluster, and brought back.

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};

use crate::chaos::faults::node::kill_leader;
use crate::cluster::nodes::Cluster;

#[tokio::test]
#[ignore = "starts the cluster of scripts/rabbitmq-cluster.sh, whose ports (568N, 1568N, 2568N) \
            and data directory are fixed: it cannot run beside `msgkit cluster-test` or another \
            run of this test; run it alone with --ignored"]
async fn the_leader_of_a_quorum_queue_is_killed_and_comes_back_as_a_member() {
    let mut cluster = Cluster::new(Cluster::find_script(None).unwrap());
    cluster
        .script(&["up"], Duration::from_secs(300))
        .await
        .unwrap();
    let vhost = format!("faults-{}", uuid::Uuid::now_v7().simple());
    cluster.create_vhost(&vhost).await.unwrap();
    let url = format!(
        "amqp://guest:guest@127.0.0.1:{}/{vhost}",
        cluster.nodes[0].amqp_port
    );
    let connection = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            "faults-quorum".into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .unwrap();
    let _ = connection.close(200, "declared".into()).await;
    let view = cluster
        .wait_queue(&vhost, "faults-quorum", Duration::from_secs(30), |q| {
            q.leader.is_some() && q.online.len() == 3
        })
        .await
        .expect("a quorum queue with three members online");

    let kill = kill_leader(
        &mut cluster,
        &vhost,
        "faults-quorum",
        Duration::from_secs(5),
    )
    .await
    .unwrap();

    assert_eq!(
        Some(&kill.node),
        view.leader.as_ref(),
        "the leader was killed"
    );
    let new_leader = kill
        .new_leader
        .clone()
        .expect("a new leader within the time down");
    assert_ne!(new_leader, kill.node);
    let after = cluster
        .queue(&vhost, "faults-quorum")
        .await
        .expect("the queue after the restart");
    assert!(after.online.contains(&kill.node), "{after:?}");
    cluster.delete_vhost(&vhost).await.unwrap();
    cluster
        .script(&["down"], Duration::from_secs(300))
        .await
        .unwrap();
}
