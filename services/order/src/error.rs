//! API errors: each maps to a status and a JSON body `{"error": code, "message": ..., "field": ...}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use msgkit::http::Problem;

use crate::domain::{CancelRefusal, InvalidField};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not acceptable JSON for this endpoint (syntax, types, unknown or missing
    /// fields) or a value is invalid.
    #[error("{0}")]
    Invalid(InvalidField),
    /// The body is not JSON at all.
    #[error("{0}")]
    MalformedJson(String),
    /// The declared content type is not JSON.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// The body exceeds the limit.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The `Idempotency-Key` header is malformed.
    #[error("Idempotency-Key {0}")]
    InvalidIdempotencyKey(&'static str),
    /// The `Idempotency-Key` was used before with another request body.
    #[error("Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
    /// No such order (or not an order id).
    #[error("order not found")]
    NotFound,
    /// The order cannot be cancelled in its state (409, the code and message say why).
    #[error("{0}")]
    NotCancellable(CancelRefusal),
    /// The database cannot be reached right now; the request stored nothing and may be
    /// retried (with the same Idempotency-Key).
    #[error("the service is temporarily unavailable; retry later")]
    Unavailable(#[source] sqlx::Error),
    /// Too many accepted orders are not yet final: new ones are shed (503 + `Retry-After`,
    /// the reason in the body) until the backlog drains.
    #[error("too many orders are not yet final; retry later")]
    Overloaded(msgkit::admission::Overloaded),
    /// Something on our side failed; details are logged, not returned.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if msgkit::database::is_unavailable(&error) {
            Self::Unavailable(error)
        } else {
            Self::Internal(error.into())
        }
    }
}

impl From<msgkit::outbox::OutboxError> for ApiError {
    fn from(error: msgkit::outbox::OutboxError) -> Self {
        match error {
            msgkit::outbox::OutboxError::Database(error) => error.into(),
            other => Self::Internal(other.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let problem = match &self {
            Self::Invalid(invalid) => Problem::invalid(&invalid.field, &invalid.reason),
            Self::MalformedJson(_) => {
                Problem::new(StatusCode::BAD_REQUEST, "malformed_json", message)
            }
            Self::UnsupportedMediaType => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                message,
            ),
            Self::PayloadTooLarge { .. } => {
                Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
            }
            Self::InvalidIdempotencyKey(_) => {
                Problem::new(StatusCode::BAD_REQUEST, "invalid_idempotency_key", message)
                    .field("Idempotency-Key")
            }
            Self::IdempotencyKeyReused => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                message,
            )
            .field("Idempotency-Key"),
            Self::NotFound => Problem::new(StatusCode::NOT_FOUND, "not_found", message),
            Self::NotCancellable(refusal) => {
                Problem::new(StatusCode::CONFLICT, refusal.code(), message)
            }
            Self::Unavailable(error) => Problem::database(error),
            Self::Internal(error) => Problem::internal(error.as_ref()),
            // The kit's answer as it is: its reason, its Retry-After estimate.
            Self::Overloaded(overloaded) => return overloaded.clone().into_response(),
        };
        problem.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outbox_write_that_loses_the_database_is_unavailable_not_internal() {
        let lost = msgkit::outbox::OutboxError::Database(sqlx::Error::PoolTimedOut);
        let response = ApiError::from(lost).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            response
                .headers()
                .contains_key(axum::http::header::RETRY_AFTER)
        );
    }
}
