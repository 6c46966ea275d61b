//! A server span for every HTTP request, continuing an incoming W3C `traceparent`.
//!
//! The span records the route and the query string, never a credential: a browser's
//! `EventSource` cannot send headers, so a token may travel as an `access_token` query
//! parameter (RFC 6750 §2.3), and [`redact_query`] replaces its value before the query is
//! recorded (every log line inside the request carries the span's fields).

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::{context, spans};
use crate::trace_context::{TRACEPARENT, TraceParent};

/// Query parameters whose values are credentials: recorded as [`REDACTED`].
const SECRET_PARAMETERS: [&str; 1] = ["access_token"];

/// What a secret parameter's value is recorded as.
pub const REDACTED: &str = "REDACTED";

/// `query` with the value of every credential parameter (`access_token`, however encoded)
/// replaced by [`REDACTED`]; the other parameters stay as they came.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            let decoded = percent_decode(name);
            if SECRET_PARAMETERS
                .iter()
                .any(|secret| decoded.eq_ignore_ascii_case(secret))
            {
                format!("{name}={REDACTED}")
            } else {
                pair.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A parameter name as a server would read it (`%61ccess_token`, `access+token` stay what
/// they are in the query but compare decoded). Invalid escapes are kept as they are.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

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
    if let Some(query) = request.uri().query() {
        span.record("url.query", redact_query(query));
    }
    let incoming = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<TraceParent>().ok());
    let trace = context::continue_trace(&span, incoming);
    let response = context::scope(trace, next.run(request).instrument(span.clone())).await;
    // An `i64`: an unsigned value would be exported as a string (see `spans`).
    span.record(
        "http.response.status_code",
        i64::from(response.status().as_u16()),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_access_token_is_redacted_and_the_rest_kept() {
        assert_eq!(
            redact_query("access_token=v1.abc.def&last_event_id=7"),
            "access_token=REDACTED&last_event_id=7"
        );
        assert_eq!(
            redact_query("user=u-1&ACCESS_TOKEN=x&access_token"),
            "user=u-1&ACCESS_TOKEN=REDACTED&access_token=REDACTED"
        );
    }

    #[test]
    fn an_encoded_parameter_name_is_redacted_too() {
        assert_eq!(
            redact_query("%61ccess_token=secret&%61ccess%5Ftoken=secret"),
            "%61ccess_token=REDACTED&%61ccess%5Ftoken=REDACTED"
        );
        assert_eq!(redact_query("a=%zz&b=%4"), "a=%zz&b=%4");
    }
}
