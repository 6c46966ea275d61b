//! API errors, in the order API's shape: a status and `{"error": code, "message", "field"}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query parameter is invalid (422): its name and why.
    #[error("{field}: {reason}")]
    Invalid {
        /// The parameter's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The database cannot be reached right now (503).
    #[error("the service is temporarily unavailable; retry later")]
    Unavailable(#[source] sqlx::Error),
    /// Something on our side failed; details are logged, not returned (500).
    #[error("internal error")]
    Internal(#[source] sqlx::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if msgkit::database::is_unavailable(&error) {
            Self::Unavailable(error)
        } else {
            Self::Internal(error)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            Self::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            Self::Unavailable(error) => {
                tracing::warn!(%error, "database unavailable");
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            Self::Internal(error) => {
                tracing::error!(%error, "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        let body = match &self {
            Self::Invalid { field, reason } => {
                json!({"error": code, "field": field, "message": reason})
            }
            _ => json!({"error": code, "message": self.to_string()}),
        };
        let mut response = (status, Json(body)).into_response();
        if matches!(self, Self::Unavailable(_)) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
