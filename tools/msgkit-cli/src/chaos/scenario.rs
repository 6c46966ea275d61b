//! Chaos scenarios: load, faults and their schedule, read from TOML.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::CliError;

/// One scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// How long orders are sent.
    pub duration_secs: u64,
    /// Orders per second (open loop: the rate does not slow down when the system does).
    pub rate_per_sec: f64,
    /// How long the system may take to settle after the load.
    pub drain_timeout_secs: u64,
    /// Every Nth order is poison for the inventory consumer (0: none).
    #[serde(default)]
    pub poison_every: u64,
    /// Extra environment per service (fault injection, gateway behaviour).
    #[serde(default)]
    pub services: BTreeMap<String, ServiceOverrides>,
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// How to restart the shared services (defaults suit the local stack as root).
    #[serde(default)]
    pub commands: Commands,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceOverrides {
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// A fault at a moment of the run. (No `deny_unknown_fields` here: serde does not support it
/// with a flattened enum; the enum's variants deny them instead.)
#[derive(Debug, Clone, Deserialize)]
pub struct Fault {
    pub at_secs: f64,
    #[serde(flatten)]
    pub kind: FaultKind,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultKind {
    /// SIGKILL one service process, start it again after a pause.
    KillService {
        service: String,
        restart_after_secs: f64,
    },
    /// Force-close every client connection of the run's vhost (management API).
    CloseConnections,
    /// Stop and start the RabbitMQ application.
    RestartRabbitmq,
    /// Restart the PostgreSQL cluster.
    RestartPostgres,
    /// Latency or a cut between one service and the broker with tc netem in a network
    /// namespace: needs a network set-up this runner does not do; reported as skipped.
    Netem { service: String },
}

impl FaultKind {
    pub fn label(&self) -> String {
        match self {
            Self::KillService { service, .. } => format!("kill {service}"),
            Self::CloseConnections => "close connections".to_owned(),
            Self::RestartRabbitmq => "restart rabbitmq".to_owned(),
            Self::RestartPostgres => "restart postgresql".to_owned(),
            Self::Netem { service } => format!("netem {service}"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commands {
    pub stop_rabbitmq: Vec<String>,
    pub start_rabbitmq: Vec<String>,
    pub restart_postgres: Vec<String>,
}

impl Default for Commands {
    fn default() -> Self {
        let words = |s: &str| s.split_whitespace().map(str::to_owned).collect();
        Self {
            stop_rabbitmq: words("rabbitmqctl -q stop_app"),
            start_rabbitmq: words("rabbitmqctl -q start_app"),
            // `pg_ctlcluster <version> main restart`; the version is filled in at run time.
            restart_postgres: words("pg_ctlcluster {pg_version} main restart -m fast"),
        }
    }
}

/// Find and read a scenario: a path, or a name under `chaos/` of the repository.
pub fn load(name_or_path: &str) -> Result<(Scenario, PathBuf), CliError> {
    let candidates = [
        PathBuf::from(name_or_path),
        Path::new("chaos").join(format!("{name_or_path}.toml")),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../chaos")
            .join(format!("{name_or_path}.toml")),
    ];
    let path = candidates.iter().find(|p| p.is_file()).ok_or_else(|| {
        CliError::NotFound(format!(
            "no scenario {name_or_path:?} (looked for a file, and chaos/{name_or_path}.toml)"
        ))
    })?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::NotFound(format!("cannot read {}: {e}", path.display())))?;
    let scenario: Scenario = toml::from_str(&text)
        .map_err(|e| CliError::Usage(format!("scenario {} is invalid: {e}", path.display())))?;
    if scenario.rate_per_sec <= 0.0 || scenario.duration_secs == 0 {
        return Err(CliError::Usage(format!(
            "scenario {}: rate and duration must be positive",
            path.display()
        )));
    }
    for service in scenario.services.keys() {
        if !super::SERVICES.contains(&service.as_str()) {
            return Err(CliError::Usage(format!(
                "scenario {}: unknown service {service:?}",
                path.display()
            )));
        }
    }
    Ok((scenario, path.clone()))
}
