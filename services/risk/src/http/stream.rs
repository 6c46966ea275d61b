//! `GET /alerts/stream`: the alert feed as Server-Sent Events.
//!
//! Each alert is one frame, `id: <seq>`, `event: alert`, `data: <JSON>` (the fields of
//! [`FeedAlert`]), with a keep-alive comment every [`KEEP_ALIVE`]. A client resumes after the
//! last id it saw (`Last-Event-ID`, which a browser's `EventSource` sends on its own when it
//! reconnects, or `?last_event_id=N` for a new `EventSource`, e.g. after a token refresh; the
//! header wins): the stream subscribes to this replica's broadcast first, then reads the
//! table after N, then follows the broadcast skipping what it already sent, so it loses and
//! repeats nothing. Without an id it starts with the next alert committed. A stream that
//! falls more than the broadcast's capacity behind reads the table again from its last id.
//!
//! It ends when the service stops (so that SIGTERM is not held up by open streams) and when
//! its token expires (the client connects again with a fresh token and the last id).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use chrono::Utc;
use futures_util::Stream;
use msgkit::Shutdown;
use msgkit::auth::{Claims, Role, TokenKey};
use msgkit::trace_context::TraceParent;
use serde::Deserialize;
use sqlx::PgPool;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use super::{ApiError, AppState, InvalidField};
use crate::feed::{self, FeedAlert, PAGE};
use crate::metrics::RiskMetrics;

/// How often an idle stream sends a comment, so that proxies keep it open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How long a stream opened while the service starts waits for the feed's listener.
const FEED_START: Duration = Duration::from_secs(10);

/// The query: all optional. No `Debug`: it holds the token.
#[derive(Deserialize)]
pub struct StreamParams {
    access_token: Option<String>,
    last_event_id: Option<String>,
    user: Option<String>,
}

