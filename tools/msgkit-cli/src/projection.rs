//! `msgkit projection`: where a service's projections are in the event archive, and asking
//! one to rebuild.
//!
//! Configured like the service: `DATABASE_URL`, the schema from `--schema`, else
//! `<SERVICE>_DB_SCHEMA`, else the service's name; `AMQP_URL` for the archive's first
//! retained event. A rebuild is done by the projection's active replica (it has the apply
//! functions): this command asks for it, then follows its progress until it is done, refused
//! or failed.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use msgkit::projection::admin::{self, ArchiveBounds, RebuildRequestError, show_time};
use serde_json::json;
use sqlx::PgPool;

use crate::broker::BrokerConfig;
use crate::{CliError, table};

#[derive(Debug, Args)]
pub struct ProjectionArgs {
    /// The service whose projections these are (its schema by default).
    #[arg(long)]
    service: String,
    /// The schema, when it is not the service's default.
    #[arg(long)]
    schema: Option<String>,
    /// The archive stream.
    #[arg(long, default_value = msgkit::topology::ARCHIVE_STREAM)]
    archive: String,
    #[command(subcommand)]
    command: ProjectionCommand,
}

#[derive(Debug, Subcommand)]
pub enum ProjectionCommand {
    /// Each projection's offset, lag and active replica, and the archive's first retained
    /// event.
    Status,
    /// Rebuild NAME into new tables from the archive's first retained event while the live
    /// tables keep serving, then switch atomically. Refused when the archive no longer holds
    /// the projection's whole history.
    Rebuild {
        /// The projection.
        name: String,
        /// Ask and return without waiting for the rebuild.
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this many seconds (the rebuild goes on).
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
    },
}

pub async fn run(args: ProjectionArgs, broker: &BrokerConfig, json: bool) -> Result<(), CliError> {
    let pool =
        crate::service_schema::connect(&args.service, args.schema.as_deref(), "msgkit_projections")
            .await?;
    let settings = broker.settings("msgkit-cli/projection");
    let bounds = admin::archive_bounds(&settings, &args.archive)
        .await
        .map_err(|error| CliError::Unavailable(error.to_string()))?;
    match args.command {
        ProjectionCommand::Status => status(&pool, &bounds, json).await,
        ProjectionCommand::Rebuild {
            name,
            no_wait,
            timeout_secs,
        } => {
            rebuild(
                &pool,
                &name,
                &bounds,
                no_wait,
                Duration::from_secs(timeout_secs),
                json,
            )
            .await
        }
    }
}

fn archive_start(bounds: &ArchiveBounds) -> String {
    match bounds.first {
        Some((offset, at)) => format!("offset {offset}, {}", at.to_rfc3339()),
        None => "empty".to_owned(),
    }
}

async fn status(pool: &PgPool, bounds: &ArchiveBounds, json: bool) -> Result<(), CliError> {
    let all = admin::status(pool)
        .await
        .map_err(|error| CliError::Unavailable(error.to_string()))?;
    if json {
        let value = json!({ "archive_first": bounds.first, "projections": all });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.position.map_or_else(|| "-".to_owned(), |o| o.to_string()),
                format!("{:.1} s", p.lag_seconds),
                show_time(p.last_event_at),
                p.active_instance.clone().unwrap_or_else(|| "-".to_owned()),
                p.rebuild
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |r| r.state.clone()),
            ]
        })
        .collect();
    println!(
        "{}",
        table::render(
            &[
                "PROJECTION",
                "OFFSET",
                "LAG",
                "LAST EVENT",
                "ACTIVE",
                "REBUILD"
            ],
            &rows
        )
    );
    println!("archive starts at {}", archive_start(bounds));
    Ok(())
}

async fn rebuild(
    pool: &PgPool,
    name: &str,
    bounds: &ArchiveBounds,
    no_wait: bool,
    timeout: Duration,
    json: bool,
) -> Result<(), CliError> {
    admin::request_rebuild(pool, name, bounds)
        .await
        .map_err(|error| match error {
            RebuildRequestError::Unknown(_) => CliError::NotFound(error.to_string()),
            RebuildRequestError::Database(_) => CliError::Unavailable(error.to_string()),
            RebuildRequestError::InProgress(..) | RebuildRequestError::HistoryGone(_) => {
                CliError::Usage(error.to_string())
            }
        })?;
    if !json {
        eprintln!("rebuild of {name} requested; the active replica picks it up within seconds");
    }
    if no_wait {
        return Ok(());
    }
    let started = Instant::now();
    let mut last_shown = None;
    loop {
        let state = admin::rebuild_status(pool, name)
            .await
            .map_err(|error| CliError::Unavailable(error.to_string()))?;
        if let Some(state) = state.filter(admin::RebuildStatus::is_finished) {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&state).unwrap_or_default()
                );
            } else {
                println!(
                    "{}: {} ({} events)",
                    state.state,
                    state.detail.clone().unwrap_or_default(),
                    state.applied
                );
            }
            return match state.state.as_str() {
                "done" => Ok(()),
                _ => Err(CliError::Other(anyhow::anyhow!(
                    "rebuild of {name} {}: {}",
                    state.state,
                    state.detail.unwrap_or_default()
                ))),
            };
        }
        if started.elapsed() > timeout {
            return Err(CliError::Other(anyhow::anyhow!(
                "rebuild of {name} not finished after {timeout:?}; it goes on (see `msgkit projection status`)"
            )));
        }
        let progress = admin::rebuild_status(pool, name)
            .await
            .ok()
            .flatten()
            .map(|r| (r.state, r.applied));
        if !json && progress != last_shown {
            if let Some((state, applied)) = &progress {
                eprintln!("  {state}: {applied} events applied");
            }
            last_shown = progress;
        }
        // Polling an operator's command, not synchronising a test.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
