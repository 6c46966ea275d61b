//! `GET /reconciliation` and `GET /reconciliation/summary`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ApiError, AppState, operator_only};
use crate::join::Outcome;

/// Most rows one `GET /reconciliation` returns: the most recently changed.
pub const MAX_ROWS: i64 = 1000;

/// The statuses `?status=` takes besides the outcomes' names.
const STATUSES: [&str; 3] = ["matched", "open", "resolved"];

/// `GET /reconciliation` filters, both optional.
#[derive(Debug, Deserialize)]
pub struct Filter {
    status: Option<String>,
    since: Option<String>,
}

/// One order's reconciliation.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow)]
pub struct ReconciliationView {
    /// The order.
    pub order_id: Uuid,
    /// The latest outcome.
    pub outcome: String,
    /// `matched`, `open` (an unresolved mismatch) or `resolved`.
    pub status: String,
    /// `succeeded` or `failed`, when our side came.
    pub app_outcome: Option<String>,
    /// Our side's amount, when known.
    pub app_amount_cents: Option<i64>,
    /// `success` or `declined`, when the gateway called back.
    pub gateway_outcome: Option<String>,
    /// The gateway's amount.
    pub gateway_amount_cents: Option<i64>,
    /// The gateway's callback id.
    pub callback_id: Option<String>,
    /// When the first side was handled.
    pub first_seen_at: DateTime<Utc>,
    /// The first decision.
    pub decided_at: DateTime<Utc>,
    /// The latest change.
    pub updated_at: DateTime<Utc>,
    /// First side to agreement, for matches and late matches.
    pub time_to_match_ms: Option<i64>,
    /// Every transition, oldest first: `{outcome, previous, at}`.
    #[sqlx(json)]
    pub history: serde_json::Value,
}

/// The reconciliations changed after `since` (RFC 3339) with this `status` (`matched`, `open`,
/// `resolved`, or an outcome such as `third-party-missing`), the most recent first, at most
/// [`MAX_ROWS`].
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(filter): Query<Filter>,
) -> Result<Json<Vec<ReconciliationView>>, ApiError> {
    operator_only(&state, &headers)?;
    let since = filter
        .since
        .as_deref()
        .map(|since| {
            DateTime::parse_from_rfc3339(since)
                .map(|since| since.with_timezone(&Utc))
                .map_err(|e| ApiError::Invalid {
                    field: "since",
                    reason: format!("must be an RFC 3339 time: {e}"),
                })
        })
        .transpose()?;
    if let Some(status) = filter.status.as_deref() {
        let known = STATUSES.contains(&status) || Outcome::ALL.iter().any(|o| o.as_str() == status);
        if !known {
            return Err(ApiError::Invalid {
                field: "status",
                reason: "must be matched, open, resolved or an outcome name".to_owned(),
            });
        }
    }
    let rows = sqlx::query_as(
        "SELECT r.order_id, r.outcome, r.status, r.app_outcome, r.app_amount_cents, \
                r.gateway_outcome, r.gateway_amount_cents, r.callback_id, r.first_seen_at, \
                r.decided_at, r.updated_at, r.time_to_match_ms, \
                (SELECT coalesce(jsonb_agg(jsonb_build_object('outcome', h.outcome, \
                        'previous', h.previous, 'at', h.at) ORDER BY h.id), '[]'::jsonb) \
                 FROM reconciliation_history h WHERE h.order_id = r.order_id) AS history \
         FROM reconciliations r \
         WHERE ($1::text IS NULL OR r.status = $1 OR r.outcome = $1) \
           AND ($2::timestamptz IS NULL OR r.updated_at > $2) \
         ORDER BY r.updated_at DESC, r.order_id LIMIT $3",
    )
    .bind(filter.status)
    .bind(since)
    .bind(MAX_ROWS)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(rows))
}

/// `GET /reconciliation/summary`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Summary {
    /// Orders decided.
    pub total: i64,
    /// Orders by their latest outcome (every outcome listed, 0 when none).
    pub by_outcome: BTreeMap<String, i64>,
    /// Mismatches not resolved.
    pub open_mismatches: i64,
    /// Mismatches resolved by a late side.
    pub resolved: i64,
    /// Matched or late-matched orders over all decided ones (`null` when none).
    pub match_rate: Option<f64>,
    /// Median first side to second, in ms, of orders matched within the window.
    pub time_to_match_p50_ms: Option<f64>,
    /// 99th percentile of the same.
    pub time_to_match_p99_ms: Option<f64>,
}

/// Counts by outcome, the match rate and the time to match.
pub async fn summary(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Summary>, ApiError> {
    operator_only(&state, &headers)?;
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT outcome, count(*) FROM reconciliations GROUP BY outcome")
            .fetch_all(&state.pool)
            .await?;
    let (p50, p99): (Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY time_to_match_ms), \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY time_to_match_ms) \
         FROM reconciliations WHERE outcome = 'matched'",
    )
    .fetch_one(&state.pool)
    .await?;
    let mut by_outcome: BTreeMap<String, i64> = Outcome::ALL
        .iter()
        .map(|outcome| (outcome.as_str().to_owned(), 0))
        .collect();
    by_outcome.extend(counts);
    let count = |outcome: Outcome| by_outcome.get(outcome.as_str()).copied().unwrap_or(0);
    let total: i64 = by_outcome.values().sum();
    let matched = count(Outcome::Matched) + count(Outcome::LateMatch);
    let resolved = count(Outcome::LateMatch);
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let match_rate = (total > 0).then(|| matched as f64 / total as f64);
    Ok(Json(Summary {
        total,
        open_mismatches: total - matched,
        resolved,
        match_rate,
        time_to_match_p50_ms: p50,
        time_to_match_p99_ms: p99,
        by_outcome,
    }))
}
