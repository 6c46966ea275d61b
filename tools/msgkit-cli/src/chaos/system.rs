//! The system under test, as the scenario declares it: each replica of each service a process
//! of its own that reaches the broker and the database through its own TCP proxies, so that
//! partitions, latency and bandwidth caps act on one service's links and nothing else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use msgkit::testing::{ProxyControl, TcpProxy, TestBroker, TestDatabase};
use sqlx::ConnectOptions;

use super::scenario::{Link, Scenario, ServiceSpec};
use super::services::{ServiceProcess, free_port, wait_until_ready};
use crate::CliError;

/// Settings every service gets unless the scenario says otherwise: fast reconnects and retries
/// (a run is minutes long), and a short heartbeat so the broker notices a paused process.
const KIT_DEFAULTS: [(&str, &str); 7] = [
    ("OUTBOX_POLL_INTERVAL_MS", "250"),
    ("AMQP_RECONNECT_INITIAL_MS", "100"),
    ("AMQP_RECONNECT_MAX_MS", "1000"),
    ("AMQP_HEARTBEAT_SECS", "2"),
    ("RETRY_INITIAL_DELAY_MS", "200"),
    ("RETRY_MAX_DELAY_MS", "3000"),
    ("RETRY_MAX_ATTEMPTS", "10"),
];

/// How long every service together may take to become ready.
const READY_WITHIN: Duration = Duration::from_secs(90);

/// One replica: its process and the proxies of its two links.
pub struct Replica {
    pub process: ServiceProcess,
    pub metrics_url: String,
    broker: TcpProxy,
    database: TcpProxy,
    ready_url: String,
}

/// A declared service and its replicas.
pub struct Service {
    pub spec: ServiceSpec,
    pub replicas: Vec<Replica>,
}

impl Service {
    /// The proxies of every replica's `link`.
    pub fn links(&self, link: Link) -> Vec<ProxyControl> {
        self.replicas
            .iter()
            .map(|r| match link {
                Link::Broker => r.broker.control(),
                Link::Database => r.database.control(),
            })
            .collect()
    }

    /// The base URL of its first replica (where load goes).
    pub fn base_url(&self) -> String {
        self.replicas
            .first()
            .map(|r| r.process.base_url())
            .unwrap_or_default()
    }
}

/// Every service of the scenario, started and ready.
pub struct System {
    pub services: Vec<Service>,
}

impl System {
    /// Start `scenario`'s services on `db` and `broker` and wait until each replica is ready.
    pub async fn start(
        scenario: &Scenario,
        db: &TestDatabase,
        broker: &TestBroker,
        run_dir: &Path,
    ) -> Result<Self, CliError> {
        let bin_dir = std::env::current_exe()
            .map_err(|e| CliError::Other(e.into()))?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let database_addr = {
            let options = db.options();
            format!("{}:{}", options.get_host(), options.get_port())
        };
        let mut services = Vec::new();
        for spec in &scenario.services {
            let mut replicas = Vec::new();
            for index in 0..spec.replicas {
                let broker_proxy = TcpProxy::start("127.0.0.1:5672")
                    .await
                    .map_err(|e| CliError::Other(anyhow::anyhow!("a broker proxy: {e}")))?;
                let database_proxy = TcpProxy::start(&database_addr)
                    .await
                    .map_err(|e| CliError::Other(anyhow::anyhow!("a database proxy: {e}")))?;
                let port = free_port()?;
                let (host, proxy_port) = split_addr(&database_proxy.addr())?;
                let database_url = db
                    .options()
                    .host(&host)
                    .port(proxy_port)
                    .to_url_lossy()
                    .to_string();
                let amqp_url = broker.amqp_url_via(&broker_proxy.addr());
                let fill = |text: &str| {
                    text.replace("{port}", &port.to_string())
                        .replace("{database_url}", &database_url)
                        .replace("{amqp_url}", &amqp_url)
                };
                let mut env: BTreeMap<String, String> = KIT_DEFAULTS
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect();
                env.insert("DATABASE_URL".to_owned(), database_url.clone());
                env.insert("AMQP_URL".to_owned(), amqp_url.clone());
                env.insert(
                    "RUST_LOG".to_owned(),
                    "info,sqlx=warn,lapin=error".to_owned(),
                );
                for (name, value) in scenario.env.iter().chain(&spec.env) {
                    env.insert(name.clone(), fill(value));
                }
                let name = if spec.replicas == 1 {
                    spec.name.clone()
                } else {
                    format!("{}-{index}", spec.name)
                };
                let log = run_dir.join(format!("{name}.log"));
                let mut process = program(spec, &bin_dir).map(|(program, args)| {
                    ServiceProcess::new(name, program, env, log, port).with_args(args)
                })?;
                process.start()?;
                let default_url = |path: &str| format!("http://127.0.0.1:{port}{path}");
                replicas.push(Replica {
                    process,
                    metrics_url: spec
                        .metrics_url
                        .as_deref()
                        .map_or_else(|| default_url("/metrics"), fill),
                    ready_url: spec
                        .ready_url
                        .as_deref()
                        .map_or_else(|| default_url("/readyz"), fill),
                    broker: broker_proxy,
                    database: database_proxy,
                });
            }
            services.push(Service {
                spec: spec.clone(),
                replicas,
            });
        }
        let system = Self { services };
        system.wait_until_ready().await?;
        eprintln!("chaos: all services ready; logs in {}", run_dir.display());
        Ok(system)
    }

