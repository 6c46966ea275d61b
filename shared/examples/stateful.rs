//! A stateful consumer: it remembers each open ticket in keyed state and sets a durable timer;
//! a ticket not resolved before the timer fires gets one reminder (a row in `reminders`).
//! `cargo run -p msgkit --example stateful` (settings: `EXAMPLE_STATEFUL_*`, and
//! `EXAMPLE_STATEFUL_REMIND_AFTER_MS`, the time a ticket may stay open: 10 minutes).

#[path = "contracts/mod.rs"]
mod contracts;

use std::time::Duration;

use chrono::{DateTime, Utc};
use contracts::{TICKET_OPENED, TICKET_RESOLVED, TicketOpened, TicketResolved};
use msgkit::config::Lookup;
use msgkit::consume::{Context, HandlerError, Routes};
use msgkit::service::{Service, ServiceError, ServiceSettings};
use msgkit::timer::{Fired, TimerType};
use serde::{Deserialize, Serialize};

/// The reminder, one per ticket (keyed by its id); its payload is empty: the state has it all.
const REMIND: TimerType<()> = TimerType::new("remind");

/// What the consumer keeps per ticket.
#[derive(Serialize, Deserialize)]
enum Ticket {
    Open {
        title: String,
        opened_at: DateTime<Utc>,
    },
    /// Kept a day: `resolved` and `opened` come through different queues, so `resolved` may be
    /// handled first, and the late `opened` must not set a reminder.
    Resolved,
}

async fn opened(mut ctx: Context<'_, Duration>, ticket: TicketOpened) -> Result<(), HandlerError> {
    let key = ticket.ticket_id.to_string();
    // The key's lock is held until commit: two messages of one ticket never interleave.
    if let Some(Ticket::Resolved) = ctx.keyed_state().get(&key).await? {
        return Ok(());
    }
    let open = Ticket::Open {
        title: ticket.title,
        opened_at: ctx.event_time(),
    };
    ctx.keyed_state().put(&key, &open).await?;
    let at = ctx.now() + *ctx.state(); // ctx.now(): the consumer's clock, which tests can move
    ctx.timers().set(REMIND, &key, at, &()).await
}

async fn resolved(
    mut ctx: Context<'_, Duration>,
    ticket: TicketResolved,
) -> Result<(), HandlerError> {
    let key = ticket.ticket_id.to_string();
    let day = Duration::from_secs(24 * 3600);
    ctx.keyed_state()
        .put_for(&key, &Ticket::Resolved, day)
        .await?;
    ctx.timers().cancel(REMIND, &key).await?;
    Ok(())
}

/// The timer fired: a message on this consumer's own queue, handled like any other (inbox,
/// retries). A cancel that came after it fired cannot stop it, so the state decides.
async fn remind(mut ctx: Context<'_, Duration>, fired: Fired<()>) -> Result<(), HandlerError> {
    let Some(Ticket::Open { title, opened_at }) = ctx.keyed_state().get(fired.key()).await? else {
        return Ok(());
    };
    let ticket_id: uuid::Uuid = fired.key().parse().map_err(HandlerError::poison)?;
    sqlx::query("INSERT INTO reminders (ticket_id, title, opened_at) VALUES ($1, $2, $3)")
        .bind(ticket_id)
        .bind(&title)
        .bind(opened_at)
        .execute(ctx.tx())
        .await?;
    tracing::info!(%ticket_id, %title, "reminder: ticket still open");
    Ok(())
}

async fn build(settings: ServiceSettings) -> Result<Service, ServiceError> {
    let remind_after = settings
        .source
        .scoped(contracts::STATEFUL)
        .millis("REMIND_AFTER_MS", Duration::from_secs(600))?;
    let routes = Routes::with_state(remind_after)
        .route(TICKET_OPENED, opened)
        .route(TICKET_RESOLVED, resolved)
        .on_timer(REMIND, remind);
    let migrations = sqlx::migrate!("examples/migrations/stateful");
    // Timers fire through the outbox: a consumer with timers needs the relay.
    Service::start(settings, contracts::topology(), migrations)
        .await?
        .with_relay()
        .consume(routes)
}

#[tokio::main]
async fn main() -> Result<(), ServiceError> {
    msgkit::service::run(contracts::STATEFUL, 8093, contracts::STATEFUL, build).await
}
