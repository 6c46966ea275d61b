//! `/rules`: rules as data. A write compiles the rule first (a bad one is refused with 400
//! naming the field and, for an expression, the position) and makes a new version; the
//! consumer reads the rules in each event's transaction, so a change applies to every event
//! handled after the response.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use msgkit::auth::Need;

use super::{ApiError, AppState, authorize, json_body};
use crate::rule_store::{self, RuleWithAlerts, StoredRule};
use crate::{RuleId, RuleSpec, compile};

/// Every version of every rule, each with `alerts`: how many it has raised (a rule's count is
/// the sum over its versions).
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<RuleWithAlerts>>, ApiError> {
    authorize(&state, &headers, Need::Operator)?;
    let mut conn = state.pool.acquire().await?;
    Ok(Json(rule_store::all_with_alert_counts(&mut conn).await?))
}

/// A new rule, version 1, enabled: 201 with the stored rule.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<StoredRule>), ApiError> {
    let operator = authorize(&state, &headers, Need::Operator)?;
    let spec = valid_spec(body).await?;
    let mut tx = state.pool.begin().await?;
    let rule = rule_store::create(&mut tx, &spec).await?;
    tx.commit().await?;
    tracing::info!(rule_id = rule.id, operator = %operator.sub, "rule created");
    Ok((StatusCode::CREATED, Json(rule)))
}

/// A new version of rule `id`: it decides on every event handled after the response, and
/// partial matches started under an older version finish under that one.
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<RuleId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<StoredRule>, ApiError> {
    let operator = authorize(&state, &headers, Need::Operator)?;
    let spec = valid_spec(body).await?;
    let mut tx = state.pool.begin().await?;
    let rule = rule_store::new_version(&mut tx, id, &spec)
        .await?
        .ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    tracing::info!(rule_id = rule.id, version = rule.version, operator = %operator.sub, "rule edited");
    Ok(Json(rule))
}

/// `DELETE /rules/{id}` and `POST /rules/{id}/disable`: the rule raises nothing for events
/// handled afterwards. Its versions stay, since alerts name them.
pub async fn disable(
    State(state): State<AppState>,
    Path(id): Path<RuleId>,
    headers: HeaderMap,
) -> Result<Json<StoredRule>, ApiError> {
    set_enabled(&state, &headers, id, false).await
}

/// `POST /rules/{id}/enable`.
pub async fn enable(
    State(state): State<AppState>,
    Path(id): Path<RuleId>,
    headers: HeaderMap,
) -> Result<Json<StoredRule>, ApiError> {
    set_enabled(&state, &headers, id, true).await
}

async fn set_enabled(
    state: &AppState,
    headers: &HeaderMap,
    id: RuleId,
    enabled: bool,
) -> Result<Json<StoredRule>, ApiError> {
    let operator = authorize(state, headers, Need::Operator)?;
    let mut tx = state.pool.begin().await?;
    let rule = rule_store::set_enabled(&mut tx, id, enabled)
        .await?
        .ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    tracing::info!(rule_id = id, enabled, operator = %operator.sub, "rule switched");
    Ok(Json(rule))
}

/// The body as a rule the engine compiles: 422 for a body of the wrong shape (naming the
/// field, as everywhere in the API), 400 for a rule that does not compile.
async fn valid_spec(body: Result<Bytes, BytesRejection>) -> Result<RuleSpec, ApiError> {
    let spec: RuleSpec = json_body(body)?;
    // Parsing runs on a thread of its own with a large stack and is joined: keep that wait
    // off the runtime's workers.
    let checked = spec.clone();
    tokio::task::spawn_blocking(move || compile(&checked))
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .map_err(ApiError::InvalidRule)?;
    Ok(spec)
}
