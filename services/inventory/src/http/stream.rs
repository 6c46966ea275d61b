//! `GET /stock/stream?sku=A&sku=B`: stock changes as Server-Sent Events.
//!
//! Each frame is one SKU's value: `id: <change_seq>`, `event: stock`, `data:` the JSON of
//! `GET /stock/{sku}`. The id is the SKU's place in the one feed of stock changes (numbered at
//! commit, in commit order, by the `stock_feed` migration's triggers), not its `version`: a
//! stream carries several SKUs, and one number must say how far it got in all of them. On
//! connect the stream sends the current value of every SKU asked for (all of them without
//! `sku`); a client resuming after id N (`Last-Event-ID`, which a browser's `EventSource`
//! sends on its own, or `?last_event_id=N`; the header wins) gets only the SKUs changed after
//! N, each at its current value. Stock is a value, not a log: nothing it has is sent twice and
//! no newer value is missed, though values superseded while it was away are not replayed.
//!
//! The stream subscribes to this replica's broadcast first, then reads the table after its
//! last id, then follows the broadcast skipping what it has read. When it falls behind the
//! broadcast, or the feed's listener reconnected, it reads the table again. It ends when the
//! service stops.

use std::collections::{BTreeSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use msgkit::Shutdown;
use msgkit::http::Problem;
use sqlx::PgPool;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use crate::metrics::InventoryMetrics;
use crate::stock_feed::{self, FeedEvent, StockValue};

/// How often an idle stream sends a comment, so that proxies keep it open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Most SKUs one stream may follow (a page's worth; without `sku` it follows all).
pub const MAX_SKUS: usize = 100;

/// Longest SKU accepted.
const MAX_SKU_LEN: usize = 100;

/// How long a stream opened while the service starts waits for the feed's listener.
const FEED_START: Duration = Duration::from_secs(10);

/// Open a stream of the SKUs in the query (`sku`, repeated), or of all.
pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let skus = skus(&query)?;
    let query_id = query
        .iter()
        .find(|(name, _)| name == "last_event_id")
        .map(|(_, value)| value.as_str());
    let resume = resume_point(&headers, query_id)?;
    // Right after the service starts the listener may not listen yet, and would not
    // broadcast what commits before it does.
    tokio::time::timeout(FEED_START, state.feed.listening())
        .await
        .map_err(|_| {
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "starting",
                "the stock feed is starting; retry in a moment",
            )
        })?;
    // Subscribe before reading the table: whatever commits after the read is broadcast to us.
    let receiver = state.feed.subscribe();
    let last = stock_feed::position(&state.pool)
        .await
        .map_err(|error| Problem::database(&error))?;
    let stream = StockStream {
        pool: state.pool.clone(),
        receiver,
        skus,
        // An id beyond the feed's last cannot be from this feed (a database reset): send every
        // current value rather than skip the next changes.
        sent: resume.filter(|after| *after <= last).unwrap_or(0),
        reading: true,
        backlog: VecDeque::new(),
        shutdown: state.shutdown.clone(),
        _connected: Connected::new(&state.metrics),
    };
    Ok(Sse::new(futures_util::stream::unfold(stream, next_frame))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// The SKUs asked for (`None`: all), at most [`MAX_SKUS`].
fn skus(query: &[(String, String)]) -> Result<Option<Vec<String>>, Problem> {
    let bad = |message: String| {
        Problem::new(StatusCode::BAD_REQUEST, "bad_request", message).field("sku")
    };
    let mut skus = BTreeSet::new();
    for (_, sku) in query.iter().filter(|(name, _)| name == "sku") {
        if sku.is_empty() || sku.len() > MAX_SKU_LEN {
            return Err(bad(format!("a SKU has 1 to {MAX_SKU_LEN} characters")));
        }
        skus.insert(sku.clone());
    }
    if skus.len() > MAX_SKUS {
        return Err(bad(format!(
            "at most {MAX_SKUS} SKUs per stream ({} asked for); open several streams",
            skus.len()
        )));
    }
    Ok((!skus.is_empty()).then(|| skus.into_iter().collect()))
}

/// The id to resume after (see [`msgkit::http::last_event_id`]).
fn resume_point(headers: &HeaderMap, query: Option<&str>) -> Result<Option<i64>, Problem> {
    msgkit::http::last_event_id(headers, query).map_err(|field| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "must be a stock stream id (a whole number, 0 or more)",
        )
        .field(field)
    })
}

/// One client's stream.
struct StockStream {
    pool: PgPool,
    receiver: Receiver<FeedEvent>,
    /// Only these SKUs, when set.
    skus: Option<Vec<String>>,
    /// The feed number sent or passed over: the table is read after it, the broadcast skips
    /// up to it.
    sent: i64,
    /// The table has (or may have) changes after `sent` to read before the broadcast.
    reading: bool,
    /// Read from the table, not sent yet.
    backlog: VecDeque<StockValue>,
    shutdown: Shutdown,
    _connected: Connected,
}

/// The next frame, or `None` to end the stream.
async fn next_frame(mut stream: StockStream) -> Option<(Result<Event, Infallible>, StockStream)> {
    loop {
        if stream.shutdown.is_triggered() {
            return None;
        }
        if let Some(value) = stream.backlog.pop_front() {
            return Some((Ok(frame(&value)), stream));
        }
        if stream.reading {
            let read = tokio::select! {
                () = stream.shutdown.triggered() => return None,
                read = stock_feed::read_after(&stream.pool, stream.sent, stream.skus.as_deref()) => read,
            };
            match read {
                Ok(page) => {
                    stream.reading = page.more;
                    stream.sent = page.through;
                    stream.backlog.extend(page.values);
                    continue;
                }
                Err(error) => {
                    // The client resumes from its last id when it reconnects.
                    tracing::warn!(%error, "stock stream cannot read the feed; closing it");
                    return None;
                }
            }
        }
        let event = tokio::select! {
            () = stream.shutdown.triggered() => return None,
            received = stream.receiver.recv() => received,
        };
        match event {
            Ok(FeedEvent::Changed(value)) if value.change_seq <= stream.sent => {}
            Ok(FeedEvent::Changed(value)) => {
                stream.sent = value.change_seq;
                if stream.follows(&value) {
                    return Some((Ok(frame(&value)), stream));
                }
            }
            Ok(FeedEvent::Reread) => stream.reading = true,
            Err(RecvError::Lagged(skipped)) => {
                tracing::info!(skipped, "stock stream fell behind; reading the table");
                stream.reading = true;
            }
            Err(RecvError::Closed) => return None,
        }
    }
}

impl StockStream {
    fn follows(&self, value: &Arc<StockValue>) -> bool {
        self.skus
            .as_ref()
            .is_none_or(|skus| skus.binary_search(&value.sku).is_ok())
    }
}

fn frame(value: &StockValue) -> Event {
    let id = value.change_seq.to_string();
    Event::default()
        .id(id.clone())
        .event("stock")
        .json_data(value)
        .unwrap_or_else(|error| {
            // Plain fields always serialise; keep the id so that the client moves on.
            tracing::error!(%error, "stock value not serialisable");
            Event::default().id(id).event("stock")
        })
}

/// One open stream in `inventory_stock_streams_connected`, for as long as it lives.
struct Connected(InventoryMetrics);

impl Connected {
    fn new(metrics: &InventoryMetrics) -> Self {
        metrics.stock_streams_connected.inc();
        Self(metrics.clone())
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.stock_streams_connected.dec();
    }
}
