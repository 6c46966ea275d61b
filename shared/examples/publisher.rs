//! A publisher: an HTTP API whose every change writes its row and its event in one
//! transaction (the outbox), and the kit's relay publishes the event once committed. The broker
//! being away only delays publishing: requests are still accepted.
//!
//! `cargo run -p msgkit --example publisher`, then
//! `curl -XPOST localhost:8091/tickets -H 'content-type: application/json' -d '{"title":"printer"}'`.
//! Settings from the environment: `AMQP_URL`, `DATABASE_URL`, `EXAMPLE_PUBLISHER_HTTP_ADDR`,
//! `EXAMPLE_PUBLISHER_DB_SCHEMA`, `OUTBOX_*` (see docs/guide.md).

#[path = "contracts/mod.rs"]
mod contracts;

use axum::extract::{Json, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Router, routing::post};
use contracts::{TICKET_CLOSED, TICKET_OPENED, TicketClosed, TicketOpened};
use msgkit::outbox::{self, OutboxError, OutboxMessage};
use msgkit::service::{Service, ServiceError, ServiceSettings};
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Deserialize)]
struct OpenTicket {
    title: String,
}

/// `POST /tickets`: the ticket row and its `example.ticket.opened` commit together or not at
/// all. The event continues the request's trace (an incoming `traceparent` is honoured).
async fn open_ticket(
    State(pool): State<PgPool>,
    Json(request): Json<OpenTicket>,
) -> Result<Response, ApiError> {
    if request.title.trim().is_empty() {
        return Err(ApiError::EmptyTitle);
    }
    let ticket_id = Uuid::now_v7();
    let event = TicketOpened {
        ticket_id,
        title: request.title,
    };
    // The aggregate id becomes the message's correlation id: consumers key by it.
    let message = OutboxMessage::of(TICKET_OPENED, ticket_id.to_string(), &event)?;
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO tickets (ticket_id, title) VALUES ($1, $2)")
        .bind(ticket_id)
        .bind(&event.title)
        .execute(&mut *tx)
        .await?;
    outbox::enqueue(&mut tx, &message).await?;
    tx.commit().await?;
    let body = Json(serde_json::json!({ "ticket_id": ticket_id }));
    Ok((StatusCode::ACCEPTED, body).into_response())
}

/// `POST /tickets/{id}/close`: the update and `example.ticket.closed`, in one transaction.
async fn close_ticket(
    State(pool): State<PgPool>,
    Path(ticket_id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    let mut tx = pool.begin().await?;
    let closed = sqlx::query(
        "UPDATE tickets SET closed_at = now() WHERE ticket_id = $1 AND closed_at IS NULL",
    )
    .bind(ticket_id)
    .execute(&mut *tx)
    .await?;
    if closed.rows_affected() == 0 {
        return Err(ApiError::NotOpen(ticket_id));
    }
    let message = OutboxMessage::of(
        TICKET_CLOSED,
        ticket_id.to_string(),
        &TicketClosed { ticket_id },
    )?;
    outbox::enqueue(&mut tx, &message).await?;
    tx.commit().await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("a ticket needs a title")]
    EmptyTitle,
    #[error("no open ticket {0}")]
    NotOpen(Uuid),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::EmptyTitle => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotOpen(_) => StatusCode::NOT_FOUND,
            _ => {
                tracing::error!(error = %self, "request failed");
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
        };
        let body = Json(serde_json::json!({ "error": self.to_string() }));
        (status, body).into_response()
    }
}

async fn build(settings: ServiceSettings) -> Result<Service, ServiceError> {
    let migrations = sqlx::migrate!("examples/migrations/publisher");
    let service = Service::start(settings, contracts::topology(), migrations).await?;
    let api = Router::new()
        .route("/tickets", post(open_ticket))
        .route("/tickets/{id}/close", post(close_ticket))
        .with_state(service.pool().clone());
    // The relay publishes what the handlers enqueue; /healthz, /readyz, /metrics come with it.
    Ok(service.with_http(api).with_relay())
}

#[tokio::main]
async fn main() -> Result<(), ServiceError> {
    msgkit::service::run(contracts::PUBLISHER, 8091, contracts::PUBLISHER, build).await
}
