use payment::startup::{NAME, build};

#[tokio::main]
async fn main() -> Result<(), msgkit::service::ServiceError> {
    msgkit::service::run(NAME, 8082, NAME, build).await
}
