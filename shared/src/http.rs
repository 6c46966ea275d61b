//! How a service's HTTP API answers an error, the same way in every service: a status, a JSON
//! body `{"error": code, "message": ..., "field": ...}` (plus what a service adds, e.g. a
//! line and column), `Retry-After` when retrying can help, and a log line for what the caller
//! is not told. A service keeps its own error enum (its variants are its API's vocabulary) and
//! turns each variant into a [`Problem`].

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

/// One error answer.
#[derive(Clone, Debug)]
pub struct Problem {
    status: StatusCode,
    body: Map<String, Value>,
    /// `Retry-After` in whole seconds, when retrying can help.
    retry_after: Option<u64>,
    authenticate: Option<&'static str>,
}

impl Problem {
    /// `status` with the machine-readable `code` and a `message` for people. A 503 says
    /// `Retry-After: 1` unless [`Problem::not_retryable`] says otherwise.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        let mut body = Map::new();
        body.insert("error".to_owned(), code.into());
        body.insert("message".to_owned(), message.into().into());
        Self {
            status,
            body,
            retry_after: (status == StatusCode::SERVICE_UNAVAILABLE).then_some(1),
            authenticate: None,
        }
    }

    /// 422 `validation_failed`, naming the request's `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            reason,
        )
        .field(field)
    }

    /// 401 `unauthorized`, with `WWW-Authenticate: <challenge>` (e.g. `Bearer realm="risk"`).
    pub fn unauthorized(challenge: &'static str, message: impl Into<String>) -> Self {
        let mut problem = Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
        problem.authenticate = Some(challenge);
        problem
    }

    /// 500 `internal`: `error` is logged with its causes and not returned.
    pub fn internal(error: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %Chain(error), "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    /// A failed statement: 503 `unavailable` (with `Retry-After`) when the database cannot be
    /// reached right now (a restart, a lost connection, an exhausted pool: nothing was stored,
    /// the same request may work in a moment), else [`Problem::internal`].
    pub fn database(error: &sqlx::Error) -> Self {
        if crate::database::is_unavailable(error) {
            tracing::warn!(%error, "database unavailable");
            Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the service is temporarily unavailable; retry later",
            )
        } else {
            Self::internal(error)
        }
    }

    /// The request's field the error is about.
    pub fn field(self, field: impl Into<String>) -> Self {
        self.with("field", field.into())
    }

    /// Another member of the body (e.g. `line`, `column`).
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.body.insert(name.to_owned(), value.into());
        self
    }

    /// No `Retry-After` on this 503: retrying does not help (a setting is missing).
    pub fn not_retryable(mut self) -> Self {
        self.retry_after = None;
        self
    }

    /// `Retry-After: <seconds>` (at least 1), e.g. an estimate of when a backlog has drained.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// The status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(Value::Object(self.body))).into_response();
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(challenge) = self.authenticate {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// An error with its causes, `: `-separated, for the log line.
struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// Where a Server-Sent Events client resumes: the `Last-Event-ID` header (what a browser's
/// `EventSource` sends when it reconnects), else `last_event_id` from the query (for a client
/// that cannot set headers), else `Ok(None)`. An id that is not a whole number, 0 or more, is
/// `Err` with the name of the field it came in, for the service to answer 400 with its own
/// words for what the id is.
pub fn last_event_id(
    headers: &axum::http::HeaderMap,
    query: Option<&str>,
) -> Result<Option<i64>, &'static str> {
    let (field, value) = match headers.get("last-event-id") {
        Some(value) => ("Last-Event-ID", value.to_str().unwrap_or("?")),
        None => match query {
            Some(value) => ("last_event_id", value),
            None => return Ok(None),
        },
    };
    value
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|id| *id >= 0)
        .map(Some)
        .ok_or(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(response: Response) -> Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn an_invalid_field_is_422_naming_it() {
        let response = Problem::invalid("amount", "must have two decimal places").into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(!response.headers().contains_key(header::RETRY_AFTER));
        assert_eq!(
            body(response).await,
            serde_json::json!({"error": "validation_failed", "field": "amount", "message": "must have two decimal places"})
        );
    }

    #[tokio::test]
    async fn a_lost_database_is_503_with_retry_after_and_other_failures_500_without_details() {
        let response = Problem::database(&sqlx::Error::PoolTimedOut).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let response = Problem::database(&sqlx::Error::RowNotFound).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body(response).await,
            serde_json::json!({"error": "internal", "message": "internal error"})
        );
    }

    #[tokio::test]
    async fn a_missing_setting_is_503_without_retry_after_and_401_challenges() {
        let response = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "no_secret", "no secret")
            .not_retryable()
            .into_response();
        assert!(!response.headers().contains_key(header::RETRY_AFTER));
        let response = Problem::unauthorized("Bearer realm=\"risk\"", "expired").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"risk\""
        );
    }

    #[test]
    fn a_resume_point_comes_from_the_header_else_the_query() {
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(last_event_id(&headers, None), Ok(None));
        assert_eq!(last_event_id(&headers, Some("7")), Ok(Some(7)));
        headers.insert("last-event-id", HeaderValue::from_static(" 12 "));
        assert_eq!(
            last_event_id(&headers, Some("7")),
            Ok(Some(12)),
            "the header wins"
        );
        headers.insert("last-event-id", HeaderValue::from_static("-1"));
        assert_eq!(last_event_id(&headers, None), Err("Last-Event-ID"));
        assert_eq!(
            last_event_id(&axum::http::HeaderMap::new(), Some("x")),
            Err("last_event_id")
        );
    }
}
