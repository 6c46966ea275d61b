//! The projection tables' SQL: checkpoints, the lead's advisory lock, rebuild requests.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

/// A projection's checkpoint as its active replica reads it when it takes the lead.
#[derive(Clone, Debug, Default)]
pub(super) struct Checkpoint {
    /// Offset of the last event applied.
    pub(super) position: Option<i64>,
}

/// What a committed batch moves the checkpoint to.
#[derive(Clone, Debug)]
pub(super) struct Advance {
    pub(super) first: i64,
    pub(super) first_time: DateTime<Utc>,
    pub(super) last: i64,
    pub(super) last_event_at: DateTime<Utc>,
    pub(super) events: i64,
}

/// The advisory lock key of projection `name` in the connection's schema: two services may
/// have projections of the same name in one database.
const LOCK_KEY: &str = "hashtextextended('msgkit.projection:' || current_schema() || ':' || $1, 0)";

/// Take the lead of `name` if nobody holds it, on `connection` (a session lock: it is held
/// until released or the connection ends, which is what a dead replica's does).
pub(super) async fn try_lead(
    connection: &mut PgConnection,
    name: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT pg_try_advisory_lock({LOCK_KEY})"
    )))
    .bind(name)
    .fetch_one(connection)
    .await
}

/// The checkpoint of `name`, created empty the first time.
pub(super) async fn checkpoint(pool: &PgPool, name: &str) -> Result<Checkpoint, sqlx::Error> {
    sqlx::query("INSERT INTO msgkit_projections (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .execute(pool)
        .await?;
    let position: Option<i64> =
        sqlx::query_scalar("SELECT position FROM msgkit_projections WHERE name = $1")
            .bind(name)
            .fetch_one(pool)
            .await?;
    Ok(Checkpoint { position })
}

/// Move the checkpoint of `name` from `expected` to the batch's last offset, in the batch's
/// transaction. `false` when the checkpoint is no longer at `expected`: another replica took
/// over, or a rebuild switched the tables, and this batch must be rolled back.
pub(super) async fn advance(
    tx: &mut PgConnection,
    name: &str,
    expected: Option<i64>,
    batch: &Advance,
    lag_seconds: f64,
    instance: &str,
) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query(
        "UPDATE msgkit_projections
            SET position = $3,
                started_from = COALESCE(started_from, $4),
                started_from_time = COALESCE(started_from_time, $5),
                last_event_at = $6,
                applied = applied + $7,
                lag_seconds = $8,
                active_instance = $9,
                updated_at = now()
          WHERE name = $1 AND position IS NOT DISTINCT FROM $2",
    )
    .bind(name)
    .bind(expected)
    .bind(batch.last)
    .bind(batch.first)
    .bind(batch.first_time)
    .bind(batch.last_event_at)
    .bind(batch.events)
    .bind(lag_seconds)
    .bind(instance)
    .execute(tx)
    .await?;
    Ok(moved.rows_affected() == 1)
}

/// The active replica is alive: what `msgkit projection status` shows between batches.
pub(super) async fn heartbeat(
    pool: &PgPool,
    name: &str,
    lag_seconds: f64,
    instance: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE msgkit_projections SET lag_seconds = $2, active_instance = $3, updated_at = now()
          WHERE name = $1",
    )
    .bind(name)
    .bind(lag_seconds)
    .bind(instance)
    .execute(pool)
    .await?;
    Ok(())
}

/// Take a requested rebuild of `name` (or one left running by a replica that lost the lead):
/// `true` when there is one to do now, marked running.
pub(super) async fn claim_rebuild(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    let claimed = sqlx::query(
        "UPDATE msgkit_projection_rebuilds
            SET state = 'running', started_at = now(), finished_at = NULL, detail = NULL,
                position = NULL, started_from = NULL, started_from_time = NULL, applied = 0
          WHERE name = $1 AND state IN ('requested', 'running')",
    )
    .bind(name)
    .execute(pool)
    .await?;
    Ok(claimed.rows_affected() == 1)
}

/// End the rebuild of `name` as `state` (`refused`, `failed`) with `detail`.
pub(super) async fn end_rebuild(
    pool: &PgPool,
    name: &str,
    state: &str,
    detail: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE msgkit_projection_rebuilds SET state = $2, detail = $3, finished_at = now()
          WHERE name = $1",
    )
    .bind(name)
    .bind(state)
    .bind(detail)
    .execute(pool)
    .await?;
    Ok(())
}

/// Record a rebuild batch, in its transaction (whose search path reaches the service's schema
/// after the rebuild's).
pub(super) async fn advance_rebuild(
    tx: &mut PgConnection,
    name: &str,
    batch: &Advance,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE msgkit_projection_rebuilds
            SET position = $2,
                started_from = COALESCE(started_from, $3),
                started_from_time = COALESCE(started_from_time, $4),
                applied = applied + $5
          WHERE name = $1",
    )
    .bind(name)
    .bind(batch.last)
    .bind(batch.first)
    .bind(batch.first_time)
    .bind(batch.events)
    .execute(tx)
    .await?;
    Ok(())
}
