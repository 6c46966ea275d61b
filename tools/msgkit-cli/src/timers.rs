//! `msgkit timers`: the durable timers a service's consumers have pending, read from its
//! schema (`msgkit_timers`), and cancelling one by hand.
//!
//! Configured like the service: `DATABASE_URL`, and the schema from `--schema`, else
//! `<SERVICE>_DB_SCHEMA`, else the service's name. A timer counts as overdue once it is more
//! than a second past its instant (by the database's clock): its consumer is down or behind.

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;

use crate::{CliError, table};

#[derive(Debug, Args)]
pub struct TimersArgs {
    /// The service whose timers these are (its schema by default).
    #[arg(long)]
    service: String,
    /// The schema, when it is not the service's default.
    #[arg(long)]
    schema: Option<String>,
    #[command(subcommand)]
    command: TimersCommand,
}

#[derive(Debug, Subcommand)]
pub enum TimersCommand {
    /// Pending timers, soonest first.
    List {
        /// Only this timer name.
        #[arg(long)]
        name: Option<String>,
        /// Only this key.
        #[arg(long)]
        key: Option<String>,
        /// Only timers more than a second past their instant.
        #[arg(long)]
        overdue: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// One timer, payload included.
    Show {
        /// The timer's name.
        #[arg(long)]
        name: String,
        /// Its key.
        #[arg(long)]
        key: String,
    },
    /// Cancel one timer: it will not fire.
    Cancel {
        /// The timer's name.
        #[arg(long)]
        name: String,
        /// Its key.
        #[arg(long)]
        key: String,
    },
}

/// One pending timer as an operator reads it.
#[derive(Debug, Serialize, sqlx::FromRow)]
struct Timer {
    consumer: String,
    name: String,
    key: String,
    due_at: DateTime<Utc>,
    set_at: DateTime<Utc>,
    /// Seconds past due (negative: due in that many).
    overdue_by_secs: f64,
    payload: serde_json::Value,
}

const COLUMNS: &str = "consumer, name, key, due_at, set_at, \
     extract(epoch FROM now() - due_at)::float8 AS overdue_by_secs, payload";

pub async fn run(args: TimersArgs, json: bool) -> Result<(), CliError> {
    let pool =
        crate::service_schema::connect(&args.service, args.schema.as_deref(), "msgkit_timers")
            .await?;
    match args.command {
        TimersCommand::List {
            name,
            key,
            overdue,
            limit,
        } => list(&pool, name, key, overdue, limit, json).await,
        TimersCommand::Show { name, key } => show(&pool, &name, &key, json).await,
        TimersCommand::Cancel { name, key } => cancel(&pool, &name, &key, json).await,
    }
}

async fn list(
    pool: &PgPool,
    name: Option<String>,
    key: Option<String>,
    overdue: bool,
    limit: i64,
    json: bool,
) -> Result<(), CliError> {
    let timers: Vec<Timer> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM msgkit_timers \
         WHERE ($1::text IS NULL OR name = $1) AND ($2::text IS NULL OR key = $2) \
           AND (NOT $3 OR due_at < now() - interval '1 second') \
         ORDER BY due_at LIMIT $4"
    )))
    .bind(name)
    .bind(key)
    .bind(overdue)
    .bind(limit.max(0))
    .fetch_all(pool)
    .await
    .map_err(|error| CliError::Unavailable(error.to_string()))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&timers).unwrap_or_default()
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = timers
        .iter()
        .map(|t| {
            vec![
                t.consumer.clone(),
                t.name.clone(),
                t.key.clone(),
                t.due_at.to_rfc3339(),
                due_in_words(t.overdue_by_secs),
            ]
        })
        .collect();
    println!(
        "{}",
        table::render(&["CONSUMER", "NAME", "KEY", "DUE", "STATE"], &rows)
    );
    Ok(())
}

async fn show(pool: &PgPool, name: &str, key: &str, json: bool) -> Result<(), CliError> {
    let timer = find(pool, name, key).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&timer).unwrap_or_default()
        );
    } else {
        println!(
            "consumer  {}\nname      {}\nkey       {}\ndue       {} ({})\nset       {}\npayload   {}",
            timer.consumer,
            timer.name,
            timer.key,
            timer.due_at.to_rfc3339(),
            due_in_words(timer.overdue_by_secs),
            timer.set_at.to_rfc3339(),
            serde_json::to_string_pretty(&timer.payload).unwrap_or_default()
        );
    }
    Ok(())
}

async fn cancel(pool: &PgPool, name: &str, key: &str, json: bool) -> Result<(), CliError> {
    let cancelled = sqlx::query("DELETE FROM msgkit_timers WHERE name = $1 AND key = $2")
        .bind(name)
        .bind(key)
        .execute(pool)
        .await
        .map_err(|error| CliError::Unavailable(error.to_string()))?
        .rows_affected();
    if cancelled == 0 {
        return Err(CliError::NotFound(format!(
            "no pending timer {name:?} for key {key:?}"
        )));
    }
    if json {
        println!(
            "{}",
            json!({"cancelled": cancelled, "name": name, "key": key})
        );
    } else {
        println!("cancelled timer {name:?} for key {key:?} ({cancelled} consumer(s))");
    }
    Ok(())
}

async fn find(pool: &PgPool, name: &str, key: &str) -> Result<Timer, CliError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM msgkit_timers WHERE name = $1 AND key = $2 LIMIT 1"
    )))
    .bind(name)
    .bind(key)
    .fetch_optional(pool)
    .await
    .map_err(|error| CliError::Unavailable(error.to_string()))?
    .ok_or_else(|| CliError::NotFound(format!("no pending timer {name:?} for key {key:?}")))
}

/// `due in 4.0 s`, `overdue by 12.5 s`: overdue once more than a second late.
fn due_in_words(overdue_by_secs: f64) -> String {
    if overdue_by_secs > 1.0 {
        format!("overdue by {overdue_by_secs:.1} s")
    } else if overdue_by_secs > 0.0 {
        "due".to_owned()
    } else {
        format!("due in {:.1} s", -overdue_by_secs)
    }
}
