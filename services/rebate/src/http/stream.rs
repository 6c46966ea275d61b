//! `GET /rebates/{customer}/stream`: the customer's balance as Server-Sent Events.
//!
//! Each frame is the whole balance: `id: <version>`, `event: balance`, `data:` the
//! [`Balance`] as JSON, with a keep-alive comment every [`KEEP_ALIVE`]. A balance is a state,
//! not a log: a stream sends the newest balance, and may pass over versions in between.
//!
//! On connect the stream sends the current balance, unless the client resumes
//! (`Last-Event-ID`, which a browser's `EventSource` sends on its own when it reconnects, or
//! `?last_event_id=N` for a new one; the header wins) with the version it already has. It
//! subscribes to the replica's feed before reading, so no change falls in between.
//!
//! It ends when the service stops (so that SIGTERM is not held up) and when its token
//! expires (the client connects again with a fresh token and its last id).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use chrono::Utc;
use futures_util::Stream;
use msgkit::Shutdown;
use msgkit::auth::{Claims, TokenKey};
use serde::Deserialize;
use sqlx::PgPool;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use super::{ApiError, AppState, CustomerId};
use crate::balances::{self, Balance};
use crate::feed::Change;
use crate::metrics::RebateMetrics;

/// How often an idle stream sends a comment, so that proxies keep it open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How long a stream opened while the service starts waits for the feed's listener.
const FEED_START: Duration = Duration::from_secs(10);

/// The query: all optional. No `Debug`: it holds the token.
#[derive(Deserialize)]
pub struct StreamParams {
    access_token: Option<String>,
    last_event_id: Option<String>,
}

/// Open a stream of `customer`'s balance: a user's token for their own, an operator's for
/// anyone's.
pub async fn stream(
    State(state): State<AppState>,
    Path(customer): Path<String>,
    headers: HeaderMap,
    Query(params): Query<StreamParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let key = state.tokens.as_ref().ok_or(ApiError::NoTokenSecret)?;
    let claims = authenticate(key, &headers, params.access_token.as_deref())?;
    let customer = CustomerId::parse(customer)?;
    if !claims.may_read(customer.as_str()) {
        return Err(ApiError::Forbidden);
    }
    let resume = resume_point(&headers, params.last_event_id.as_deref())?;
    // Right after the service starts the listener may not listen yet: it would not broadcast
    // what commits before it does.
    tokio::time::timeout(FEED_START, state.feed.listening())
        .await
        .map_err(|_| ApiError::FeedStarting)?;
    // Subscribe before reading: whatever commits after the read is broadcast to us.
    let receiver = state.feed.subscribe();
    let current = balances::balance(&state.pool, customer.as_str()).await?;
    let expires = chrono::DateTime::from_timestamp(claims.exp, 0).unwrap_or_else(Utc::now);
    let until_expiry = (expires - Utc::now()).to_std().unwrap_or_default();
    let stream = BalanceStream {
        pool: state.pool.clone(),
        customer: customer.as_str().to_owned(),
        receiver,
        sent: current.version,
        // The client's id differs from the current version: it lacks this balance (a newer
        // one, or, after a reset of the database, simply another one).
        pending: (resume != Some(current.version)).then_some(current),
        shutdown: state.shutdown.clone(),
        expiry: Box::pin(tokio::time::sleep(until_expiry)),
        _connected: Connected::new(&state.metrics),
    };
    Ok(Sse::new(futures_util::stream::unfold(stream, next_frame))
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
    msgkit::http::last_event_id(headers, query).map_err(|field| ApiError::Invalid {
        field,
        reason: "must be a balance version (a whole number, 0 or more)".to_owned(),
    })
}

/// One client's stream.
struct BalanceStream {
    pool: PgPool,
    customer: String,
    receiver: Receiver<Change>,
    /// The version last sent (or the client's): the broadcast sends only newer ones.
    sent: i64,
    /// A balance to send before waiting.
    pending: Option<Balance>,
    shutdown: Shutdown,
    expiry: std::pin::Pin<Box<tokio::time::Sleep>>,
    _connected: Connected,
}

/// The next frame, or `None` to end the stream.
async fn next_frame(
    mut stream: BalanceStream,
) -> Option<(Result<Event, Infallible>, BalanceStream)> {
    loop {
        if let Some(balance) = stream.pending.take() {
            stream.sent = balance.version;
            return Some((Ok(frame(&balance)), stream));
        }
        let change = tokio::select! {
            () = stream.shutdown.triggered() => return None,
            () = &mut stream.expiry => return None,
            change = stream.receiver.recv() => change,
        };
        match change {
            Ok(Change::Balance(balance)) => {
                if balance.customer == stream.customer && balance.version > stream.sent {
                    stream.pending = Some((*balance).clone());
                }
            }
            Ok(Change::Resync) | Err(RecvError::Lagged(_)) => {
                // The table is the truth: send it if it is not what the client has.
                match balances::balance(&stream.pool, &stream.customer).await {
                    Ok(balance) if balance.version != stream.sent => stream.pending = Some(balance),
                    Ok(_) => {}
                    Err(error) => {
                        // The client resumes from its last id when it reconnects.
                        tracing::warn!(%error, "balance stream cannot read the balance; closing it");
                        return None;
                    }
                }
            }
            Err(RecvError::Closed) => return None,
        }
    }
}

fn frame(balance: &Balance) -> Event {
    Event::default()
        .id(balance.version.to_string())
        .event("balance")
        .json_data(balance)
        .unwrap_or_else(|error| {
            // Plain fields always serialise; keep the id so that the client moves on.
            tracing::error!(%error, "balance not serialisable");
            Event::default()
                .id(balance.version.to_string())
                .event("balance")
        })
}

/// One open stream in `rebate_streams_connected`, for as long as it lives.
struct Connected(RebateMetrics);

impl Connected {
    fn new(metrics: &RebateMetrics) -> Self {
        metrics.streams_connected.inc();
        Self(metrics.clone())
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.streams_connected.dec();
    }
}
