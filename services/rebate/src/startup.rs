//! Building the service from its settings: `main` and the tests start the very same service.

use msgkit::auth::TokenKey;
use msgkit::config::ConfigError;
use msgkit::service::{Service, ServiceError, ServiceSettings};

use crate::feed::{self, Feed};
use crate::http::{self, AppState};
use crate::metrics::RebateMetrics;
use crate::projection;

/// The service's name: its schema, its settings' prefix.
pub const NAME: &str = "rebate";

/// The setting holding the stream tokens' secret (looked up as `REBATE_TOKEN_SECRET`, else
/// `TOKEN_SECRET`). Give it risk's value and one token (`msgkit token`) opens both streams.
pub const TOKEN_SECRET: &str = msgkit::auth::TOKEN_SECRET;

/// The stream tokens' key from the settings: `None` when no secret is set (the stream then
/// answers 503), an error when one is set but shorter than
/// [`msgkit::auth::MIN_SECRET_BYTES`]. The error never shows the secret.
pub fn token_key(settings: &ServiceSettings) -> Result<Option<TokenKey>, ConfigError> {
    TokenKey::from_config(&settings.source, NAME)
}

/// The rebate service, ready to run: the API with the balance stream, the feed's listener, and
/// the projection of the event archive (which needs `ARCHIVE_ENABLED=true`).
pub async fn build(settings: ServiceSettings) -> Result<Service, ServiceError> {
    let tokens = token_key(&settings)?;
    if tokens.is_none() {
        tracing::warn!(
            "no token secret configured (REBATE_TOKEN_SECRET or TOKEN_SECRET): GET /rebates/{{customer}}/stream answers 503"
        );
    }
    let schema = settings.database.schema.clone();
    let service = Service::start(
        settings,
        contracts::topology(),
        sqlx::migrate!("./migrations"),
    )
    .await?;
    let (metrics, registry) = RebateMetrics::new();
    let feed = Feed::default();
    let api = http::router(AppState {
        pool: service.pool().clone(),
        tokens,
        feed: feed.clone(),
        metrics: metrics.clone(),
        shutdown: service.shutdown_signal(),
    });
    let listener = {
        let pool = service.pool().clone();
        move |shutdown| feed::listen(pool, schema, feed, shutdown)
    };
    service
        .with_http(api)
        .with_metrics(registry)
        .with_task("rebate balance feed listener", listener)
        .project(projection::projection(metrics))
        .await
}
