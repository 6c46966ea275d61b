//! A RabbitMQ node killed in the three-node cluster of `scripts/rabbitmq-cluster.sh`: the
//! leader of a quorum queue gets SIGKILL (no goodbye to its peers or clients), stays down for
//! a while, and is started again; the fault ends when the queue has every member online.

use std::time::{Duration, Instant};

use crate::cluster::nodes::Cluster;

use super::FaultError;

/// How long the other members may take to elect a new leader.
const ELECTION_LIMIT: Duration = Duration::from_secs(60);
/// How long the script may take to start the node again.
const RESTART_LIMIT: Duration = Duration::from_secs(300);
/// How long the queue may take to have the restarted member online again.
const REJOIN_LIMIT: Duration = Duration::from_secs(120);

/// What [`kill_leader`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeKill {
    /// The node killed, e.g. `msgkit2@localhost`.
    pub node: String,
    /// Its VM's OS pid.
    pub pid: u32,
    /// The queue's leader after the kill, if one was elected in time.
    pub new_leader: Option<String>,
    /// From the kill until the new leader was seen.
    pub elected_after: Option<Duration>,
    /// From the kill until the queue had every member online again.
    pub recovered_after: Duration,
}

/// SIGKILL the node leading `queue` of `vhost`, keep it down for `down_for`, start it again and
/// wait until the queue has all its members online. The time down is the fault itself, not a
/// synchronisation. A new leader is waited for (at most [`ELECTION_LIMIT`]) within the time
/// down; not seeing one is reported in [`NodeKill::new_leader`], not an error, because the node
/// is restarted either way.
///
/// If the future is dropped after the kill, the node stays down until the next
/// `scripts/rabbitmq-cluster.sh up` (which the cluster-test runs at its end).
pub async fn kill_leader(
    cluster: &mut Cluster,
    vhost: &str,
    queue: &str,
    down_for: Duration,
) -> Result<NodeKill, FaultError> {
    let view = cluster
        .queue(vhost, queue)
        .await
        .ok_or_else(|| FaultError::Target(format!("no queue {queue} in vhost {vhost}")))?;
    let node = view
        .leader
        .ok_or_else(|| FaultError::Target(format!("queue {queue} has no leader to kill")))?;
    let members = view.members;
    let pid = cluster
        .pid(&node)
        .await
        .map_err(|e| FaultError::Target(format!("the pid of {node}: {e}")))?;
    cluster
        .kill(&node, pid)
        .await
        .map_err(|e| FaultError::Target(e.to_string()))?;
    let killed = Instant::now();

    let election_limit = ELECTION_LIMIT.min(down_for.max(Duration::from_secs(1)));
    let elected = cluster
        .wait_queue(vhost, queue, election_limit, |q| {
            q.leader
                .as_ref()
                .is_some_and(|l| *l != node && q.online.contains(l))
        })
        .await
        .ok();
    let elected_after = elected.as_ref().map(|_| killed.elapsed());
    tokio::time::sleep(down_for.saturating_sub(killed.elapsed())).await;

    cluster
        .script(&["up"], RESTART_LIMIT)
        .await
        .map_err(|e| FaultError::Target(format!("restarting {node}: {e}")))?;
    cluster.revived();
    cluster
        .wait_queue(vhost, queue, REJOIN_LIMIT, |q| {
            members.iter().all(|m| q.online.contains(m))
        })
        .await
        .map_err(|last| FaultError::Timeout {
            what: format!(
                "every member of {queue} online after restarting {node} (last: {last:?})"
            ),
            limit: REJOIN_LIMIT,
        })?;
    Ok(NodeKill {
        node,
        pid,
        new_leader: elected.and_then(|q| q.leader),
        elected_after,
        recovered_after: killed.elapsed(),
    })
}
