//! `msgkit chaos`: run the four services as OS processes under load, inject faults on a
//! schedule, let the system drain, then check from the databases and the broker that nothing
//! was lost or applied twice. Exit code 1 when an invariant is violated.
//!
//! Each run has its own database and vhost (removed afterwards). Faults that restart RabbitMQ
//! or PostgreSQL act on the shared local services: do not run other tests meanwhile.

pub(crate) mod check;
mod counters;
pub(crate) mod faults;
pub(crate) mod generic;
mod load;
pub(crate) mod scenario;
pub(crate) mod services;
pub(crate) mod timeline;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Args;
use msgkit::testing::{TestBroker, TestDatabase};
use serde::Serialize;
use serde_json::json;

use self::scenario::{FaultKind, Scenario};
use self::services::ServiceProcess;
use crate::{CliError, table};

/// The services the runner starts, in start order.
pub const SERVICES: [&str; 4] = ["order", "inventory", "payment", "notify"];
const WORK_QUEUES: [&str; 4] = ["order", "inventory", "payment", "notify"];
const DEAD_LETTER_QUEUES: [&str; 4] = ["order.dlq", "inventory.dlq", "payment.dlq", "notify.dlq"];

#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// A scenario name under chaos/ (quick, soak, ...) or a path to a TOML file.
    #[arg(long)]
    scenario: String,
}

/// One fault as it happened.
#[derive(Debug, Clone, Serialize)]
struct FaultRecord {
    fault: String,
    at: DateTime<Utc>,
    /// When the fault's action was over (after the restart, for restarts).
    ended: DateTime<Utc>,
    outcome: String,
    /// From `at` until an order placed after `ended` had gone through every service.
    recovery_secs: Option<f64>,
}

