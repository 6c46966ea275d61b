use anyhow::Context;
use order::startup::{Settings, build};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = msgkit::telemetry::init("order");
    let settings = Settings::from_env().context("reading configuration")?;
    let service = build(settings)
        .await
        .context("starting the order service")?;
    service
        .run_until_signal()
        .await
        .context("running the order service")
}
