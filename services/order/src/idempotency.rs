//! `Idempotency-Key` on `POST /orders`: a retried request gets the first response; the same
//! key with a different body is refused. The key is saved in the same transaction as the
//! order, so a response is replayed only for an order that exists.

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use sqlx::{PgConnection, Row};

use crate::error::ApiError;

/// Header name.
pub const HEADER: &str = "idempotency-key";

/// A client-chosen key: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The header's key, `None` without the header, an error when it is malformed.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, ApiError> {
        let Some(value) = headers.get(HEADER) else {
            return Ok(None);
        };
        let value = value
            .to_str()
            .map_err(|_| ApiError::InvalidIdempotencyKey("must be visible ASCII"))?;
        if value.is_empty() || value.len() > 255 {
            return Err(ApiError::InvalidIdempotencyKey(
                "must be 1 to 255 characters",
            ));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::InvalidIdempotencyKey("must be visible ASCII"));
        }
        Ok(Some(Self(value.to_owned())))
    }
}

/// A response saved under a key.
#[derive(Debug, Clone)]
pub struct SavedResponse {
    /// Its status.
    pub status: StatusCode,
    /// Its JSON body.
    pub body: Value,
}

/// The response saved for `key`, if the same request was made before; an error if the key was
/// used with another request.
pub async fn saved_response(
    conn: &mut PgConnection,
    key: &IdempotencyKey,
    request: &Value,
) -> Result<Option<SavedResponse>, ApiError> {
    let row = sqlx::query(
        "SELECT request = $2 AS same_request, response_status, response_body \
         FROM idempotency_keys WHERE key = $1",
    )
    .bind(&key.0)
    .bind(request)
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    if !row.try_get::<bool, _>("same_request")? {
        return Err(ApiError::IdempotencyKeyReused);
    }
    let status: i16 = row.try_get("response_status")?;
    Ok(Some(SavedResponse {
        status: u16::try_from(status)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::ACCEPTED),
        body: row.try_get("response_body")?,
    }))
}

/// Save the response under `key` in the caller's transaction. Returns `false` if a concurrent
/// request with the same key committed first; the caller then rolls back and replays that one.
pub async fn save_response(
    conn: &mut PgConnection,
    key: &IdempotencyKey,
    request: &Value,
    response: &SavedResponse,
) -> Result<bool, ApiError> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (key, request, response_status, response_body) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING",
    )
    .bind(&key.0)
    .bind(request)
    .bind(i16::try_from(response.status.as_u16()).unwrap_or(202))
    .bind(&response.body)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}
