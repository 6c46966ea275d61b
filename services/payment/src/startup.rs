//! Building the service from its settings (shared by `main` and the tests).

use std::net::SocketAddr;
use std::sync::Arc;

use msgkit::clock::Clock;
use msgkit::database::DatabaseSettings;
use msgkit::service::{Service, ServiceError, ServiceSettings};
use tokio::sync::Notify;

use crate::api::{ApiState, router};
use crate::callback_sender::CallbackSender;
use crate::callbacks::{CallbackPlanner, CallbackSettings};
use crate::gateway::{GatewaySettings, GatewaySimulator};
use crate::handlers::routes;
use crate::metrics::PaymentMetrics;

/// The service's name: its queue, its inbox consumer, its settings' prefix.
pub const NAME: &str = "payment";

/// The payment service, ready to run, on the system clock (see [`build_with_clock`]).
pub async fn build(settings: ServiceSettings) -> Result<Service, ServiceError> {
    build_with_clock(settings, Clock::system()).await
}

/// The payment service, ready to run. One delivery per transaction (unlike the other
/// services): the handler waits on the gateway, and a batch would add those waits up inside
/// one transaction. The gateway simulator reads `GATEWAY_*`; its callbacks (when
/// `GATEWAY_CALLBACK_SECRET` is set) are planned and sent by `clock`, which tests move.
pub async fn build_with_clock(
    settings: ServiceSettings,
    clock: Clock,
) -> Result<Service, ServiceError> {
    let gateway_settings = GatewaySettings::from_config(&settings.source)?;
    let callback_settings = CallbackSettings::from_config(&settings.source)?;
    let service = Service::start(
        settings,
        contracts::topology(),
        sqlx::migrate!("./migrations"),
    )
    .await?;
    // The simulator stands for an external system: its own connections, so that a charge never
    // waits for a connection held by the handler that asked for it, and its callback sender
    // never takes one from the consumer.
    let gateway_pool = DatabaseSettings {
        max_connections: 4,
        ..service.settings().database.clone()
    }
    .connect()
    .await?;
    let mut gateway = GatewaySimulator::new(gateway_pool.clone(), gateway_settings);
    let (metrics, registry) = PaymentMetrics::new();
    let api = ApiState {
        pool: service.pool().clone(),
        key: callback_settings.key.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
    };
    let mut service = service.with_http(router(api)).with_metrics(registry);
    if let Some(key) = callback_settings.key.clone() {
        let wake = Arc::new(Notify::new());
        let url = match &callback_settings.url {
            Some(url) => url.clone(),
            None => own_callback_url(service.local_addr().map_err(ServiceError::Serve)?),
        };
        let sender = CallbackSender::new(
            gateway_pool,
            url,
            key,
            clock.clone(),
            wake.clone(),
            callback_settings.retry,
            !callback_settings.faults.reorder.is_zero(),
            metrics.clone(),
        );
        gateway = gateway.with_callbacks(CallbackPlanner::new(
            callback_settings,
            clock,
            wake,
            metrics,
        ));
        service = service.with_task("gateway-callback-sender", move |shutdown| {
            sender.run(shutdown)
        });
    }
    service.with_relay().consume(routes(gateway))
}

/// `http://<addr>/payments/callback`, with a wildcard address (listening everywhere) replaced
/// by loopback: the simulator calls the very process it lives in.
pub fn own_callback_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!(
        "http://{}/payments/callback",
        SocketAddr::new(ip, addr.port())
    )
}
