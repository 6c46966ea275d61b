//! Injecting a scenario's faults on schedule. Faults run one after another: one that lasts past
//! the next one's time delays it. Each fault reports what it did, in figures that show it acted
//! (connections refused, bytes held, the alarm seen by the broker, the process stopped).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use msgkit::testing::{Connectivity, ProxyControl, ProxyCounters, TestBroker};
use serde::Serialize;

use super::faults::alarm::{AlarmKind, BrokerNode, raise_alarm};
use super::faults::pause::pause;
use super::scenario::{Commands, Fault, FaultKind};
use super::services;
use super::system::System;
use crate::CliError;

/// One fault as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    pub fault: String,
    /// Seconds after the load started.
    pub start_secs: f64,
    /// When the fault was lifted: the process started again, the link or the alarm restored,
    /// the restart done. Recovery is counted from here.
    pub healed_secs: f64,
    /// When the fault's action was over, checks included (an alarm seen cleared).
    pub end_secs: f64,
    pub at: DateTime<Utc>,
    /// When the fault's action was over (after the restart, for restarts).
    pub ended: DateTime<Utc>,
    /// What the fault did, or why it failed.
    pub outcome: String,
    /// Whether the fault's action failed (the run then fails).
    pub failed: bool,
    /// For a broker or database restart: how long the restart itself took.
    pub restart_secs: Option<f64>,
    /// From the fault's lifting until every service that was handling messages before the
    /// fault had handled one after it was lifted.
    pub recovery_secs: Option<f64>,
    /// What the services did from the fault's start until they recovered (or 10 s).
    pub redeliveries: u64,
    pub retries: u64,
    pub reconnects: u64,
}

/// Run `faults` on schedule from `started`.
pub async fn inject(
    faults: &[Fault],
    commands: &Commands,
    started: Instant,
    system: &mut System,
    broker: &TestBroker,
) -> Vec<FaultRecord> {
    let mut faults = faults.to_vec();
    faults.sort_by(|a, b| a.at_secs.total_cmp(&b.at_secs));
    let mut records = Vec::new();
    for fault in faults {
        let due = started + Duration::from_secs_f64(fault.at_secs);
        tokio::time::sleep_until(due.into()).await;
        let (at, start_secs) = (Utc::now(), started.elapsed().as_secs_f64());
        eprintln!("chaos: t+{start_secs:.1}s {}", fault.kind.label());
        let acted = apply(&fault.kind, commands, system, broker).await;
        let end_secs = started.elapsed().as_secs_f64();
        let (outcome, failed, restart_secs, healed) = match acted {
            Ok(acted) => (acted.detail, false, acted.restart_secs, acted.healed),
            Err(error) => (format!("failed: {error}"), true, None, None),
        };
        records.push(FaultRecord {
            fault: fault.kind.label(),
            start_secs,
            healed_secs: healed.map_or(end_secs, |at| at.duration_since(started).as_secs_f64()),
            end_secs,
            at,
            ended: Utc::now(),
            outcome,
            failed,
            restart_secs,
            recovery_secs: None,
            redeliveries: 0,
            retries: 0,
            reconnects: 0,
        });
    }
    records
}

/// What a fault's action did.
struct Acted {
    detail: String,
    restart_secs: Option<f64>,
    /// When the fault was lifted, if before the action's end.
    healed: Option<Instant>,
}

impl From<String> for Acted {
    fn from(detail: String) -> Self {
        Self {
            detail,
            restart_secs: None,
            healed: None,
        }
    }
}

impl From<(String, Instant)> for Acted {
    fn from((detail, healed): (String, Instant)) -> Self {
        Self {
            detail,
            restart_secs: None,
            healed: Some(healed),
        }
    }
}

