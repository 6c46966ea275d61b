use anyhow::Context;
use inventory::startup::{Settings, build};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = msgkit::telemetry::init("inventory");
    let settings = Settings::from_env().context("reading configuration")?;
    let service = build(settings)
        .await
        .context("starting the inventory service")?;
    service
        .run_until_signal()
        .await
        .context("running the inventory service")
}
