//! `GET /reconciliation` and `GET /reconciliation/summary`, proxied to the reconcile service
//! for the page's reconciliation section.
//!
//! Why a proxy rather than CORS on reconcile: the page stays same-origin (its policy keeps
//! `connect-src 'self'`, no other origin to trust), and whatever the page holds stays on risk's
//! origin. The proxy forwards the query string as is and passes reconcile's answer through
//! (its status and JSON body, a 422 included); when reconcile cannot be reached in time it
//! answers 503 `reconcile_unavailable` (502 `reconcile_bad_answer` when it answers but the
//! answer cannot be read), which the page shows as "unreachable".

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use msgkit::auth::Need;
use msgkit::config::{ConfigError, Lookup};
use msgkit::service::ServiceSettings;

use super::{ApiError, AppState, authorize};

/// Where reconcile answers by default (its port in the design).
pub const DEFAULT_RECONCILE_URL: &str = "http://127.0.0.1:8085";
/// How long the proxy waits for reconcile by default: the page refreshes every 2 s.
pub const DEFAULT_RECONCILE_TIMEOUT: Duration = Duration::from_secs(2);

/// The reconcile service as risk reaches it.
#[derive(Clone, Debug)]
pub struct ReconcileClient {
    client: reqwest::Client,
    base: String,
}

impl ReconcileClient {
    /// `<SERVICE>_RECONCILE_URL` (default [`DEFAULT_RECONCILE_URL`]) and
    /// `<SERVICE>_RECONCILE_TIMEOUT_MS` (default [`DEFAULT_RECONCILE_TIMEOUT`]): for risk,
    /// `RISK_RECONCILE_URL` and `RISK_RECONCILE_TIMEOUT_MS`. Only the prefixed names: an
    /// unprefixed `RECONCILE_*` reads as one of reconcile's own settings.
    pub fn from_settings(settings: &ServiceSettings, service: &str) -> Result<Self, ConfigError> {
        let prefix = msgkit::config::env_prefix(service);
        let base = settings
            .source
            .get(&format!("{prefix}_RECONCILE_URL"))
            .unwrap_or(DEFAULT_RECONCILE_URL)
            .trim_end_matches('/')
            .to_owned();
        let invalid = |reason: String| ConfigError {
            name: format!("{prefix}_RECONCILE_URL"),
            value: base.clone(),
            reason,
        };
        let url = reqwest::Url::parse(&base).map_err(|e| invalid(e.to_string()))?;
        if url.scheme() != "http" {
            // The client is built without TLS: reconcile is reached on the local network.
            return Err(invalid("must be an http:// URL".to_owned()));
        }
        let timeout = settings.source.millis(
            &format!("{prefix}_RECONCILE_TIMEOUT_MS"),
            DEFAULT_RECONCILE_TIMEOUT,
        )?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| invalid(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { client, base })
    }

    /// `GET <base><path>?<query>`, passed through; `Err` when reconcile did not answer.
    #[tracing::instrument(skip_all, fields(path = %path))]
    /// `GET path?query` on reconcile, passing on the operator's `Authorization` (reconcile
    /// checks it too: its API is for operators, whoever asks).
    async fn get(
        &self,
        path: &str,
        query: Option<String>,
        authorization: Option<&HeaderValue>,
    ) -> Result<Response, ApiError> {
        let mut url = format!("{}{path}", self.base);
        if let Some(query) = query.filter(|q| !q.is_empty()) {
            url.push('?');
            url.push_str(&query);
        }
        let unavailable = |error| ApiError::ReconcileUnavailable {
            url: self.base.clone(),
            error,
        };
        let mut request = self.client.get(&url);
        if let Some(authorization) = authorization {
            request = request.header(header::AUTHORIZATION, authorization.clone());
        }
        let answer = request.send().await.map_err(unavailable)?;
        let status = StatusCode::from_u16(answer.status().as_u16())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = answer.headers().get(header::RETRY_AFTER).cloned();
        let body = answer
            .bytes()
            .await
            .map_err(|error| ApiError::ReconcileBadAnswer {
                url: self.base.clone(),
                error,
            })?;
        let mut response = (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        if let Some(retry_after) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after);
        }
        Ok(response)
    }
}

/// `GET /reconciliation?status=&since=`: reconcile's list.
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(denied) = authorize(&state, &headers, Need::Operator) {
        return denied.into_response();
    }
    state
        .reconcile
        .get("/reconciliation", query, headers.get(header::AUTHORIZATION))
        .await
        .into_response()
}

/// `GET /reconciliation/summary`: reconcile's summary.
pub async fn summary(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(denied) = authorize(&state, &headers, Need::Operator) {
        return denied.into_response();
    }
    state
        .reconcile
        .get(
            "/reconciliation/summary",
            None,
            headers.get(header::AUTHORIZATION),
        )
        .await
        .into_response()
}
