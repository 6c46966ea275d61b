//! Building the service from its settings (shared by `main` and the tests).

use msgkit::database::DatabaseSettings;
use msgkit::service::{Service, ServiceError, ServiceSettings};

use crate::gateway::{GatewaySettings, GatewaySimulator};
use crate::handlers::routes;

/// The service's name: its queue, its inbox consumer, its settings' prefix.
pub const NAME: &str = "payment";

/// The payment service, ready to run. One delivery per transaction (unlike the other
/// services): the handler waits on the gateway, and a batch would add those waits up inside
/// one transaction. The gateway simulator reads `GATEWAY_*`.
pub async fn build(settings: ServiceSettings) -> Result<Service, ServiceError> {
    let gateway_settings = GatewaySettings::from_config(&settings.source)?;
    let service = Service::start(
        settings,
        contracts::topology(),
        sqlx::migrate!("./migrations"),
    )
    .await?;
    // The simulator stands for an external system: its own connections, so that a charge never
    // waits for a connection held by the handler that asked for it.
    let gateway_pool = DatabaseSettings {
        max_connections: 4,
        ..service.settings().database.clone()
    }
    .connect()
    .await?;
    let gateway = GatewaySimulator::new(gateway_pool, gateway_settings);
    service.with_relay().consume(routes(gateway))
}
