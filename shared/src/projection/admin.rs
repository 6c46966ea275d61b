//! What operators see and ask of projections: `msgkit projection status` and
//! `msgkit projection rebuild NAME` are built on these.
//!
//! A rebuild is asked for in the database (a row in `msgkit_projection_rebuilds`) and done by
//! the projection's active replica, which has the apply functions; the CLI waits for its state
//! to become `done`, `refused` or `failed`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::reader::{ArchiveReader, StartAt};
use crate::broker::{BrokerError, BrokerSettings};

/// How long [`archive_bounds`] waits for the archive's first event (an empty stream sends
/// nothing).
const PROBE: std::time::Duration = std::time::Duration::from_millis(700);

/// One projection's checkpoint, as `msgkit projection status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ProjectionStatus {
    /// The projection.
    pub name: String,
    /// Archive offset of the last event applied.
    pub position: Option<i64>,
    /// Where its history starts: the first event it applied.
    pub started_from: Option<i64>,
    /// That event's creation time.
    pub started_from_time: Option<DateTime<Utc>>,
    /// Creation time of the last event applied.
    pub last_event_at: Option<DateTime<Utc>>,
    /// Events applied.
    pub applied: i64,
    /// Seconds behind the archive when last reported (0: waiting for new events).
    pub lag_seconds: f64,
    /// The replica applying it.
    pub active_instance: Option<String>,
    /// When the active replica last reported.
    pub updated_at: DateTime<Utc>,
    /// The last rebuild asked for, if any.
    pub rebuild: Option<RebuildStatus>,
}

/// A rebuild's state.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RebuildStatus {
    /// `requested`, `running`, `done`, `refused` or `failed`.
    pub state: String,
    /// Why it was refused or failed, or where it switched.
    pub detail: Option<String>,
    /// When it was asked for.
    pub requested_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Offset the rebuild has applied up to.
    pub position: Option<i64>,
    /// Events it applied.
    pub applied: i64,
}

impl RebuildStatus {
    /// Whether it is over (done, refused or failed).
    pub fn is_finished(&self) -> bool {
        matches!(self.state.as_str(), "done" | "refused" | "failed")
    }
}

/// The oldest event the archive still holds, and where its last chunk starts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ArchiveBounds {
    /// Offset and creation time of the first retained event (`None`: empty).
    pub first: Option<(u64, DateTime<Utc>)>,
}

/// Every projection of the pool's schema.
pub async fn status(pool: &PgPool) -> Result<Vec<ProjectionStatus>, sqlx::Error> {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM msgkit_projections ORDER BY name")
            .fetch_all(pool)
            .await?;
    let mut all = Vec::with_capacity(names.len());
    for name in names {
        if let Some(status) = status_of(pool, &name).await? {
            all.push(status);
        }
    }
    Ok(all)
}

/// Projection `name`'s status, `None` when it never ran in the pool's schema.
pub async fn status_of(pool: &PgPool, name: &str) -> Result<Option<ProjectionStatus>, sqlx::Error> {
    type Row = (
        String,
        Option<i64>,
        Option<i64>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
        i64,
        f64,
        Option<String>,
        DateTime<Utc>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT name, position, started_from, started_from_time, last_event_at, applied,
                lag_seconds, active_instance, updated_at
           FROM msgkit_projections WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some(ProjectionStatus {
        name: row.0,
        position: row.1,
        started_from: row.2,
        started_from_time: row.3,
        last_event_at: row.4,
        applied: row.5,
        lag_seconds: row.6,
        active_instance: row.7,
        updated_at: row.8,
        rebuild: rebuild_status(pool, name).await?,
    }))
}

/// The last rebuild of `name`, if one was ever asked for.
pub async fn rebuild_status(
    pool: &PgPool,
    name: &str,
) -> Result<Option<RebuildStatus>, sqlx::Error> {
    type Row = (
        String,
        Option<String>,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        Option<i64>,
        i64,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT state, detail, requested_at, finished_at, position, applied
           FROM msgkit_projection_rebuilds WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| RebuildStatus {
        state: row.0,
        detail: row.1,
        requested_at: row.2,
        finished_at: row.3,
        position: row.4,
        applied: row.5,
    }))
}