    async fn wait_until_ready(&self) -> Result<(), CliError> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + READY_WITHIN;
        for replica in self.services.iter().flat_map(|s| &s.replicas) {
            wait_until_ready(&client, &replica.process, &replica.ready_url, deadline).await?;
        }
        Ok(())
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Result<&Service, CliError> {
        self.services
            .iter()
            .find(|s| s.spec.name == name)
            .ok_or_else(|| CliError::Usage(format!("unknown service {name}")))
    }

    /// The service named `name`, to act on its processes.
    pub fn service_mut(&mut self, name: &str) -> Result<&mut Service, CliError> {
        self.services
            .iter_mut()
            .find(|s| s.spec.name == name)
            .ok_or_else(|| CliError::Usage(format!("unknown service {name}")))
    }

    /// (name, metrics URL) of every replica.
    pub fn metrics_endpoints(&self) -> Vec<(String, String)> {
        self.services
            .iter()
            .flat_map(|s| &s.replicas)
            .map(|r| (r.process.name.clone(), r.metrics_url.clone()))
            .collect()
    }

    /// SIGTERM every process (graceful shutdown) and close the proxies: each process's exit
    /// code, `None` when it had to be killed.
    pub async fn stop(self) -> BTreeMap<String, Option<i32>> {
        let mut exits = BTreeMap::new();
        for service in self.services {
            for mut replica in service.replicas {
                let code = replica.process.stop(Duration::from_secs(20)).await;
                exits.insert(replica.process.name.clone(), code);
                replica.broker.shutdown().await;
                replica.database.shutdown().await;
            }
        }
        exits
    }
}

/// The program and arguments of `spec`.
fn program(spec: &ServiceSpec, bin_dir: &Path) -> Result<(PathBuf, Vec<String>), CliError> {
    if let Some(binary) = &spec.binary {
        let path = bin_dir.join(binary);
        if !path.is_file() {
            return Err(CliError::NotFound(format!(
                "no {} binary next to msgkit (build them: cargo build --workspace --bins)",
                path.display()
            )));
        }
        return Ok((path, Vec::new()));
    }
    let (program, args) = spec
        .command
        .split_first()
        .ok_or_else(|| CliError::Usage(format!("service {}: an empty command", spec.name)))?;
    Ok((PathBuf::from(program), args.to_vec()))
}

fn split_addr(addr: &str) -> Result<(String, u16), CliError> {
    addr.rsplit_once(':')
        .and_then(|(host, port)| Some((host.to_owned(), port.parse().ok()?)))
        .ok_or_else(|| CliError::Other(anyhow::anyhow!("not an address: {addr}")))
}