pub async fn run(args: ChaosArgs, json_output: bool) -> Result<(), CliError> {
    let (scenario, path) = scenario::load(&args.scenario)?;
    eprintln!("chaos: scenario {} ({})", scenario.name, path.display());
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let run_dir = run_directory(&scenario.name)?;
    let mut processes =
        start_services(&scenario.services, &db, &broker.amqp_url(), &run_dir).await?;
    let pool = db.pool().await;
    let initial_stock = check::stock(&pool).await?;

    let counters = Arc::new(Mutex::new(counters::Counters::default()));
    let (stop_polling, stop_rx) = tokio::sync::watch::channel(false);
    let endpoints = processes
        .iter()
        .map(|p| (p.name.to_owned(), p.base_url()))
        .collect();
    let poller = tokio::spawn(counters::poll(endpoints, Arc::clone(&counters), stop_rx));

    // Load and faults side by side.
    let started = Instant::now();
    let api = processes[0].base_url();
    let load = tokio::spawn(load::run(
        api,
        scenario.rate_per_sec,
        Duration::from_secs(scenario.duration_secs),
        scenario.poison_every,
    ));
    let faults = inject_faults(&scenario, started, &mut processes, &broker).await;
    let sent = load
        .await
        .map_err(|e| CliError::Other(anyhow::anyhow!("the load generator failed: {e}")))?;
    eprintln!(
        "chaos: load done ({} orders sent); draining ...",
        sent.len()
    );

    let accepted: BTreeSet<uuid::Uuid> = sent
        .iter()
        .filter_map(|s| s.order_id.as_deref().and_then(|id| id.parse().ok()))
        .collect();
    let poison: BTreeSet<uuid::Uuid> = sent
        .iter()
        .filter(|s| s.poison)
        .filter_map(|s| s.order_id.as_deref().and_then(|id| id.parse().ok()))
        .collect();
    let drain_started = Instant::now();
    let drained = drain(
        &pool,
        &broker,
        &accepted,
        &poison,
        Duration::from_secs(scenario.drain_timeout_secs),
    )
    .await?;
    let drain_secs = drain_started.elapsed().as_secs_f64();

    let _ = stop_polling.send(true);
    let _ = poller.await;
    let dead = check::dead_letters(&broker, &DEAD_LETTER_QUEUES).await?;
    let mut findings = check::invariants(&pool, &accepted, &poison, &initial_stock, &dead).await?;
    if let Err(reason) = &drained {
        findings
            .violations
            .push(format!("the system did not drain: {reason}"));
    }
    let mut faults = faults;
    for fault in &mut faults {
        fault.recovery_secs = check::recovery(&pool, fault.at, fault.ended).await?;
    }
    let mut exits = BTreeMap::new();
    for process in &mut processes {
        exits.insert(process.name, process.stop(Duration::from_secs(20)).await);
    }
    for (name, code) in &exits {
        if *code != Some(0) {
            findings.violations.push(format!(
                "{name} did not exit 0 on SIGTERM (exit {code:?}); see {}",
                run_dir.display()
            ));
        }
    }
    pool.close().await;

    let totals = counters.lock().map(|c| {
        json!({
            "redeliveries": c.sum(&["msgkit_redelivered_total"]) as u64,
            "duplicates_suppressed": c.sum(&["msgkit_consumed_total", "outcome=\"duplicate\""]) as u64,
            "retries": c.sum(&["msgkit_consumed_total", "outcome=\"retry\""]) as u64,
            "dead_letters": c.sum(&["msgkit_consumed_total", "outcome=\"dead_letter\""]) as u64,
            "poison": c.sum(&["msgkit_consumed_total", "outcome=\"poison\""]) as u64,
            "acked": c.sum(&["msgkit_consumed_total", "outcome=\"ack\""]) as u64,
        })
    });
    let report = json!({
        "scenario": scenario.name,
        "passed": findings.violations.is_empty(),
        "orders_sent": sent.len(),
        "orders_accepted": accepted.len(),
        "orders_refused": sent.iter().filter(|s| s.status != 202).count(),
        "poison_injected": poison.len(),
        "final_states": findings.by_status,
        "stuck_in_dlq": findings.stuck_in_dlq,
        "dead_letters": dead.len(),
        "charges": findings.charges,
        "notifications": findings.notifications,
        "consumer_counts": totals.unwrap_or_default(),
        "end_to_end_latency_ms": {"p50": findings.latency_p50_ms, "p99": findings.latency_p99_ms},
        "drain_secs": drain_secs,
        "faults": faults,
        "violations": findings.violations,
        "logs": run_dir.display().to_string(),
    });
    if json_output {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print_report(&report);
    }
    if findings.violations.is_empty() {
        Ok(())
    } else {
        Err(CliError::Violations(findings.violations.len()))
    }
}

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
    overrides: &BTreeMap<String, scenario::ServiceOverrides>,
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
        loop {
            let ready = client
                .get(format!("{}/readyz", process.base_url()))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            if Instant::now() > deadline {
                return Err(CliError::Other(anyhow::anyhow!(
                    "{} did not become ready within 90 s; see {}",
                    process.name,
                    process.log().display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!("chaos: all services ready; logs in {}", run_dir.display());
    Ok(processes)
}

async fn inject_faults(
    scenario: &Scenario,
    started: Instant,
    processes: &mut [ServiceProcess],
    broker: &TestBroker,
) -> Vec<FaultRecord> {
    let mut faults = scenario.faults.clone();
    faults.sort_by(|a, b| a.at_secs.total_cmp(&b.at_secs));
    let mut records = Vec::new();
    for fault in faults {
        let due = started + Duration::from_secs_f64(fault.at_secs);
        tokio::time::sleep_until(due.into()).await;
        let at = Utc::now();
        eprintln!(
            "chaos: t+{:.1}s {}",
            started.elapsed().as_secs_f64(),
            fault.kind.label()
        );
        let outcome = match apply(&fault.kind, &scenario.commands, processes, broker).await {
            Ok(detail) => detail,
            Err(error) => format!("failed: {error}"),
        };
        records.push(FaultRecord {
            fault: fault.kind.label(),
            at,
            ended: Utc::now(),
            outcome,
            recovery_secs: None,
        });
    }
    records
}

async fn apply(
    kind: &FaultKind,
    commands: &scenario::Commands,
    processes: &mut [ServiceProcess],
    broker: &TestBroker,
) -> Result<String, CliError> {
    match kind {
        FaultKind::KillService {
            service,
            restart_after_secs,
        } => {
            let process = processes
                .iter_mut()
                .find(|p| p.name == service)
                .ok_or_else(|| CliError::Usage(format!("unknown service {service}")))?;
            process.kill().await;
            // The pause is the fault's length, part of the schedule.
            tokio::time::sleep(Duration::from_secs_f64(*restart_after_secs)).await;
            process.start()?;
            Ok(format!("SIGKILL, restarted after {restart_after_secs}s"))
        }
        FaultKind::CloseConnections => {
            let closed = broker.close_all_connections().await;
            Ok(format!("{closed} connection(s) force-closed"))
        }
        FaultKind::RestartRabbitmq => {
            services::run_command(&commands.stop_rabbitmq).await?;
            services::run_command(&commands.start_rabbitmq).await?;
            Ok("stop_app + start_app".to_owned())
        }
        FaultKind::RestartPostgres => {
            let version = services::postgres_version().unwrap_or_else(|| "15".to_owned());
            let words: Vec<String> = commands
                .restart_postgres
                .iter()
                .map(|w| w.replace("{pg_version}", &version))
                .collect();
            services::run_command(&words).await?;
            Ok(format!("{} done", words.join(" ")))
        }
        FaultKind::Netem { .. } => Ok(
            "skipped: needs each service in its own network namespace with tc netem; this runner starts them on the host network".to_owned(),
        ),
    }
}

/// Wait until every accepted order is final (or, for poison, dead-lettered), the outboxes are
/// empty, and every work and delay queue has stayed empty for a few seconds (the management
/// API's unacked counts lag).
async fn drain(
    pool: &sqlx::PgPool,
    broker: &TestBroker,
    accepted: &BTreeSet<uuid::Uuid>,
    poison: &BTreeSet<uuid::Uuid>,
    timeout: Duration,
) -> Result<Result<(), String>, CliError> {
    let ids: Vec<uuid::Uuid> = accepted.iter().copied().collect();
    let deadline = Instant::now() + timeout;
    let mut quiet_since: Option<Instant> = None;
    loop {
        let pending: Vec<uuid::Uuid> = check::pending(pool, &ids).await.unwrap_or_default();
        let unsettled = pending.iter().filter(|id| !poison.contains(id)).count();
        let backlog = check::outbox_backlog(pool).await.unwrap_or(-1);
        let busy = busy_queues(broker).await;
        let quiet = unsettled == 0 && backlog == 0 && busy.is_empty();
        let state = format!(
            "{unsettled} order(s) not final, outbox backlog {backlog}, busy queues {busy:?}"
        );
        if quiet {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_secs(6) {
                return Ok(Ok(()));
            }
        } else {
            quiet_since = None;
        }
        if Instant::now() > deadline {
            return Ok(Err(state));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Work and delay queues holding messages (ready or unacked), per the management API.
async fn busy_queues(broker: &TestBroker) -> Vec<String> {
    let mut busy = Vec::new();
    for queue in WORK_QUEUES {
        match broker.queue_totals(queue).await {
            Some((0, 0)) => {}
            Some((ready, unacked)) => {
                busy.push(format!("{queue}: {ready} ready, {unacked} unacked"))
            }
            None => busy.push(format!("{queue}: unknown")),
        }
    }
    for delay in msgkit::topology::delay_tiers() {
        let name = msgkit::topology::delay_tier_name(delay);
        if let Some(ready) = broker.queue_depth(&name).await
            && ready > 0
        {
            busy.push(format!("{name}: {ready} waiting"));
        }
    }
    busy
}

fn print_report(report: &serde_json::Value) {
    let figure = |key: &str| report[key].to_string();
    let rows = vec![
        vec![
            "scenario".to_owned(),
            report["scenario"].as_str().unwrap_or_default().to_owned(),
        ],
        vec![
            "result".to_owned(),
            if report["passed"] == true {
                "PASSED".to_owned()
            } else {
                "FAILED".to_owned()
            },
        ],
        vec![
            "orders sent / accepted / refused".to_owned(),
            format!(
                "{} / {} / {}",
                figure("orders_sent"),
                figure("orders_accepted"),
                figure("orders_refused")
            ),
        ],
        vec![
            "final states".to_owned(),
            report["final_states"].to_string(),
        ],
        vec![
            "poison injected / dead letters".to_owned(),
            format!("{} / {}", figure("poison_injected"), figure("dead_letters")),
        ],
        vec![
            "charges / notifications".to_owned(),
            format!("{} / {}", figure("charges"), figure("notifications")),
        ],
        vec![
            "consumer counts".to_owned(),
            report["consumer_counts"].to_string(),
        ],
        vec![
            "end-to-end latency p50 / p99 (ms)".to_owned(),
            format!(
                "{:.0} / {:.0}",
                report["end_to_end_latency_ms"]["p50"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                report["end_to_end_latency_ms"]["p99"]
                    .as_f64()
                    .unwrap_or(f64::NAN)
            ),
        ],
        vec![
            "drain (s)".to_owned(),
            format!("{:.1}", report["drain_secs"].as_f64().unwrap_or(0.0)),
        ],
    ];
    println!("{}", table::render(&["CHAOS", ""], &rows));
    let faults: Vec<Vec<String>> = report["faults"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            vec![
                f["fault"].as_str().unwrap_or_default().to_owned(),
                f["outcome"].as_str().unwrap_or_default().to_owned(),
                f["recovery_secs"]
                    .as_f64()
                    .map(|s| format!("{s:.1}"))
                    .unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    println!(
        "\n{}",
        table::render(&["FAULT", "WHAT HAPPENED", "RECOVERY (s)"], &faults)
    );
    let violations = report["violations"].as_array().cloned().unwrap_or_default();
    if violations.is_empty() {
        println!("\nno invariant violated: nothing lost, nothing applied twice");
    } else {
        println!("\nVIOLATIONS ({}):", violations.len());
        for violation in violations.iter().take(50) {
            println!("  - {}", violation.as_str().unwrap_or_default());
        }
    }
    println!("logs: {}", report["logs"].as_str().unwrap_or_default());
}
