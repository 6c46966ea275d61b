use reconcile::startup::{NAME, build};

#[tokio::main]
async fn main() -> Result<(), msgkit::service::ServiceError> {
    msgkit::service::run(NAME, 8085, NAME, build).await
}
