//! `msgkit chaos`: run the system a scenario file declares as OS processes under load, inject
//! faults on a schedule, let the system drain, then check that nothing was lost or applied
//! twice: the kit's own invariant (from RabbitMQ's firehose, the inboxes and the dead-letter
//! queues) and the scenario's SQL invariants. Exit code 1 when one is violated.
//!
//! Each run has its own database and vhost (removed afterwards), and each service reaches them
//! through proxies of its own, which the network faults act on. Faults that restart RabbitMQ
//! or PostgreSQL, and the broker alarms, act on the shared local services: do not run other
//! tests meanwhile. See docs/chaos.md.

mod checks;
mod counters;
pub(crate) mod faults;
pub(crate) mod generic;
mod inject;
mod load;
mod report;
pub(crate) mod scenario;
pub(crate) mod services;
mod system;
pub(crate) mod timeline;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use msgkit::testing::{TestBroker, TestDatabase};

use self::checks::Captured;
use self::generic::FirehoseRecorder;
use self::system::System;
use crate::CliError;

#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// A scenario name under chaos/ (quick, soak, ...) or a path to a TOML file.
    #[arg(long)]
    scenario: String,
}

pub async fn run(args: ChaosArgs, json_output: bool) -> Result<(), CliError> {
    let (scenario, path) = scenario::load(&args.scenario)?;
    eprintln!("chaos: scenario {} ({})", scenario.name, path.display());
    let db = TestDatabase::create().await;
    let broker = TestBroker::create().await;
    let run_dir = crate::saga_services::run_directory(&scenario.name)?;
    let recorder = if scenario.invariants.kit {
        let settings = broker.settings("msgkit-chaos/firehose");
        Some(
            FirehoseRecorder::start(&settings, broker.vhost(), &scenario.commands.rabbitmqctl)
                .await
                .map_err(|e| CliError::Unavailable(format!("the firehose recorder: {e}")))?,
        )
    } else {
        None
    };
    let mut system = System::start(&scenario, &db, &broker, &run_dir).await?;
    let pool = db.pool().await;
    for statement in &scenario.setup_sql {
        // The scenario's own SQL, on the run's throwaway database.
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.as_str()))
            .execute(&pool)
            .await
            .map_err(|e| CliError::Usage(format!("setup {statement:?} failed: {e}")))?;
    }

    let counters = Arc::new(Mutex::new(counters::Counters::default()));
    let (stop_polling, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let poller = tokio::spawn(counters::poll(
        system.metrics_endpoints(),
        Arc::clone(&counters),
        started,
        stop_rx,
    ));
    // Load and faults side by side.
    let duration = Duration::from_secs(scenario.duration_secs);
    let mut loads = Vec::new();
    let urls: Vec<(String, String)> = system
        .services
        .iter()
        .map(|s| (s.spec.name.clone(), s.base_url()))
        .collect();
    for spec in &scenario.load {
        let task = if spec.command.is_empty() {
            let base = system.service(&spec.service)?.base_url();
            tokio::spawn(load::run(spec.clone(), base, duration))
        } else {
            tokio::spawn(load::run_command(spec.clone(), urls.clone(), duration))
        };
        loads.push((spec.name.clone(), task));
    }
    let mut faults = inject::inject(
        &scenario.faults,
        &scenario.commands,
        started,
        &mut system,
        &broker,
    )
    .await;
    if let Some(recorder) = &recorder
        && recorder.recovered_gaps() > 0
    {
        eprintln!(
            "chaos: the firehose recorder lost the broker {} time(s) and listens again; events published meanwhile go unchecked",
            recorder.recovered_gaps()
        );
    }
    let mut captured = Captured::new();
    for (name, task) in loads {
        let result = task
            .await
            .map_err(|e| CliError::Other(anyhow::anyhow!("load {name} failed: {e}")))?;
        captured.insert(name, result);
    }
    // Faults may outlast the load (they run one after another); the load itself stops on time.
    let load_ended = duration.as_secs_f64();
    let drain_from = started.elapsed().as_secs_f64();
    eprintln!("chaos: load done; draining ...");
    let drain_started = Instant::now();
    let drained = checks::drain(&pool, &broker, &scenario, &captured).await?;
    let drain_secs = drain_started.elapsed().as_secs_f64();
    let _ = stop_polling.send(true);
    let _ = poller.await;

    let mut violations = Vec::new();
    if let Err(busy) = &drained {
        violations.push(format!("the system did not drain: {busy}"));
    }
    for (name, result) in &captured {
        let is_command = scenario
            .load
            .iter()
            .any(|l| &l.name == name && !l.command.is_empty());
        if let Some(code) = result
            .statuses
            .keys()
            .find(|code| is_command && **code != 0)
        {
            violations.push(format!("load {name}: its command exited with {code}"));
        }
    }
    for fault in faults.iter().filter(|f| f.failed) {
        violations.push(format!(
            "fault {} did not act: {}",
            fault.fault, fault.outcome
        ));
    }
    for invariant in &scenario.invariants.sql {
        violations.extend(checks::sql_invariant(&pool, invariant, &captured).await?);
    }
    let kit = match recorder {
        Some(recorder) => {
            let recording = recorder
                .finish(Duration::from_secs(30))
                .await
                .map_err(|e| CliError::Unavailable(format!("the firehose recorder: {e}")))?;
            let target = checks::system_under_test(&scenario, &db, &broker);
            let verdict = generic::verdict(&target, &recording)
                .await
                .map_err(|e| CliError::Unavailable(format!("the kit's invariant: {e}")))?;
            violations.extend(verdict.violations.iter().map(|v| format!("kit: {v}")));
            let unlisted = verdict.total().saturating_sub(verdict.violations.len());
            if !verdict.holds() && unlisted > 0 {
                violations.push(format!("kit: {unlisted} more violation(s) not listed"));
            }
            Some(verdict)
        }
        None => None,
    };
    let figures = checks::figures(&pool, &scenario, &captured).await?;
    let counted = counters
        .lock()
        .map(|mut c| std::mem::take(&mut *c))
        .map_err(|_| CliError::Other(anyhow::anyhow!("the counters' lock is poisoned")))?;
    report::what_faults_did(&mut faults, &counted);
    let exits = system.stop().await;
    for (name, code) in &exits {
        if *code != Some(0) {
            violations.push(format!(
                "{name} did not exit 0 on SIGTERM (exit {code:?}); see {}",
                run_dir.display()
            ));
        }
    }
    pool.close().await;
    let picture = run_dir.join("timeline.svg");
    let passed = violations.is_empty();
    let timeline = report::timeline(
        &scenario,
        passed,
        drain_from + drain_secs,
        load_ended,
        &counted,
        &faults,
    );
    timeline::write(&timeline, &picture)
        .map_err(|e| CliError::Other(anyhow::anyhow!("writing {}: {e}", picture.display())))?;
    let report = report::Report {
        scenario: &scenario,
        captured: &captured,
        figures,
        counters: &counted,
        kit: kit.as_ref(),
        drain_secs,
        faults: &faults,
        violations: &violations,
        logs: &run_dir,
        timeline: &picture,
    }
    .to_json();
    if json_output {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        report::print(&report);
    }
    if passed {
        Ok(())
    } else {
        Err(CliError::Violations(violations.len()))
    }
}

/// The run's numbers per load, for the report (and the tests).
pub(crate) fn load_summary(captured: &Captured) -> BTreeMap<String, serde_json::Value> {
    captured
        .iter()
        .map(|(name, result)| {
            (
                name.clone(),
                serde_json::json!({
                    "sent": result.sent,
                    "statuses": result.statuses,
                    "follow_ups": result.follow_ups,
                    "captured": result.captured.iter().map(|(tag, v)| (tag.clone(), v.len())).collect::<BTreeMap<_, _>>(),
                }),
            )
        })
        .collect()
}