async fn apply(
    kind: &FaultKind,
    commands: &Commands,
    system: &mut System,
    broker: &TestBroker,
) -> Result<Acted, CliError> {
    let secs = Duration::from_secs_f64;
    Ok(match kind {
        FaultKind::KillService {
            service,
            restart_after_secs,
            replica,
        } => {
            let service = system.service_mut(service)?;
            let count = service.replicas.len();
            let chosen = |index: usize| replica.is_none_or(|r| r == index);
            for (index, process) in service.replicas.iter_mut().enumerate() {
                if chosen(index) {
                    process.process.kill().await;
                }
            }
            // The pause is the fault's length, part of the schedule.
            tokio::time::sleep(secs(*restart_after_secs)).await;
            for (index, process) in service.replicas.iter_mut().enumerate() {
                if chosen(index) {
                    process.process.start()?;
                }
            }
            let killed = replica.map_or(count, |_| 1);
            let detail = format!(
                "SIGKILL to {killed} of {count} process(es), restarted after {restart_after_secs}s"
            );
            (detail, Instant::now()).into()
        }
        FaultKind::PauseService {
            service,
            duration_secs,
        } => pause_service(system, service, secs(*duration_secs))
            .await?
            .into(),
        FaultKind::CloseConnections => {
            let closed = broker.close_all_connections().await;
            format!("{closed} connection(s) force-closed").into()
        }
        FaultKind::RestartRabbitmq => {
            let began = Instant::now();
            services::run_command(&commands.stop_rabbitmq).await?;
            services::run_command(&commands.start_rabbitmq).await?;
            let took = began.elapsed().as_secs_f64();
            Acted {
                detail: format!("stop_app + start_app in {took:.1}s"),
                restart_secs: Some(took),
                healed: None,
            }
        }
        FaultKind::RestartPostgres => {
            let version = services::postgres_version().unwrap_or_else(|| "15".to_owned());
            let words: Vec<String> = commands
                .restart_postgres
                .iter()
                .map(|w| w.replace("{pg_version}", &version))
                .collect();
            let began = Instant::now();
            services::run_command(&words).await?;
            let took = began.elapsed().as_secs_f64();
            Acted {
                detail: format!("{} in {took:.1}s", words.join(" ")),
                restart_secs: Some(took),
                healed: None,
            }
        }
        FaultKind::Partition {
            service,
            link,
            duration_secs,
        } => {
            let links = system.service(service)?.links(*link);
            network(&links, secs(*duration_secs), |faults| {
                faults.connectivity = Connectivity::Cut;
            })
            .await
            .into()
        }
        FaultKind::Latency {
            service,
            link,
            latency_ms,
            duration_secs,
        } => {
            let links = system.service(service)?.links(*link);
            network(&links, secs(*duration_secs), |faults| {
                faults.latency = Duration::from_millis(*latency_ms);
            })
            .await
            .into()
        }
        FaultKind::Bandwidth {
            service,
            link,
            bytes_per_sec,
            duration_secs,
        } => {
            let links = system.service(service)?.links(*link);
            network(&links, secs(*duration_secs), |faults| {
                faults.bandwidth = Some(*bytes_per_sec);
            })
            .await
            .into()
        }
        FaultKind::MemoryAlarm { duration_secs } => {
            alarm(commands, AlarmKind::Memory, secs(*duration_secs))
                .await?
                .into()
        }
        FaultKind::DiskAlarm { duration_secs } => {
            alarm(commands, AlarmKind::Disk, secs(*duration_secs))
                .await?
                .into()
        }
    })
}

/// Apply `change` to every proxy of a link for `duration`, then clear it; the proxies' counters
/// over the fault show what it did.
async fn network(
    links: &[ProxyControl],
    duration: Duration,
    change: impl Fn(&mut msgkit::testing::Faults),
) -> (String, Instant) {
    let before: Vec<ProxyCounters> = links.iter().map(ProxyControl::counters).collect();
    for link in links {
        let mut faults = link.faults();
        change(&mut faults);
        link.set_faults(faults);
    }
    tokio::time::sleep(duration).await;
    for link in links {
        link.clear();
    }
    let healed = Instant::now();
    let after: Vec<ProxyCounters> = links.iter().map(ProxyControl::counters).collect();
    let delta = |f: fn(&ProxyCounters) -> u64| -> u64 {
        after
            .iter()
            .zip(&before)
            .map(|(a, b)| f(a).saturating_sub(f(b)))
            .sum()
    };
    let detail = format!(
        "{:.1}s on {} link(s): {} connection(s) refused, {} accepted, {} bytes through",
        duration.as_secs_f64(),
        links.len(),
        delta(|c| c.refused),
        delta(|c| c.accepted),
        delta(|c| c.bytes_to_upstream) + delta(|c| c.bytes_to_client),
    );
    (detail, healed)
}

/// SIGSTOP every replica of `service` for `duration`, then SIGCONT.
async fn pause_service(
    system: &System,
    service: &str,
    duration: Duration,
) -> Result<(String, Instant), CliError> {
    let mut paused = Vec::new();
    for replica in &system.service(service)?.replicas {
        let Some(pid) = replica.process.pid() else {
            continue;
        };
        paused.push(pause(pid).await?);
    }
    tokio::time::sleep(duration).await;
    let count = paused.len();
    let healed = Instant::now();
    for process in paused {
        process.resume().await?;
    }
    let detail = format!(
        "SIGSTOP {count} process(es) for {:.1}s, then SIGCONT",
        duration.as_secs_f64()
    );
    Ok((detail, healed))
}

/// Raise `kind` on the local node for `duration`; the guard restores it on every path.
async fn alarm(
    commands: &Commands,
    kind: AlarmKind,
    duration: Duration,
) -> Result<(String, Instant), CliError> {
    let node = BrokerNode::local(&commands.rabbitmq_node, 15672);
    let raised = Instant::now();
    let guard = raise_alarm(&node, kind).await?;
    let shown_after = raised.elapsed().as_secs_f64();
    tokio::time::sleep(duration).await;
    let healed = Instant::now();
    guard.restore().await?;
    let detail = format!(
        "{kind:?} alarm shown by the broker after {shown_after:.1}s, held {:.1}s, restored and cleared",
        duration.as_secs_f64()
    );
    Ok((detail, healed))
}
