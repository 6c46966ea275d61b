//! A chaos scenario, read from TOML: the system (services to start), the load, the faults and
//! their times, and the invariants. The runner knows nothing else about the system; see
//! docs/chaos.md for the format and chaos/saga.toml for the example services' scenario.

use serde::Deserialize;
use std::collections::BTreeMap;

mod file;

pub use file::load;

/// One scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// How long the load runs.
    pub duration_secs: u64,
    /// How long the system may take to settle after the load.
    pub drain_timeout_secs: u64,
    /// Environment every service gets (before its own `env`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub services: Vec<ServiceSpec>,
    #[serde(default)]
    pub load: Vec<LoadSpec>,
    #[serde(default)]
    pub faults: Vec<Fault>,
    #[serde(default)]
    pub invariants: Invariants,
    /// SQL run once every service is ready, before the load (e.g. to snapshot stock).
    #[serde(default)]
    pub setup_sql: Vec<String>,
    /// Figures for the report: SQL whose rows are shown (two columns: label, value).
    #[serde(default)]
    pub figures: Vec<Figure>,
    /// How to restart the shared services (defaults suit the local stack as root).
    #[serde(default)]
    pub commands: Commands,
    /// Files (relative to this one) whose tables come first: a system described once and run
    /// under several scenarios. Arrays add up, tables merge, this file's values win.
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "followed in the raw TOML, before it becomes a Scenario"
    )]
    pub include: Vec<String>,
    /// Extra environment per service name, on top of the service's own (e.g. fault settings
    /// for one scenario of an included system).
    #[serde(default)]
    pub service_env: BTreeMap<String, BTreeMap<String, String>>,
    /// Another rate per load name, for one scenario of an included system.
    #[serde(default)]
    pub rates: BTreeMap<String, f64>,
}

/// A service to start: a binary built in this workspace (next to `msgkit`) or a command.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    /// A binary next to `msgkit` (`cargo build --bins` puts them there).
    #[serde(default)]
    pub binary: Option<String>,
    /// Or a command line, for services not built here.
    #[serde(default)]
    pub command: Vec<String>,
    /// Its environment. `{port}` is the port the runner chose for this replica, and
    /// `{database_url}` / `{amqp_url}` the run's database and vhost as this service reaches
    /// them (through its own proxies, which the network faults act on); `DATABASE_URL` and
    /// `AMQP_URL` are set to those unless given here.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Ready when this answers 2xx (default `http://127.0.0.1:{port}/readyz`).
    #[serde(default)]
    pub ready_url: Option<String>,
    /// Its Prometheus metrics (default `http://127.0.0.1:{port}/metrics`), for the counts, the
    /// timeline and recovery times.
    #[serde(default)]
    pub metrics_url: Option<String>,
    #[serde(default = "one")]
    pub replicas: u32,
    /// The schema its kit tables live in (inbox, outbox, timers), for the kit's invariant.
    #[serde(default)]
    pub schema: Option<String>,
    /// The queues it consumes, each with its inbox consumer name (default: the service name).
    #[serde(default)]
    pub queues: Vec<String>,
    /// The inbox consumer name, when not the service name.
    #[serde(default)]
    pub consumer: Option<String>,
}

fn one() -> u32 {
    1
}

/// Open-loop HTTP load: requests at a fixed rate whatever the system does; or a command of
/// the team's own (a load generator they already have), run for the load's duration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSpec {
    /// Names what it captures for the invariants (`accepted:<name>`).
    pub name: String,
    /// The service whose (first replica's) port the request goes to.
    pub service: String,
    pub rate_per_sec: f64,
    #[serde(default = "post")]
    pub method: String,
    #[serde(default)]
    pub path: String,
    /// The body template (see [`super::load`] for the generated fields).
    #[serde(default)]
    pub body: String,
    /// Instead of requests: this command, started with the load and stopped (SIGTERM) at its
    /// end. It gets `CHAOS_<SERVICE>_URL` (e.g. `CHAOS_ORDER_URL`) for every service and
    /// `CHAOS_RATE_PER_SEC`; a non-zero exit fails the run.
    #[serde(default)]
    pub command: Vec<String>,
    /// Alternative bodies: every `every`-th request, or with a weight out of 100.
    #[serde(default)]
    pub variants: Vec<Variant>,
    /// Statuses that mean accepted (default 200, 201, 202).
    #[serde(default)]
    pub accept: Vec<u16>,
    /// A field of the accepted response's JSON body to collect (e.g. the order id).
    #[serde(default)]
    pub capture: Option<String>,
    /// A second request some accepted requests lead to, later (a customer cancelling an order
    /// they placed): needs `capture`, whose value it gets as `${captured}`.
    #[serde(default)]
    pub follow_up: Option<FollowUp>,
}

