//! A consumer with two routes: its own view of tickets (`ticket_log`), and a follow-up event
//! once a ticket it saw opened is closed. Each handler runs in one transaction with the
//! message's inbox row (a redelivery is applied once). `cargo run -p msgkit --example consumer`

#[path = "contracts/mod.rs"]
mod contracts;

use chrono::{DateTime, Utc};
use contracts::{
    TICKET_CLOSED, TICKET_OPENED, TICKET_RESOLVED, TicketClosed, TicketOpened, TicketResolved,
};
use msgkit::consume::FailureKind::{Poison, Transient};
use msgkit::consume::{Context, HandlerError, Routes};
use msgkit::service::{Service, ServiceError, ServiceSettings};

async fn opened(mut ctx: Context<'_>, ticket: TicketOpened) -> Result<(), HandlerError> {
    if ticket.title.trim().is_empty() {
        // Poison: no retry can fix it, so it goes to example_consumer.dlq at once.
        return Err(HandlerError::new(Poison, "example::EmptyTitle", "no title"));
    }
    sqlx::query("INSERT INTO ticket_log (ticket_id, title, opened_at) VALUES ($1, $2, $3)")
        .bind(ticket.ticket_id)
        .bind(&ticket.title)
        .bind(ctx.event_time())
        .execute(ctx.tx())
        .await?; // a database error is transient: rolled back, retried with backoff
    Ok(())
}

async fn closed(mut ctx: Context<'_>, ticket: TicketClosed) -> Result<(), HandlerError> {
    let opened_at: Option<DateTime<Utc>> = sqlx::query_scalar(
        "UPDATE ticket_log SET closed_at = $2 WHERE ticket_id = $1 RETURNING opened_at",
    )
    .bind(ticket.ticket_id)
    .bind(ctx.event_time())
    .fetch_optional(ctx.tx())
    .await?;
    let Some(opened_at) = opened_at else {
        // Transient: its `opened` may be a retry still on its way. Retried with backoff, then
        // dead-lettered as retries-exhausted.
        return Err(HandlerError::new(
            Transient,
            "example::NotOpenedYet",
            "not seen opened",
        ));
    };
    let open_for_ms = (ctx.event_time() - opened_at).num_milliseconds();
    let resolved = TicketResolved {
        ticket_id: ticket.ticket_id,
        open_for_ms,
    };
    // Written to the outbox in this transaction: published once it commits.
    ctx.publish(TICKET_RESOLVED, &resolved).await?;
    Ok(())
}

async fn build(settings: ServiceSettings) -> Result<Service, ServiceError> {
    let migrations = sqlx::migrate!("examples/migrations/consumer");
    let routes = Routes::new()
        .route(TICKET_OPENED, opened)
        .route(TICKET_CLOSED, closed);
    Service::start(settings, contracts::topology(), migrations)
        .await?
        .with_relay()
        .consume(routes)
}

#[tokio::main]
async fn main() -> Result<(), ServiceError> {
    msgkit::service::run(contracts::CONSUMER, 8092, contracts::CONSUMER, build).await
}
