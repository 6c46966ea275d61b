use rebate::startup::{NAME, build};

#[tokio::main]
async fn main() -> Result<(), msgkit::service::ServiceError> {
    msgkit::service::run(NAME, 8086, NAME, build).await
}