/// A request sent a while after an accepted one, about what it captured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowUp {
    /// For every `every`-th request (by number, whatever its variant), when it was accepted.
    pub every: u64,
    /// How long after the first request's answer.
    pub after_secs: f64,
    #[serde(default = "post")]
    pub method: String,
    /// Path template: `${captured}` and the load's generated fields.
    pub path: String,
    #[serde(default)]
    pub body: String,
    /// Statuses that mean done (default 200, 201, 202).
    #[serde(default)]
    pub accept: Vec<u16>,
    /// Statuses sent again after `after_secs` (e.g. 409 while an order is still pending, 503
    /// while a fault lasts; 0 is no answer), up to `attempts` in all.
    #[serde(default)]
    pub retry: Vec<u16>,
    #[serde(default = "one")]
    pub attempts: u32,
}

fn post() -> String {
    "POST".to_owned()
}

/// A variant body of a load.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Names its captures (`accepted:<load>:<tag>`).
    pub tag: String,
    pub body: String,
    /// Every n-th request (checked before the weights).
    #[serde(default)]
    pub every: Option<u64>,
    /// Percent of the other requests.
    #[serde(default)]
    pub weight: Option<u64>,
}

/// A fault at a moment of the run. (No `deny_unknown_fields` here: serde does not support it
/// with a flattened enum; the enum's variants deny them instead.)
#[derive(Debug, Clone, Deserialize)]
pub struct Fault {
    pub at_secs: f64,
    #[serde(flatten)]
    pub kind: FaultKind,
}

/// Which connection of a service a network fault acts on.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    Broker,
    Database,
}

/// Every fault the runner can inject. An unknown kind does not parse: a fault never turns
/// into a silent skip.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultKind {
    /// SIGKILL every replica of a service (or only replica `replica`, counted from 0: one of
    /// several, as a crashed pod), start them again after a pause.
    KillService {
        service: String,
        restart_after_secs: f64,
        #[serde(default)]
        replica: Option<usize>,
    },
    /// SIGSTOP a service for a while, then SIGCONT (give it a short `AMQP_HEARTBEAT_SECS` so
    /// the broker notices).
    PauseService { service: String, duration_secs: f64 },
    /// Force-close every client connection of the run's vhost (management API).
    CloseConnections,
    /// Stop and start the RabbitMQ application.
    RestartRabbitmq,
    /// Restart the PostgreSQL cluster.
    RestartPostgres,
    /// Cut a service off from the broker or the database (connections reset, new ones refused).
    Partition {
        service: String,
        link: Link,
        duration_secs: f64,
    },
    /// Add latency to every chunk each way between a service and the broker or the database.
    Latency {
        service: String,
        link: Link,
        latency_ms: u64,
        duration_secs: f64,
    },
    /// Cap the bandwidth between a service and the broker or the database.
    Bandwidth {
        service: String,
        link: Link,
        bytes_per_sec: u64,
        duration_secs: f64,
    },
    /// The broker's memory alarm (node-wide: publishers are blocked), always restored.
    MemoryAlarm { duration_secs: f64 },
    /// The broker's disk alarm (node-wide), always restored.
    DiskAlarm { duration_secs: f64 },
}

impl FaultKind {
    pub fn label(&self) -> String {
        let link = |link: &Link| match link {
            Link::Broker => "broker",
            Link::Database => "database",
        };
        match self {
            Self::KillService {
                service,
                replica: Some(replica),
                ..
            } => format!("kill {service}#{replica}"),
            Self::KillService { service, .. } => format!("kill {service}"),
            Self::PauseService { service, .. } => format!("pause {service}"),
            Self::CloseConnections => "close connections".to_owned(),
            Self::RestartRabbitmq => "restart rabbitmq".to_owned(),
            Self::RestartPostgres => "restart postgresql".to_owned(),
            Self::Partition {
                service, link: l, ..
            } => format!("partition {service}-{}", link(l)),
            Self::Latency {
                service,
                link: l,
                latency_ms,
                ..
            } => format!("latency {latency_ms}ms {service}-{}", link(l)),
            Self::Bandwidth {
                service,
                link: l,
                bytes_per_sec,
                ..
            } => format!("bandwidth {bytes_per_sec}B/s {service}-{}", link(l)),
            Self::MemoryAlarm { .. } => "memory alarm".to_owned(),
            Self::DiskAlarm { .. } => "disk alarm".to_owned(),
        }
    }

    /// The service it acts on, if it acts on one.
    pub fn service(&self) -> Option<&str> {
        match self {
            Self::KillService { service, .. }
            | Self::PauseService { service, .. }
            | Self::Partition { service, .. }
            | Self::Latency { service, .. }
            | Self::Bandwidth { service, .. } => Some(service),
            _ => None,
        }
    }
}

/// What must hold after the run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invariants {
    /// The kit's own invariant (every event reached every bound consumer and was handled or
    /// dead-lettered with a reason; timers fired; nothing left in queues or outboxes).
    #[serde(default = "yes")]
    pub kit: bool,
    /// Queries that must return no rows; each row is one violation.
    #[serde(default)]
    pub sql: Vec<SqlInvariant>,
    /// Drained when these return no rows too (besides empty queues and outboxes).
    #[serde(default)]
    pub drained_when: Vec<String>,
}

