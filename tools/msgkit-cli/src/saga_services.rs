//! The four example services (order, inventory, payment, notify) as OS processes with the fast
//! settings of test runs: what `msgkit bench` and `msgkit cluster-test` measure. (`msgkit
//! chaos` starts whatever its scenario file declares instead.)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use msgkit::testing::TestDatabase;
use serde::Deserialize;

use crate::CliError;
use crate::chaos::services::{self, ServiceProcess};

/// The services, in start order.
pub const SERVICES: [&str; 4] = ["order", "inventory", "payment", "notify"];

/// Extra environment for one service.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceOverrides {
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// A run directory for logs and pictures: `target/chaos/<name>-<time>` next to the binaries.
pub(crate) fn run_directory(name: &str) -> Result<std::path::PathBuf, CliError> {
    let exe = std::env::current_exe().map_err(|e| CliError::Other(e.into()))?;
    let base = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("chaos"))
        .unwrap_or_else(|| std::env::temp_dir().join("msgkit-chaos"));
    let dir = base.join(format!("{name}-{}", Utc::now().format("%Y%m%dT%H%M%S")));
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::Other(anyhow::anyhow!("creating {}: {e}", dir.display())))?;
    Ok(dir)
}

/// The environment of a service process in test runs: the run's database and vhost, and
/// reconnects, retries and outbox polls fast enough for a run of minutes.
pub(crate) fn fast_env(database_url: &str, amqp_url: &str) -> BTreeMap<String, String> {
    [
        ("DATABASE_URL", database_url),
        ("AMQP_URL", amqp_url),
        ("OUTBOX_POLL_INTERVAL_MS", "250"),
        ("AMQP_RECONNECT_INITIAL_MS", "100"),
        ("AMQP_RECONNECT_MAX_MS", "1000"),
        ("RETRY_INITIAL_DELAY_MS", "200"),
        ("RETRY_MAX_DELAY_MS", "3000"),
        ("RETRY_MAX_ATTEMPTS", "10"),
        ("RUST_LOG", "info,sqlx=warn,lapin=error"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A binary built in this workspace, next to the running `msgkit`.
pub(crate) fn sibling_binary(name: &str) -> Result<std::path::PathBuf, CliError> {
    let exe = std::env::current_exe().map_err(|e| CliError::Other(e.into()))?;
    let binary = exe.parent().map(|dir| dir.join(name)).unwrap_or_default();
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(CliError::NotFound(format!(
            "no {} binary next to msgkit (build them: cargo build --workspace --bins)",
            binary.display()
        )))
    }
}

/// Start the four service binaries (next to this one) on `db` and `amqp_url` with the chaos
/// runner's fast settings plus `overrides`, and wait until every one is ready.
pub(crate) async fn start_services(
    overrides: &BTreeMap<String, ServiceOverrides>,
    db: &TestDatabase,
    amqp_url: &str,
    run_dir: &std::path::Path,
) -> Result<Vec<ServiceProcess>, CliError> {
    let mut processes = Vec::new();
    for name in SERVICES {
        let binary = sibling_binary(name)?;
        let port = services::free_port()?;
        let mut env = fast_env(&db.url(), amqp_url);
        env.insert("GATEWAY_LATENCY_MS".to_owned(), "5".to_owned());
        env.insert(
            format!("{}_HTTP_ADDR", name.to_ascii_uppercase()),
            format!("127.0.0.1:{port}"),
        );
        if let Some(overrides) = overrides.get(name) {
            env.extend(overrides.env.clone());
        }
        let mut process =
            ServiceProcess::new(name, binary, env, run_dir.join(format!("{name}.log")), port);
        process.start()?;
        processes.push(process);
    }
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    for process in &processes {
        let url = format!("{}/readyz", process.base_url());
        services::wait_until_ready(&client, process, &url, deadline).await?;
    }
    eprintln!("chaos: all services ready; logs in {}", run_dir.display());
    Ok(processes)
}
