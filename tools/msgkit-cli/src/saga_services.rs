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

/// Start the four service binaries (next to this one) on `db` and `amqp_url` with the chaos
/// runner's fast settings plus `overrides`, and wait until every one is ready.
pub(crate) async fn start_services(
    overrides: &BTreeMap<String, ServiceOverrides>,
    db: &TestDatabase,
    amqp_url: &str,
    run_dir: &std::path::Path,
) -> Result<Vec<ServiceProcess>, CliError> {
    let exe = std::env::current_exe().map_err(|e| CliError::Other(e.into()))?;
    let bin_dir = exe
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let mut processes = Vec::new();
    for name in SERVICES {
        let binary = bin_dir.join(name);
        if !binary.is_file() {
            return Err(CliError::NotFound(format!(
                "no {} binary next to msgkit (build them: cargo build --workspace --bins)",
                binary.display()
            )));
        }
        let port = services::free_port()?;
        let mut env: BTreeMap<String, String> = [
            ("DATABASE_URL", db.url()),
            ("AMQP_URL", amqp_url.to_owned()),
            ("OUTBOX_POLL_INTERVAL_MS", "250".to_owned()),
            ("AMQP_RECONNECT_INITIAL_MS", "100".to_owned()),
            ("AMQP_RECONNECT_MAX_MS", "1000".to_owned()),
            ("RETRY_INITIAL_DELAY_MS", "200".to_owned()),
            ("RETRY_MAX_DELAY_MS", "3000".to_owned()),
            ("RETRY_MAX_ATTEMPTS", "10".to_owned()),
            ("GATEWAY_LATENCY_MS", "5".to_owned()),
            ("RUST_LOG", "info,sqlx=warn,lapin=error".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
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
