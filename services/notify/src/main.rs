use anyhow::Context;
use notify::startup::{Settings, build};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = msgkit::telemetry::init("notify");
    let settings = Settings::from_env().context("reading configuration")?;
    let service = build(settings)
        .await
        .context("starting the notify service")?;
    service
        .run_until_signal()
        .await
        .context("running the notify service")
}