impl Default for Invariants {
    fn default() -> Self {
        Self {
            kit: true,
            sql: Vec::new(),
            drained_when: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

/// A query that must return no rows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlInvariant {
    pub query: String,
    /// Bound as `$1`, `$2`, ... : `accepted:<load>` or `accepted:<load>:<tag>` (text arrays of
    /// captured values).
    #[serde(default)]
    pub params: Vec<String>,
    /// The violation's text; `{0}`, `{1}`, ... are the row's columns.
    pub message: String,
}

/// A figure for the report.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figure {
    pub name: String,
    pub query: String,
    #[serde(default)]
    pub params: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commands {
    pub stop_rabbitmq: Vec<String>,
    pub start_rabbitmq: Vec<String>,
    pub restart_postgres: Vec<String>,
    /// `rabbitmqctl` as the runner may call it (the firehose and the alarms).
    pub rabbitmqctl: Vec<String>,
    /// The local RabbitMQ node the alarms act on.
    pub rabbitmq_node: String,
}

impl Default for Commands {
    fn default() -> Self {
        let words = |s: &str| s.split_whitespace().map(str::to_owned).collect();
        Self {
            stop_rabbitmq: words("rabbitmqctl -q stop_app"),
            start_rabbitmq: words("rabbitmqctl -q start_app"),
            // `pg_ctlcluster <version> main restart`; the version is filled in at run time.
            restart_postgres: words("pg_ctlcluster {pg_version} main restart -m fast"),
            rabbitmqctl: words("rabbitmqctl"),
            rabbitmq_node: "rabbit@localhost".to_owned(),
        }
    }
}

impl Scenario {
    /// Put `service_env` and `rates` where they apply.
    pub(super) fn apply_overrides(&mut self) {
        for service in &mut self.services {
            if let Some(env) = self.service_env.get(&service.name) {
                service.env.extend(env.clone());
            }
        }
        for load in &mut self.load {
            if let Some(rate) = self.rates.get(&load.name) {
                load.rate_per_sec = *rate;
            }
        }
    }

    /// What TOML cannot say: names that refer to each other, positive figures.
    pub fn validate(&self) -> Result<(), String> {
        if self.duration_secs == 0 || self.services.is_empty() {
            return Err("a scenario needs a duration and at least one service".to_owned());
        }
        let known = |name: &str| self.services.iter().any(|s| s.name == name);
        for name in self.service_env.keys() {
            if !known(name) {
                return Err(format!("service_env: unknown service {name:?}"));
            }
        }
        for name in self.rates.keys() {
            if !self.load.iter().any(|l| &l.name == name) {
                return Err(format!("rates: unknown load {name:?}"));
            }
        }
        for service in &self.services {
            if service.binary.is_none() == service.command.is_empty() {
                return Err(format!(
                    "service {}: give exactly one of binary or command",
                    service.name
                ));
            }
            if service.replicas == 0 {
                return Err(format!(
                    "service {}: replicas must be at least 1",
                    service.name
                ));
            }
        }
        for load in &self.load {
            if !known(&load.service) {
                return Err(format!(
                    "load {}: unknown service {:?}",
                    load.name, load.service
                ));
            }
            if load.rate_per_sec <= 0.0 {
                return Err(format!("load {}: the rate must be positive", load.name));
            }
            if load.command.is_empty() == load.path.is_empty() {
                return Err(format!(
                    "load {}: give either a path (and body) or a command",
                    load.name
                ));
            }
            if load.follow_up.is_some() && load.capture.is_none() {
                return Err(format!(
                    "load {}: a follow-up needs `capture` (its ${{captured}})",
                    load.name
                ));
            }
        }
        for fault in &self.faults {
            if let Some(service) = fault.kind.service()
                && !known(service)
            {
                return Err(format!("fault {}: unknown service", fault.kind.label()));
            }
            if let FaultKind::KillService {
                service,
                replica: Some(replica),
                ..
            } = &fault.kind
                && let Some(spec) = self.services.iter().find(|s| &s.name == service)
                && *replica >= spec.replicas as usize
            {
                return Err(format!(
                    "fault {}: {service} has {} replica(s), counted from 0",
                    fault.kind.label(),
                    spec.replicas
                ));
            }
        }
        let loads: Vec<&str> = self.load.iter().map(|l| l.name.as_str()).collect();
        let params = self
            .invariants
            .sql
            .iter()
            .flat_map(|i| &i.params)
            .chain(self.figures.iter().flat_map(|f| &f.params));
        for param in params {
            let load = param
                .strip_prefix("accepted:")
                .and_then(|rest| rest.split(':').next());
            if !load.is_some_and(|load| loads.contains(&load)) {
                return Err(format!(
                    "parameter {param:?}: expected accepted:<load> or accepted:<load>:<tag>"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod reconcile_tests;
#[cfg(test)]
mod risk_tests;
#[cfg(test)]
mod tests;
