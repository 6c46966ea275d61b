//! The three-node cluster of `scripts/rabbitmq-cluster.sh`: starting and stopping it through
//! the script, its management API (any node that answers), the run's vhost, and killing a node.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::process::Command;

use crate::CliError;

/// One node as the script sets it up.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub amqp_port: u16,
    pub management_port: u16,
}

/// The cluster: its nodes, the script that runs them, and a management API client.
pub struct Cluster {
    script: PathBuf,
    pub nodes: Vec<Node>,
    http: reqwest::Client,
    /// Nodes killed by the run: their API is not asked any more.
    dead: Vec<String>,
}

/// A quorum queue as the management API shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct QueueView {
    pub name: String,
    pub kind: String,
    pub leader: Option<String>,
    pub members: Vec<String>,
    pub online: Vec<String>,
    pub messages: u64,
}

impl Cluster {
    pub fn new(script: PathBuf) -> Self {
        let nodes = (1..=3u16)
            .map(|n| Node {
                name: format!("msgkit{n}@localhost"),
                amqp_port: 5680 + n,
                management_port: 15680 + n,
            })
            .collect();
        Self {
            script,
            nodes,
            http: reqwest::Client::new(),
            dead: Vec::new(),
        }
    }

    /// `scripts/rabbitmq-cluster.sh`, from the working directory or the repository.
    pub fn find_script(explicit: Option<&Path>) -> Result<PathBuf, CliError> {
        let candidates: Vec<PathBuf> = match explicit {
            Some(path) => vec![path.to_path_buf()],
            None => vec![
                PathBuf::from("scripts/rabbitmq-cluster.sh"),
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/rabbitmq-cluster.sh"),
            ],
        };
        candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
            CliError::NotFound(
                "no scripts/rabbitmq-cluster.sh (run from the repository or pass --script)"
                    .to_owned(),
            )
        })
    }

    /// Run the script with `args`; its output goes to our stderr.
    pub async fn script(&self, args: &[&str], limit: Duration) -> Result<String, CliError> {
        let child = Command::new(&self.script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                CliError::Other(anyhow::anyhow!("running {}: {e}", self.script.display()))
            })?;
        let output = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .map_err(|_| {
                CliError::Unavailable(format!(
                    "{} {} did not finish within {limit:?}",
                    self.script.display(),
                    args.join(" ")
                ))
            })?
            .map_err(|e| CliError::Other(e.into()))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            eprint!("{stdout}");
            Err(CliError::Unavailable(format!(
                "{} {} failed ({})",
                self.script.display(),
                args.join(" "),
                output.status
            )))
        }
    }

    /// The AMQP URLs of `vhost`, one per node, comma-separated: what a service gets in
    /// `AMQP_URL`.
    pub fn amqp_url_list(&self, vhost: &str) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "amqp://guest:guest@127.0.0.1:{}/{vhost}?heartbeat=5",
                    n.amqp_port
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A management API call on the first live node that answers.
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        self.api_within(method, path, body, Duration::from_secs(10))
            .await
    }

    /// [`Cluster::api`] with a time limit per node.
    pub async fn api_within(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        limit: Duration,
    ) -> Result<Value, String> {
        let mut last = String::from("no live node");
        for node in self.nodes.iter().filter(|n| !self.dead.contains(&n.name)) {
            let mut request = self
                .http
                .request(
                    method.clone(),
                    format!("http://127.0.0.1:{}/api/{path}", node.management_port),
                )
                .basic_auth("guest", Some("guest"))
                .timeout(limit);
            if let Some(body) = &body {
                request = request.json(body);
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    if status.is_success() {
                        return Ok(if text.is_empty() {
                            Value::Null
                        } else {
                            serde_json::from_str(&text).map_err(|e| e.to_string())?
                        });
                    }
                    last = format!("{status} from {}: {text}", node.name);
                    // A client error is the cluster's answer; a server error may be the node's
                    // own trouble (a peer just died): ask the next one.
                    if status.is_client_error() {
                        return Err(last);
                    }
                }
                Err(error) => last = format!("{}: {error}", node.name),
            }
        }
        Err(last)
    }

    /// Create `vhost` with full rights for guest.
    pub async fn create_vhost(&self, vhost: &str) -> Result<(), CliError> {
        let fail = |e: String| CliError::Unavailable(format!("creating vhost {vhost}: {e}"));
        self.api(reqwest::Method::PUT, &format!("vhosts/{vhost}"), None)
            .await
            .map_err(fail)?;
        self.api(
            reqwest::Method::PUT,
            &format!("permissions/{vhost}/guest"),
            Some(json!({"configure": ".*", "write": ".*", "read": ".*"})),
        )
        .await
        .map_err(fail)?;
        Ok(())
    }

    /// Delete `vhost`: first shut it to new connections and let declarations in flight end
    /// (deleting an at-least-once dead-lettering quorum queue while it starts can break the
    /// node's dead-letter supervisor, rabbitmq-server#16652; see `msgkit::testing`). With every
    /// member up this takes a second or two; with one down, about 5 s per quorum queue.
    pub async fn delete_vhost(&self, vhost: &str) -> Result<(), String> {
        let _ = self
            .api(
                reqwest::Method::DELETE,
                &format!("permissions/{vhost}/guest"),
                None,
            )
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.api_within(
            reqwest::Method::DELETE,
            &format!("vhosts/{vhost}"),
            None,
            Duration::from_secs(180),
        )
        .await
        .map(|_| ())
    }

    /// One queue of `vhost`, or `None` while it does not exist (or no node answers).
    pub async fn queue(&self, vhost: &str, queue: &str) -> Option<QueueView> {
        let value = self
            .api(
                reqwest::Method::GET,
                &format!("queues/{vhost}/{queue}"),
                None,
            )
            .await
            .ok()?;
        Some(queue_view(&value))
    }

    /// Every queue of `vhost`.
    pub async fn queues(&self, vhost: &str) -> Result<Vec<QueueView>, String> {
        let value = self
            .api(reqwest::Method::GET, &format!("queues/{vhost}"), None)
            .await?;
        Ok(value
            .as_array()
            .map(|list| list.iter().map(queue_view).collect())
            .unwrap_or_default())
    }

    /// The OS pid of `node`'s VM, from the script (its pid file, or the node itself).
    pub async fn pid(&self, node: &str) -> Result<u32, CliError> {
        let out = self.script(&["pid", node], Duration::from_secs(30)).await?;
        out.trim()
            .parse()
            .map_err(|_| CliError::Other(anyhow::anyhow!("no pid for {node}: {:?}", out.trim())))
    }

    /// SIGKILL `pid`, the VM of `node`, and stop asking that node's API.
    pub async fn kill(&mut self, node: &str, pid: u32) -> Result<(), CliError> {
        let status = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .await
            .map_err(|e| CliError::Other(e.into()))?;
        if !status.success() {
            return Err(CliError::Other(anyhow::anyhow!(
                "kill -KILL {pid} ({node}) failed: {status}"
            )));
        }
        self.dead.push(node.to_owned());
        Ok(())
    }

    /// The killed nodes are back (after `up`): ask their API again.
    pub fn revived(&mut self) {
        self.dead.clear();
    }

    /// Wait until `check` holds on a queue of `vhost`, at most `limit`.
    pub async fn wait_queue<F>(
        &self,
        vhost: &str,
        queue: &str,
        limit: Duration,
        check: F,
    ) -> Result<QueueView, Option<QueueView>>
    where
        F: Fn(&QueueView) -> bool,
    {
        let started = Instant::now();
        let mut last = None;
        while started.elapsed() < limit {
            if let Some(view) = self.queue(vhost, queue).await {
                if check(&view) {
                    return Ok(view);
                }
                last = Some(view);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(last)
    }
}

fn names(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn queue_view(value: &Value) -> QueueView {
    QueueView {
        name: value["name"].as_str().unwrap_or_default().to_owned(),
        kind: value["type"].as_str().unwrap_or_default().to_owned(),
        leader: value["leader"].as_str().map(str::to_owned),
        members: names(&value["members"]),
        online: names(&value["online"]),
        messages: value["messages"].as_u64().unwrap_or(0),
    }
}
