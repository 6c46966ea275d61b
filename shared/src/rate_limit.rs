//! A per-client rate limit for an HTTP API's open endpoints (the order service's
//! `POST /orders`, risk's `POST /transactions`): each client gets a bucket of `burst` requests,
//! refilled at `per_second`; a request finding it empty is answered 429 `rate_limited` with
//! `Retry-After` (whole seconds until the next request would pass). 429 is the client's own
//! limit; 503 from [`crate::admission`] is the system's.
//!
//! A client is its peer address, or, behind a proxy that says whom it forwards for, the last
//! address of a header the proxy sets (`X-Forwarded-For`: the last entry is the one the
//! trusted proxy appended; earlier ones are the client's own word). Off unless configured:
//! local runs, the chaos runner and the bench send everything from one address.
//!
//! Memory is bounded: past `max_clients` buckets, the full ones (clients idle long enough to
//! have refilled) are dropped, and if that is not enough, all are (a flood from that many
//! addresses gets a fresh burst each rather than the service running out of memory).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;

use crate::config::{ConfigError, Lookup};
use crate::http::Problem;

/// Clients remembered at most (about 100 bytes each).
pub const DEFAULT_MAX_CLIENTS: usize = 100_000;

/// How fast one client may send.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimitConfig {
    /// Requests per second, sustained.
    pub per_second: f64,
    /// Requests at once after a pause.
    pub burst: u32,
    /// The header that names the client (set by a trusted proxy), else the peer address.
    pub client_header: Option<HeaderName>,
    /// Buckets kept at most.
    pub max_clients: usize,
}

impl RateLimitConfig {
    /// From `RATE_LIMIT_PER_SEC` (unset or 0: no limit), `RATE_LIMIT_BURST` (default: one
    /// second's worth, at least 1) and `RATE_LIMIT_CLIENT_HEADER`, looked up in `config`
    /// (scope it to the API, e.g. `source.scoped("order")`: `ORDER_RATE_LIMIT_PER_SEC`).
    pub fn from_config(config: &impl Lookup) -> Result<Option<Self>, ConfigError> {
        let per_second: f64 = config.parse("RATE_LIMIT_PER_SEC", 0.0)?;
        if per_second.is_nan() || per_second < 0.0 {
            return Err(ConfigError {
                name: "RATE_LIMIT_PER_SEC".to_owned(),
                value: per_second.to_string(),
                reason: "must be 0 (off) or more".to_owned(),
            });
        }
        if per_second == 0.0 {
            return Ok(None);
        }
        let burst = config.parse("RATE_LIMIT_BURST", (per_second.ceil() as u32).max(1))?;
        let client_header = config
            .get("RATE_LIMIT_CLIENT_HEADER")
            .map(|name| {
                HeaderName::try_from(name.trim()).map_err(|error| ConfigError {
                    name: "RATE_LIMIT_CLIENT_HEADER".to_owned(),
                    value: name.to_owned(),
                    reason: error.to_string(),
                })
            })
            .transpose()?;
        Ok(Some(Self {
            per_second,
            burst: burst.max(1),
            client_header,
            max_clients: DEFAULT_MAX_CLIENTS,
        }))
    }
}

/// The buckets of one API. Clones share them.
#[derive(Clone, Debug)]
pub struct RateLimit {
    config: Arc<RateLimitConfig>,
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
    /// `msgkit_rate_limited_total`, when the limit belongs to a service.
    refused: Option<Counter>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// Buckets for `config`.
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config: Arc::new(config),
            buckets: Arc::default(),
            refused: None,
        }
    }

    /// Count what it refuses in `counter`.
    pub(crate) fn counting(mut self, counter: Counter) -> Self {
        self.refused = Some(counter);
        self
    }

    /// Take one request from `client`'s bucket at `now`, or say how long until one is there.
    pub fn check(&self, client: &str, now: Instant) -> Result<(), Duration> {
        let config = &self.config;
        let Ok(mut buckets) = self.buckets.lock() else {
            // A panic while holding the lock cannot leave a bucket half-updated in a way that
            // matters more than refusing everyone: let the request through.
            return Ok(());
        };
        if buckets.len() >= config.max_clients && !buckets.contains_key(client) {
            let burst = f64::from(config.burst);
            buckets.retain(|_, b| refilled(b, now, config.per_second, burst) < burst);
            if buckets.len() >= config.max_clients {
                tracing::warn!(
                    clients = buckets.len(),
                    "rate limit: too many clients remembered; forgetting all"
                );
                buckets.clear();
            }
        }
        let burst = f64::from(config.burst);
        let bucket = buckets.entry(client.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        bucket.tokens = refilled(bucket, now, config.per_second, burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / config.per_second,
            ))
        }
    }

    /// Who sent `request`: the configured header's last entry, else the peer's address.
    fn client_of(&self, request: &Request) -> Option<String> {
        if let Some(header) = &self.config.client_header {
            return request
                .headers()
                .get(header)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.rsplit(',').next())
                .map(|last| last.trim().to_owned())
                .filter(|last| !last.is_empty());
        }
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip().to_string())
    }
}

fn refilled(bucket: &Bucket, now: Instant, per_second: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.tokens + elapsed * per_second).min(burst)
}

/// Middleware for the routes `limit` guards:
/// `.route_layer(axum::middleware::from_fn_with_state(limit, rate_limit::guard))`. A request
/// whose client cannot be told (no peer address, or the configured header missing) is
/// counted under one shared name, so it is limited rather than let through.
pub async fn guard(State(limit): State<RateLimit>, request: Request, next: Next) -> Response {
    let client = limit
        .client_of(&request)
        .unwrap_or_else(|| "<unknown>".to_owned());
    match limit.check(&client, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            if let Some(refused) = &limit.refused {
                refused.inc();
            }
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests from this client; retry after the time Retry-After gives",
            )
            .retry_after(seconds)
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests;
