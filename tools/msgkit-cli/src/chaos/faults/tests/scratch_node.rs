//! A standalone RabbitMQ node of one test's own, started like the nodes of
//! `scripts/rabbitmq-cluster.sh` (a plain `rabbitmq-server -detached` as the rabbitmq user,
//! with the main node's Erlang cookie) but on ports of its own, stopped and its data deleted
//! when dropped. Needs root and RabbitMQ from the Debian package.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

const RABBIT_BIN: &str = "/usr/lib/rabbitmq/bin";
const RABBIT_HOME: &str = "/var/lib/rabbitmq";

/// A running node `msgkitfaultsN@localhost`: AMQP on 5700+N, management on 15700+N, Erlang
/// distribution on 25700+N (clear of the main node's 5672/15672/15692/25672 and the cluster's
/// 568N/1568N/2568N).
pub struct ScratchNode {
    pub name: String,
    pub amqp_port: u16,
    pub management_port: u16,
    dir: PathBuf,
}

impl ScratchNode {
    /// Start node `index` (1..=9) and wait until its management API answers.
    pub async fn start(index: u16) -> Self {
        assert!((1..=9).contains(&index), "index {index} out of 1..=9");
        let node = Self {
            name: format!("msgkitfaults{index}@localhost"),
            amqp_port: 5700 + index,
            management_port: 15700 + index,
            dir: PathBuf::from(format!("/var/tmp/msgkit-faults-node{index}")),
        };
        // Left over from an aborted run: stop it and start clean (a CLI call, seconds, only
        // when a run left its directory behind).
        if node.dir.exists() {
            node.stop();
        }
        node.write_config();
        let dir = node.dir.display().to_string();
        let status = Command::new("runuser")
            .args(["-u", "rabbitmq", "--", "env"])
            .arg(format!("HOME={RABBIT_HOME}"))
            .arg(format!("RABBITMQ_NODENAME={}", node.name))
            .arg(format!("RABBITMQ_NODE_PORT={}", node.amqp_port))
            .arg(format!("RABBITMQ_DIST_PORT={}", 25700 + index))
            .arg(format!("RABBITMQ_CONF_ENV_FILE={dir}/rabbitmq-env.conf"))
            .arg(format!("RABBITMQ_CONFIG_FILE={dir}/rabbitmq.conf"))
            .arg(format!(
                "RABBITMQ_ADVANCED_CONFIG_FILE={dir}/advanced.config"
            ))
            .arg(format!(
                "RABBITMQ_ENABLED_PLUGINS_FILE={dir}/enabled_plugins"
            ))
            .arg(format!("RABBITMQ_MNESIA_BASE={dir}/mnesia"))
            .arg(format!("RABBITMQ_LOG_BASE={dir}/log"))
            .arg(format!("RABBITMQ_PID_FILE={dir}/pid"))
            .arg(format!("{RABBIT_BIN}/rabbitmq-server"))
            .arg("-detached")
            .current_dir(&node.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run rabbitmq-server (needs root and the Debian package)");
        assert!(status.success(), "rabbitmq-server -detached: {status}");
        let client = reqwest::Client::new();
        let overview = format!("http://127.0.0.1:{}/api/overview", node.management_port);
        msgkit::testing::wait_until_async(
            &format!("{} to answer on {overview}", node.name),
            Duration::from_secs(120),
            || async {
                let response = client
                    .get(&overview)
                    .basic_auth("guest", Some("guest"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .ok()?;
                response.status().is_success().then_some(())
            },
        )
        .await;
        node
    }

    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    fn write_config(&self) {
        for sub in ["", "mnesia", "log"] {
            std::fs::create_dir_all(self.dir.join(sub)).unwrap();
        }
        let files = [
            (
                "rabbitmq-env.conf",
                "ERL_EPMD_ADDRESS=127.0.0.1\n\
                 export ERL_FLAGS=\"-kernel inet_dist_use_interface {127,0,0,1}\"\n"
                    .to_owned(),
            ),
            (
                "rabbitmq.conf",
                format!(
                    "listeners.tcp.local = 127.0.0.1:{}\n\
                     management.tcp.ip = 127.0.0.1\n\
                     management.tcp.port = {}\n\
                     collect_statistics_interval = 1000\n",
                    self.amqp_port, self.management_port
                ),
            ),
            ("enabled_plugins", "[rabbitmq_management].\n".to_owned()),
        ];
        for (name, text) in files {
            std::fs::write(self.dir.join(name), text).unwrap();
        }
        let owned = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(owned.success(), "chown {}", self.dir.display());
    }

    /// Stop the node and delete its data. Its data is thrown away, so a SIGKILL of its VM
    /// (from its pid file) will do, and saves the seconds of a graceful `rabbitmqctl shutdown`,
    /// which is only the fallback when there is no pid of this node's to kill.
    fn stop(&self) {
        let pid = std::fs::read_to_string(self.dir.join("pid"))
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok());
        // Only if that pid is still this node's VM (a pid may be reused, even by another node).
        let ours = format!("RABBITMQ_NODENAME={}", self.name);
        let killed = pid.is_some_and(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == ours.as_bytes()))
                && Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status()
                    .is_ok_and(|status| status.success())
        });
        if !killed {
            let _ = Command::new("timeout")
                .args(["60", "rabbitmqctl", "-q", "-n", &self.name, "shutdown"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for ScratchNode {
    fn drop(&mut self) {
        self.stop();
    }
}
