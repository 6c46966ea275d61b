//! `POST /tokens`: an operator issues a token (a user's, for their alert stream, or another
//! operator's) without handing out the secret that signs them. The token is in the answer
//! only: never logged, never stored.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use msgkit::auth::{Claims, MAX_TOKEN_LIFETIME, Need, Role};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, InvalidField, authorize, json_body};

/// A token's lifetime when the request does not say.
const DEFAULT_TTL_SECS: u64 = 900;

/// Longest subject accepted (a user id or an operator's name).
const MAX_SUBJECT_LEN: usize = 200;

/// What to issue.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    subject: String,
    #[serde(default = "user")]
    role: Role,
    ttl_secs: Option<u64>,
}

fn user() -> Role {
    Role::User
}

/// The issued token. No `Debug`: it holds the token.
#[derive(Serialize)]
pub struct IssuedToken {
    token: String,
    subject: String,
    role: Role,
    expires_at: DateTime<Utc>,
}

/// 201 with a token for `subject` in `role` (default `user`), valid `ttl_secs` (default 900,
/// at most 3600); the answer must not be cached.
pub async fn issue(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let operator = authorize(&state, &headers, Need::Operator)?;
    let request = valid_request(body)?;
    let key = state.tokens.as_ref().ok_or(ApiError::NoTokenSecret)?;
    let ttl = request.ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
    if ttl == 0 || ttl > MAX_TOKEN_LIFETIME.num_seconds().unsigned_abs() {
        return Err(ApiError::Invalid(InvalidField::new(
            "ttl_secs",
            format!(
                "must be from 1 to {} seconds",
                MAX_TOKEN_LIFETIME.num_seconds()
            ),
        )));
    }
    let now = Utc::now();
    let lifetime = TimeDelta::seconds(i64::try_from(ttl).unwrap_or(i64::MAX));
    let claims = Claims::new(request.subject.clone(), request.role, now, lifetime);
    let token = key.issue(&claims);
    tracing::info!(
        operator = %operator.sub,
        subject = %request.subject,
        role = ?request.role,
        ttl_secs = ttl,
        "token issued"
    );
    let issued = IssuedToken {
        token,
        subject: request.subject,
        role: request.role,
        expires_at: DateTime::from_timestamp(claims.exp, 0).unwrap_or(now + lifetime),
    };
    let mut response = (StatusCode::CREATED, Json(issued)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn valid_request(body: Result<Bytes, BytesRejection>) -> Result<TokenRequest, ApiError> {
    let request: TokenRequest = json_body(body)?;
    let subject = request.subject.trim();
    if subject.is_empty() || subject.len() > MAX_SUBJECT_LEN {
        return Err(ApiError::Invalid(InvalidField::new(
            "subject",
            format!("must be 1 to {MAX_SUBJECT_LEN} characters"),
        )));
    }
    Ok(request)
}
