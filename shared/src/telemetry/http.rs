//! A server span for every HTTP request, continuing an incoming W3C `traceparent`.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::{context, spans};
use crate::trace_context::{TRACEPARENT, TraceParent};

/// Paths polled by orchestrators and scrapers: not worth a span each.
const UNTRACED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Axum middleware (`axum::middleware::from_fn(trace_request)`): one `server` span per request
/// named `METHOD /route`, the incoming `traceparent` continued, the status recorded.
pub async fn trace_request(request: Request, next: Next) -> Response {
    if UNTRACED.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| request.uri().path().to_owned());
    let method = request.method().as_str().to_owned();
    let span = spans::http_server(&method, &route);
    let incoming = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<TraceParent>().ok());
    let trace = context::continue_trace(&span, incoming);
    let response = context::scope(trace, next.run(request).instrument(span.clone())).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}
