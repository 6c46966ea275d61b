//! Building the service from its settings. `main` and the tests start the very same service;
//! tests bind port 0 and read the real address.

use msgkit::admission::AdmissionConfig;
use msgkit::consume::ConsumerConfig;
use msgkit::service::{Service, ServiceError, ServiceSettings};

use crate::routes::{self, AppState};
use crate::{handlers, storage};

/// The service's name: its queue, its inbox consumer, its settings' prefix.
pub const NAME: &str = "order";

/// Its schema by default (`ORDER_DB_SCHEMA` overrides it).
pub const SCHEMA: &str = "orders";

/// Deliveries handled per transaction by default (`ORDER_CONSUMER_BATCH` or `CONSUMER_BATCH`
/// override it): the saga's handlers only update order rows and enqueue follow-ups.
const CONSUMER_BATCH: usize = 16;

/// The order service, ready to run: the API (new orders shed while too many are pending,
/// `ORDER_ADMISSION_*`, and limited per client when `ORDER_RATE_LIMIT_PER_SEC` is set), the
/// outbox relay, the saga consumer.
pub async fn build(settings: ServiceSettings) -> Result<Service, ServiceError> {
    let service = Service::start(
        settings,
        contracts::topology(),
        sqlx::migrate!("./migrations"),
    )
    .await?;
    // POST /orders only, and only new orders: see routes::orders::place_order.
    let (service, admission) =
        service.with_admission(AdmissionConfig::default(), storage::pending_backlog)?;
    // ORDER_RATE_LIMIT_PER_SEC: off unless set (local runs, chaos and the bench are one client).
    let rate_limit = service.rate_limit()?;
    let api = routes::router(AppState {
        pool: service.pool().clone(),
        admission,
        rate_limit,
    });
    service.with_http(api).with_relay().consume_with(
        ConsumerConfig::new(NAME, NAME).batch(CONSUMER_BATCH),
        handlers::routes(),
    )
}
