//! Rebuilding a projection while its live tables keep serving: its migrations run into a new
//! schema, the whole archive is applied there, then one transaction swaps the tables (the live
//! ones move to `<schema>_<projection>_previous`, kept for comparison until the next rebuild)
//! and moves the checkpoint to where the rebuild got. The live loop, fenced off by the moved
//! checkpoint, continues from there into the new tables.
//!
//! The active replica does it (it has the apply functions); an operator asks with
//! `msgkit projection rebuild NAME` (see [`super::admin`]).

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};
use tokio::task::JoinHandle;

use super::admin::{self, ArchiveBounds};
use super::reader::StartAt;
use super::runner::{ProjectionRunner, offset_i64};
use super::store::{self, Advance};
use super::{ArchivedEvent, ProjectionError};
use crate::broker::BrokerError;
use crate::shutdown::Shutdown;

/// No delivery for this long: the rebuild has read everything the archive had.
const IDLE: Duration = Duration::from_millis(500);

/// Why a rebuild did not switch.
#[derive(Debug, thiserror::Error)]
enum RebuildError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Apply(#[from] ProjectionError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("the service is stopping")]
    Stopped,
}

impl From<sqlx::Error> for RebuildError {
    fn from(error: sqlx::Error) -> Self {
        Self::Apply(ProjectionError::Database(error))
    }
}

/// The rebuild task of a leading replica: started when one is requested, stopped with the lead.
pub(super) struct Rebuild {
    runner: ProjectionRunner,
    shutdown: Shutdown,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Rebuild {
    pub(super) fn new(runner: ProjectionRunner, lead: &Shutdown) -> Self {
        Self {
            runner,
            shutdown: lead.child(),
            task: tokio::sync::Mutex::new(None),
        }
    }

    /// Start a requested rebuild unless one is running.
    pub(super) async fn poll(&self) {
        let mut task = self.task.lock().await;
        if task.as_ref().is_some_and(|running| !running.is_finished()) {
            return;
        }
        let name = self.runner.projection.name().to_owned();
        match store::claim_rebuild(&self.runner.pool, &name).await {
            Ok(true) => {
                tracing::info!(projection = %name, "rebuild started");
                let runner = self.runner.clone();
                let shutdown = self.shutdown.clone();
                *task = Some(self.shutdown.spawn(async move {
                    let outcome = rebuild(&runner, &shutdown).await;
                    record(&runner, outcome).await;
                }));
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(projection = %name, %error, "cannot look for rebuild requests");
            }
        }
    }

    /// Stop a running rebuild (it is left `running`, and the next leader starts it again).
    pub(super) async fn stop(&self) {
        self.shutdown.trigger();
        self.shutdown.wait_for_tasks().await;
    }
}

async fn record(runner: &ProjectionRunner, outcome: Result<String, RebuildError>) {
    let name = runner.projection.name();
    let (state, detail) = match outcome {
        Ok(detail) => {
            tracing::info!(projection = %name, %detail, "rebuild switched in");
            return;
        }
        Err(RebuildError::Stopped) => return,
        Err(RebuildError::Refused(reason)) => ("refused", reason),
        Err(error) => ("failed", error.to_string()),
    };
    tracing::warn!(projection = %name, %state, %detail, "rebuild did not switch");
    if let Err(error) = store::end_rebuild(&runner.pool, name, state, &detail).await {
        tracing::warn!(projection = %name, %error, "cannot record the rebuild's end");
    }
}

/// The schemas a rebuild uses: the service's, the rebuild's, and where the replaced tables go.
struct Schemas {
    live: String,
    work: String,
    previous: String,
}

async fn rebuild(runner: &ProjectionRunner, shutdown: &Shutdown) -> Result<String, RebuildError> {
    let name = runner.projection.name();
    let bounds = admin::archive_bounds(&runner.broker, &runner.archive.name).await?;
    let live = admin::status_of(&runner.pool, name).await?;
    if let Some(live) = &live {
        admin::history_check(live, &bounds).map_err(RebuildError::Refused)?;
    }
    let schemas = schemas(&runner.pool, name).await?;
    let work = prepare(runner, &schemas).await?;
    let result = fill(runner, &work, &bounds, shutdown).await;
    let result = match result {
        Ok(()) => switch(runner, &schemas).await,
        Err(error) => Err(error),
    };
    work.close().await;
    if result.is_err() {
        let _ = drop_schema(&runner.pool, &schemas.work).await;
    }
    result
}

async fn schemas(pool: &PgPool, name: &str) -> Result<Schemas, RebuildError> {
    let live: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(pool)
        .await?;
    let schemas = Schemas {
        work: format!("{live}_{name}_rebuild"),
        previous: format!("{live}_{name}_previous"),
        live,
    };
    if schemas.previous.len() > 63 {
        return Err(RebuildError::Refused(format!(
            "schema name {} is longer than PostgreSQL's 63 bytes: shorten the projection's name",
            schemas.previous
        )));
    }
    Ok(schemas)
}

/// A fresh schema for the rebuild, with the projection's tables, and a pool writing there
/// first (and reading the service's schema after, for tables the projection only reads).
async fn prepare(runner: &ProjectionRunner, schemas: &Schemas) -> Result<PgPool, RebuildError> {
    drop_schema(&runner.pool, &schemas.work).await?;
    // Schema names are the service's (checked when it connected) and the projection's
    // (checked when it was added): safe to splice.
    runner
        .pool
        .execute(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA \"{}\"",
            schemas.work
        )))
        .await?;
    let options = (*runner.pool.connect_options())
        .clone()
        .options([("search_path", format!("{},{}", schemas.work, schemas.live))]);
    let work = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await?;
    runner
        .projection
        .migrator()
        .run(&work)
        .await
        .map_err(|error| {
            RebuildError::Refused(format!("migrating the rebuild's tables: {error}"))
        })?;
    Ok(work)
}

