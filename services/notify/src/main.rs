#[tokio::main]
async fn main() -> Result<(), msgkit::service::ServiceError> {
    msgkit::service::run(notify::NAME, 8083, notify::NAME, notify::build).await
}
