//! `GET /alerts`.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use msgkit::auth::{Need, Role};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ApiError, AppState, InvalidField, authorize};

/// Most alerts one `GET /alerts` returns: the newest.
const MAX_ALERTS: i64 = 500;

/// `GET /alerts` filters, both optional.
#[derive(Debug, Deserialize)]
pub struct AlertFilter {
    user: Option<String>,
    since: Option<String>,
}

/// One stored alert.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct AlertView {
    alert_id: Uuid,
    rule_id: i64,
    rule_version: i32,
    user_id: String,
    severity: String,
    transaction_ids: Vec<String>,
    at: DateTime<Utc>,
    created_at: DateTime<Utc>,
}

/// The newest alerts (at most [`MAX_ALERTS`]), of one user and stored after `since` when
/// given. A user's token shows that user's alerts only (asking for another's is 403); an
/// operator's shows everyone's, or the `user` asked for.
pub async fn alerts(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(mut filter): Query<AlertFilter>,
) -> Result<Json<Vec<AlertView>>, ApiError> {
    let claims = match filter.user.as_deref() {
        Some(user) => authorize(&state, &headers, Need::ReadOf(user))?,
        None => authorize(&state, &headers, Need::Any)?,
    };
    if claims.role == Role::User {
        filter.user = Some(claims.sub);
    }
    let since = filter
        .since
        .as_deref()
        .map(|since| {
            DateTime::parse_from_rfc3339(since)
                .map(|since| since.with_timezone(&Utc))
                .map_err(|e| {
                    ApiError::Invalid(InvalidField::new(
                        "since",
                        format!("must be an RFC 3339 time: {e}"),
                    ))
                })
        })
        .transpose()?;
    let alerts = sqlx::query_as(
        "SELECT alert_id, rule_id, rule_version, user_id, severity, transaction_ids, at, created_at \
         FROM alerts WHERE ($1::text IS NULL OR user_id = $1) AND ($2::timestamptz IS NULL OR created_at > $2) \
         ORDER BY created_at DESC, alert_id DESC LIMIT $3",
    )
    .bind(filter.user)
    .bind(since)
    .bind(MAX_ALERTS)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(alerts))
}