/// Open a stream of the alerts the token may see: a user's own, or an operator's choice
/// (`?user=`, else everyone's).
pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<StreamParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let key = state.tokens.as_ref().ok_or(ApiError::NoTokenSecret)?;
    let claims = authenticate(key, &headers, params.access_token.as_deref())?;
    let user = match (claims.role, params.user) {
        (Role::Operator, user) => user,
        (Role::User, Some(user)) if user != claims.sub => return Err(ApiError::Forbidden),
        (Role::User, _) => Some(claims.sub.clone()),
    };
    let resume = resume_point(&headers, params.last_event_id.as_deref())?;
    // Right after the service starts, the listener may not listen yet: wait for it (it
    // would not broadcast alerts committed before it listened).
    tokio::time::timeout(FEED_START, state.feed.listening())
        .await
        .map_err(|_| ApiError::FeedStarting)?;
    // Subscribe before reading the table: whatever commits after the read is broadcast to us.
    let receiver = state.feed.subscribe();
    let last = feed::last_seq(&state.pool).await?;
    let expires = chrono::DateTime::from_timestamp(claims.exp, 0).unwrap_or_else(Utc::now);
    let until_expiry = (expires - Utc::now()).to_std().unwrap_or_default();
    let feed = AlertStream {
        pool: state.pool.clone(),
        receiver,
        user,
        // An id beyond the last committed one cannot be from this feed (a database reset):
        // follow from the end rather than skip the next alerts.
        sent: resume.map_or(last, |after| after.min(last)),
        reading: resume.is_some(),
        backlog: VecDeque::new(),
        live_reads: false,
        shutdown: state.shutdown.clone(),
        expiry: Box::pin(tokio::time::sleep(until_expiry)),
        metrics: state.metrics.clone(),
        _connected: Connected::new(&state.metrics),
    };
    Ok(Sse::new(futures_util::stream::unfold(feed, next_frame))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// The token's claims (see [`msgkit::auth::authenticate`]).
fn authenticate(
    key: &TokenKey,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Claims, ApiError> {
    msgkit::auth::authenticate(key, headers, query_token, Utc::now())
        .map_err(|refusal| ApiError::Unauthorized(refusal.message()))
}

/// The id to resume after (see [`msgkit::http::last_event_id`]).
fn resume_point(headers: &HeaderMap, query: Option<&str>) -> Result<Option<i64>, ApiError> {
    msgkit::http::last_event_id(headers, query).map_err(|field| {
        ApiError::Invalid(InvalidField::new(
            field,
            "must be an alert stream id (a whole number, 0 or more)",
        ))
    })
}

/// One client's stream.
struct AlertStream {
    pool: PgPool,
    receiver: Receiver<Arc<FeedAlert>>,
    /// Only this user's alerts, when set.
    user: Option<String>,
    /// The last id sent or passed over: the table is read after it, the broadcast skips up
    /// to it.
    sent: i64,
    /// The table has (or may have) alerts after `sent` to read before the broadcast.
    reading: bool,
    /// Read from the table, not sent yet; `true` when live (a catch-up after lagging).
    backlog: VecDeque<(Arc<FeedAlert>, bool)>,
    /// Table reads are of live alerts (after a lag), not of history (a resume).
    live_reads: bool,
    shutdown: Shutdown,
    expiry: std::pin::Pin<Box<tokio::time::Sleep>>,
    metrics: RiskMetrics,
    _connected: Connected,
}

/// The next frame, or `None` to end the stream.
async fn next_frame(mut stream: AlertStream) -> Option<(Result<Event, Infallible>, AlertStream)> {
    loop {
        if let Some((alert, live)) = stream.backlog.pop_front() {
            let frame = stream.frame(&alert, live);
            return Some((Ok(frame), stream));
        }
        if stream.reading {
            match feed::read_after(&stream.pool, stream.sent, stream.user.as_deref()).await {
                Ok(page) => {
                    stream.reading = page.len() as i64 == PAGE;
                    if let Some(last) = page.last() {
                        stream.sent = last.seq;
                    }
                    // A backlog read is history (a resume) unless the stream lagged.
                    let live = stream.live_reads;
                    stream
                        .backlog
                        .extend(page.into_iter().map(|alert| (Arc::new(alert), live)));
                    continue;
                }
                Err(error) => {
                    // The client resumes from its last id when it reconnects.
                    tracing::warn!(%error, "alert stream cannot read the feed; closing it");
                    return None;
                }
            }
        }
        let alert = tokio::select! {
            () = stream.shutdown.triggered() => return None,
            () = &mut stream.expiry => return None,
            received = stream.receiver.recv() => received,
        };
        match alert {
            Ok(alert) if alert.seq <= stream.sent => {}
            Ok(alert) => {
                stream.sent = alert.seq;
                if stream.visible(&alert) {
                    let frame = stream.frame(&alert, true);
                    return Some((Ok(frame), stream));
                }
            }
            Err(RecvError::Lagged(skipped)) => {
                tracing::info!(skipped, "alert stream fell behind; reading the feed table");
                stream.reading = true;
                stream.live_reads = true;
            }
            Err(RecvError::Closed) => return None,
        }
    }
}

impl AlertStream {
    fn visible(&self, alert: &FeedAlert) -> bool {
        self.user.as_ref().is_none_or(|user| *user == alert.user_id)
    }

    /// The alert's frame, written in a span that continues the deciding handler's trace.
    /// Push latency is recorded for live alerts only: history sent on a resume measures how
    /// long the client was away, not the push.
    fn frame(&self, alert: &FeedAlert, live: bool) -> Event {
        let span = tracing::info_span!(
            "push",
            otel.name = "risk.alert push",
            otel.kind = "producer",
            risk.alert.id = %alert.alert_id,
            risk.alert.seq = alert.seq,
            risk.live = live,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        let parent = alert
            .traceparent
            .as_deref()
            .and_then(|value| value.parse::<TraceParent>().ok());
        msgkit::telemetry::context::continue_trace(&span, parent);
        let _entered = span.enter();
        let frame = Event::default()
            .id(alert.seq.to_string())
            .event("alert")
            .json_data(alert)
            .unwrap_or_else(|error| {
                // Plain fields always serialise; keep the id so that the client moves on.
                tracing::error!(%error, "alert not serialisable");
                Event::default().id(alert.seq.to_string()).event("alert")
            });
        if live && let Some(committed) = alert.committed_at {
            let latency = (Utc::now() - committed).to_std().unwrap_or_default();
            self.metrics.push_seconds.observe(latency.as_secs_f64());
        }
        tracing::debug!("alert pushed");
        frame
    }
}

/// One open stream in `risk_streams_connected`, for as long as it lives.
struct Connected(RiskMetrics);

impl Connected {
    fn new(metrics: &RiskMetrics) -> Self {
        metrics.streams_connected.inc();
        Self(metrics.clone())
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.streams_connected.dec();
    }
}