/// Why a rebuild cannot be asked for.
#[derive(Debug, thiserror::Error)]
pub enum RebuildRequestError {
    /// No projection of that name ever ran in this schema.
    #[error("no projection named {0:?} in this schema (see `msgkit projection status`)")]
    Unknown(String),
    /// One is already requested or running.
    #[error("a rebuild of {0:?} is already {1}")]
    InProgress(String, String),
    /// The archive no longer holds the projection's whole history.
    #[error("{0}")]
    HistoryGone(String),
    /// The database failed.
    #[error("projection tables: {0}")]
    Database(#[from] sqlx::Error),
}

/// Ask the active replica of `name` to rebuild it, after checking that the archive (`bounds`)
/// still holds the projection's whole history.
pub async fn request_rebuild(
    pool: &PgPool,
    name: &str,
    bounds: &ArchiveBounds,
) -> Result<(), RebuildRequestError> {
    let Some(status) = status_of(pool, name).await? else {
        return Err(RebuildRequestError::Unknown(name.to_owned()));
    };
    history_check(&status, bounds).map_err(RebuildRequestError::HistoryGone)?;
    let requested = sqlx::query(
        "INSERT INTO msgkit_projection_rebuilds (name, state) VALUES ($1, 'requested')
         ON CONFLICT (name) DO UPDATE
            SET state = 'requested', detail = NULL, requested_at = now(), started_at = NULL,
                finished_at = NULL, position = NULL, started_from = NULL,
                started_from_time = NULL, applied = 0
          WHERE msgkit_projection_rebuilds.state NOT IN ('requested', 'running')",
    )
    .bind(name)
    .execute(pool)
    .await?;
    if requested.rows_affected() == 0 {
        let state = rebuild_status(pool, name)
            .await?
            .map_or_else(|| "in progress".to_owned(), |r| r.state);
        return Err(RebuildRequestError::InProgress(name.to_owned(), state));
    }
    Ok(())
}

/// `Err(why)` when a rebuild from the archive would lack part of the projection's history:
/// retention removed events the projection applied, so rebuilt tables would silently differ.
pub fn history_check(status: &ProjectionStatus, bounds: &ArchiveBounds) -> Result<(), String> {
    let Some(started_from) = status.started_from else {
        return Ok(());
    };
    let since = status
        .started_from_time
        .map_or_else(String::new, |t| format!(" ({})", t.to_rfc3339()));
    match bounds.first {
        None => Err(format!(
            "refusing to rebuild {}: its history starts at archive offset {started_from}{since}, \
             but the archive is empty now (retention removed it)",
            status.name
        )),
        Some((first, at)) if first > u64::try_from(started_from).unwrap_or(0) => Err(format!(
            "refusing to rebuild {}: its history starts at archive offset {started_from}{since}, \
             but the archive now starts at offset {first} ({}): retention removed the events \
             in between, and the rebuilt tables would silently lack them",
            status.name,
            at.to_rfc3339()
        )),
        Some(_) => Ok(()),
    }
}

/// The first event the archive `archive` still holds (a consumer from `first` that reads one
/// event, on a connection of its own).
pub async fn archive_bounds(
    broker: &BrokerSettings,
    archive: &str,
) -> Result<ArchiveBounds, BrokerError> {
    let connection = broker.connect().await?;
    let mut reader =
        ArchiveReader::open(connection, archive, StartAt::First, 1, "msgkit-bounds").await?;
    let first = tokio::time::timeout(PROBE, reader.next()).await;
    reader.close().await;
    let first = match first {
        Ok(Some(Ok(event))) => Some((event.offset, event.created_at)),
        Ok(Some(Err(error))) => return Err(error),
        Ok(None) | Err(_) => None,
    };
    Ok(ArchiveBounds { first })
}

/// A time for people, or `-`.
pub fn show_time(time: Option<DateTime<Utc>>) -> String {
    time.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339())
}
