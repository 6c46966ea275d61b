//! `/rules`: rules as data. A write compiles the rule first (a bad one is refused with 400
//! naming the field and, for an expression, the position) and makes a new version; the
//! consumer reads the rules in each event's transaction, so a change applies to every event
//! handled after the response.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::Value;

use super::{ApiError, AppState, InvalidField};
use crate::rule_store::{self, RuleWithAlerts, StoredRule};
use crate::{RuleId, RuleSpec, compile};

/// Every version of every rule, each with `alerts`: how many it has raised (a rule's count is
/// the sum over its versions).
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<RuleWithAlerts>>, ApiError> {
    let mut conn = state.pool.acquire().await?;
    Ok(Json(rule_store::all_with_alert_counts(&mut conn).await?))
}

/// A new rule, version 1, enabled: 201 with the stored rule.
pub async fn create(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<StoredRule>), ApiError> {
    let spec = valid_spec(body).await?;
    let mut tx = state.pool.begin().await?;
    let rule = rule_store::create(&mut tx, &spec).await?;
    tx.commit().await?;
    tracing::info!(rule_id = rule.id, "rule created");
    Ok((StatusCode::CREATED, Json(rule)))
}

/// A new version of rule `id`: it decides on every event handled after the response, and
/// partial matches started under an older version finish under that one.
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<RuleId>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<StoredRule>, ApiError> {
    let spec = valid_spec(body).await?;
    let mut tx = state.pool.begin().await?;
    let rule = rule_store::new_version(&mut tx, id, &spec)
        .await?
        .ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    tracing::info!(rule_id = rule.id, version = rule.version, "rule edited");
    Ok(Json(rule))
}

/// `DELETE /rules/{id}` and `POST /rules/{id}/disable`: the rule raises nothing for events
/// handled afterwards. Its versions stay, since alerts name them.
pub async fn disable(
    State(state): State<AppState>,
    Path(id): Path<RuleId>,
) -> Result<Json<StoredRule>, ApiError> {
    set_enabled(&state, id, false).await
}

/// `POST /rules/{id}/enable`.
pub async fn enable(
    State(state): State<AppState>,
    Path(id): Path<RuleId>,
) -> Result<Json<StoredRule>, ApiError> {
    set_enabled(&state, id, true).await
}

async fn set_enabled(
    state: &AppState,
    id: RuleId,
    enabled: bool,
) -> Result<Json<StoredRule>, ApiError> {
    let mut tx = state.pool.begin().await?;
    let rule = rule_store::set_enabled(&mut tx, id, enabled)
        .await?
        .ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    tracing::info!(rule_id = id, enabled, "rule switched");
    Ok(Json(rule))
}

/// The body as a rule the engine compiles: 422 for a body of the wrong shape (naming the
/// field, as everywhere in the API), 400 for a rule that does not compile.
async fn valid_spec(body: Result<Bytes, BytesRejection>) -> Result<RuleSpec, ApiError> {
    let body = body.map_err(|rejection| ApiError::MalformedJson(rejection.body_text()))?;
    let raw: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::MalformedJson(format!("body is not valid JSON: {e}")))?;
    let spec: RuleSpec = serde_path_to_error::deserialize(&raw).map_err(|error| {
        let message = error.inner().to_string();
        let field = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .map_or_else(|| error.path().to_string(), str::to_owned);
        ApiError::Invalid(InvalidField::new(field, message))
    })?;
    // Parsing runs on a thread of its own with a large stack and is joined: keep that wait
    // off the runtime's workers.
    let checked = spec.clone();
    tokio::task::spawn_blocking(move || compile(&checked))
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .map_err(ApiError::InvalidRule)?;
    Ok(spec)
}
