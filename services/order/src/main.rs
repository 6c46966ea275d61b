use order::startup::{NAME, SCHEMA, build};

#[tokio::main]
async fn main() -> Result<(), msgkit::service::ServiceError> {
    msgkit::service::run(NAME, 8080, SCHEMA, build).await
}
