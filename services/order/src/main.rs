use anyhow::Context;
use msgkit::Shutdown;
use order::configuration::Settings;
use order::startup::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    msgkit::telemetry::init("order");
    let settings = Settings::from_env().context("reading configuration")?;
    let application = Application::build(settings).await?;
    let shutdown = Shutdown::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        Shutdown::os_signal().await;
        tracing::info!("shutdown requested; finishing in-flight work");
        on_signal.trigger();
    });
    application.run_until_stopped(shutdown).await
}
