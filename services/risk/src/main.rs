use risk::startup::{NAME, build};

#[tokio::main]
async fn main() -> Result<(), msgkit::service::ServiceError> {
    msgkit::service::run(NAME, 8084, NAME, build).await
}
