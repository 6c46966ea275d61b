use inventory::startup::{NAME, build};

#[tokio::main]
async fn main() -> Result<(), msgkit::service::ServiceError> {
    msgkit::service::run(NAME, 8081, NAME, build).await
}