/// Apply the whole archive into the rebuild's tables, until the rebuild has reached the live
/// checkpoint or the archive has nothing more.
async fn fill(
    runner: &ProjectionRunner,
    work: &PgPool,
    bounds: &ArchiveBounds,
    shutdown: &Shutdown,
) -> Result<(), RebuildError> {
    if bounds.first.is_none() {
        return Ok(());
    }
    let name = runner.projection.name();
    let mut reader = runner.open_reader(StartAt::First, shutdown).await?;
    let result = async {
        loop {
            let next = tokio::select! {
                () = shutdown.triggered() => return Err(RebuildError::Stopped),
                next = tokio::time::timeout(IDLE, reader.next()) => next,
            };
            let first = match next {
                Err(_) => return Ok(()),
                Ok(None) => {
                    return Err(RebuildError::Broker(BrokerError::Protocol {
                        operation: "archive consumer".to_owned(),
                        reason: "ended during the rebuild".to_owned(),
                    }));
                }
                Ok(Some(event)) => event?,
            };
            let mut events = vec![first];
            while events.len() < runner.config.batch_size {
                match reader.next_ready() {
                    Some(event) => events.push(event?),
                    None => break,
                }
            }
            let reached = apply(runner, work, &events).await?;
            reader.ack_read().await?;
            let live: Option<i64> =
                sqlx::query_scalar("SELECT position FROM msgkit_projections WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&runner.pool)
                    .await?
                    .flatten();
            if live.is_some_and(|live| reached >= live) {
                return Ok(());
            }
        }
    }
    .await;
    reader.close().await;
    result
}

async fn apply(
    runner: &ProjectionRunner,
    work: &PgPool,
    events: &[ArchivedEvent],
) -> Result<i64, RebuildError> {
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Ok(0);
    };
    let mut tx = work.begin().await?;
    for event in events {
        runner.projection.apply_event(&mut tx, event).await?;
    }
    let advance = Advance {
        first: offset_i64(first.offset),
        first_time: first.created_at,
        last: offset_i64(last.offset),
        last_event_at: last.created_at,
        events: i64::try_from(events.len()).unwrap_or(i64::MAX),
    };
    store::advance_rebuild(&mut tx, runner.projection.name(), &advance).await?;
    tx.commit().await?;
    Ok(advance.last)
}

/// Swap the rebuilt tables in and move the checkpoint, in one transaction, with the live loop
/// of this replica held off.
async fn switch(runner: &ProjectionRunner, schemas: &Schemas) -> Result<String, RebuildError> {
    let name = runner.projection.name();
    let migrations_table = format!("_{name}_projection_migrations");
    let _gate = runner.gate.lock().await;
    let mut tx = runner.pool.begin().await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = $1 AND tablename <> $2
          ORDER BY tablename",
    )
    .bind(&schemas.work)
    .bind(&migrations_table)
    .fetch_all(&mut *tx)
    .await?;
    let live_tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = $1 AND tablename = ANY($2)",
    )
    .bind(&schemas.live)
    .bind(&tables)
    .fetch_all(&mut *tx)
    .await?;
    // Table locks before the checkpoint's row lock: the order a batch takes them in.
    let (live, work, previous) = (&schemas.live, &schemas.work, &schemas.previous);
    let mut ddl = String::new();
    for table in &live_tables {
        ddl.push_str(&format!(
            "LOCK TABLE \"{live}\".\"{table}\" IN ACCESS EXCLUSIVE MODE;"
        ));
    }
    ddl.push_str(&format!(
        "DROP SCHEMA IF EXISTS \"{previous}\" CASCADE; CREATE SCHEMA \"{previous}\";"
    ));
    for table in &live_tables {
        ddl.push_str(&format!(
            "ALTER TABLE \"{live}\".\"{table}\" SET SCHEMA \"{previous}\";"
        ));
    }
    for table in &tables {
        ddl.push_str(&format!(
            "ALTER TABLE \"{work}\".\"{table}\" SET SCHEMA \"{live}\";"
        ));
    }
    // Table names come from the catalog, schema names were checked: safe to splice.
    tx.execute(sqlx::AssertSqlSafe(ddl)).await?;
    let position: Option<i64> = sqlx::query_scalar(
        "UPDATE msgkit_projections AS p
            SET position = r.position, started_from = r.started_from,
                started_from_time = r.started_from_time, applied = r.applied, lag_seconds = 0,
                updated_at = now()
           FROM msgkit_projection_rebuilds AS r
          WHERE p.name = $1 AND r.name = $1
      RETURNING p.position",
    )
    .bind(name)
    .fetch_one(&mut *tx)
    .await?;
    let detail = format!(
        "switched at offset {}; the replaced tables are kept in schema {previous} until the next rebuild",
        position.map_or_else(|| "none (empty archive)".to_owned(), |p| p.to_string())
    );
    sqlx::query(
        "UPDATE msgkit_projection_rebuilds SET state = 'done', detail = $2, finished_at = now()
          WHERE name = $1",
    )
    .bind(name)
    .bind(&detail)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    drop_schema(&runner.pool, work).await?;
    Ok(detail)
}

async fn drop_schema(pool: &PgPool, schema: &str) -> Result<(), sqlx::Error> {
    pool.execute(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .await?;
    Ok(())
}
