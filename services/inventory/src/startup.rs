//! Building the service from its settings (shared by `main` and the tests).

use msgkit::config::Lookup;
use msgkit::consume::ConsumerConfig;
use msgkit::service::{Service, ServiceError, ServiceSettings};

use crate::handlers::{Broken, routes_with};
use crate::http::{self, AppState};
use crate::metrics::InventoryMetrics;
use crate::stock_feed::{self, Feed};

/// The service's name: its queue, its inbox consumer, its settings' prefix.
pub const NAME: &str = "inventory";

/// The setting for how many stock changes a stream may fall behind the broadcast before it
/// reads the table instead (`INVENTORY_STREAM_BUFFER`, else `STREAM_BUFFER`).
pub const STREAM_BUFFER: &str = "STREAM_BUFFER";

/// Deliveries handled per transaction by default (`INVENTORY_CONSUMER_BATCH` or
/// `CONSUMER_BATCH` override it). Orders lock stock rows shared by all orders; the routes'
/// `before_batch` takes a batch's stock locks in SKU order before its first message, so
/// concurrent batches cannot deadlock over them.
const CONSUMER_BATCH: usize = 16;

/// The inventory service, ready to run: its outbox relay, the consumer of its queue, and the
/// stock API with its live feed's listener.
pub async fn build(settings: ServiceSettings) -> Result<Service, ServiceError> {
    let buffer = settings
        .source
        .scoped(NAME)
        .parse(STREAM_BUFFER, stock_feed::BROADCAST_CAPACITY)?;
    let service = Service::start(
        settings,
        contracts::topology(),
        sqlx::migrate!("./migrations"),
    )
    .await?
    .with_relay();
    let service = with_stock_api(service, buffer);
    let broken = if std::env::var("INVENTORY_BROKEN_STOCK_OUTSIDE_TRANSACTION").as_deref()
        == Ok("1")
    {
        tracing::warn!("INVENTORY IS BROKEN ON PURPOSE: stock is taken outside the transaction");
        Broken(Some(service.pool().clone()))
    } else {
        Broken::default()
    };
    service.consume_with(
        ConsumerConfig::new(NAME, NAME).batch(CONSUMER_BATCH),
        routes_with(broken),
    )
}

/// The stock API (`GET /stock/{sku}`, `GET /stock/stream`), its metrics, and the feed's
/// listener that its streams follow.
fn with_stock_api(service: Service, buffer: usize) -> Service {
    let (metrics, registry) = InventoryMetrics::new();
    let feed = Feed::with_capacity(buffer);
    let api = http::router(AppState {
        pool: service.pool().clone(),
        feed: feed.clone(),
        metrics,
        shutdown: service.shutdown_signal(),
    });
    let listener = {
        let pool = service.pool().clone();
        move |shutdown| stock_feed::listen(pool, feed, shutdown)
    };
    service
        .with_http(api)
        .with_metrics(registry)
        .with_task("inventory stock feed listener", listener)
}
