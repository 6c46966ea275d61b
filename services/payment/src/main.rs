use anyhow::Context;
use payment::startup::{Settings, build};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = msgkit::telemetry::init("payment");
    let settings = Settings::from_env().context("reading configuration")?;
    let service = build(settings)
        .await
        .context("starting the payment service")?;
    service
        .run_until_signal()
        .await
        .context("running the payment service")
}
