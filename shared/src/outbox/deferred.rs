//! Follow-up events of a consumer batch, written by one statement at the end of the batch
//! instead of a round trip each. A batch's handlers run inside [`collect`]; what
//! [`crate::consume::Context`] publishes there is kept in the task and written by [`flush`]
//! into the batch's transaction before it commits, so it commits with the batch or not at all,
//! exactly as an immediate write would.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use sqlx::PgConnection;

use super::OutboxMessage;
use super::store::{self, PendingRow};

tokio::task_local! {
    static DEFERRED: RefCell<Vec<OutboxMessage>>;
}

/// Run `work` (a batch's handlers, on this task) collecting what they publish; returns its
/// output and the collected messages in the order they were published.
pub(crate) async fn collect<T>(work: impl Future<Output = T>) -> (T, Vec<OutboxMessage>) {
    DEFERRED
        .scope(RefCell::new(Vec::new()), async {
            let output = work.await;
            let collected = DEFERRED.with(RefCell::take);
            (output, collected)
        })
        .await
}

/// Keep `message` for the batch being collected on this task; gives it back when there is none.
pub(super) fn defer(message: OutboxMessage) -> Option<OutboxMessage> {
    let mut slot = Some(message);
    let _ = DEFERRED.try_with(|deferred| {
        if let Some(message) = slot.take() {
            deferred.borrow_mut().push(message);
        }
    });
    slot
}

/// Write `messages` in order: each run of plain messages by one multi-row statement, a message
/// numbered in a key sequence by its own (its number is taken in that statement). With a
/// `lease` (the writer's process dispatches directly), plain messages that can go out as soon
/// as the transaction commits are written for it and returned, to be handed to the dispatcher
/// after the commit (see `store::insert_many_direct`).
pub(crate) async fn flush(
    conn: &mut PgConnection,
    messages: &[OutboxMessage],
    lease: Option<Duration>,
) -> Result<Vec<PendingRow>, sqlx::Error> {
    let mut direct = Vec::new();
    let mut rest = messages;
    while !rest.is_empty() {
        let plain = rest
            .iter()
            .take_while(|message| message.key_sequence.is_none())
            .count();
        if plain == 0 {
            store::insert(conn, &rest[0]).await?;
            rest = &rest[1..];
            continue;
        }
        match lease {
            Some(lease) => {
                direct.extend(store::insert_many_direct(conn, &rest[..plain], lease).await?);
            }
            None => store::insert_many(conn, &rest[..plain]).await?,
        }
        rest = &rest[plain..];
    }
    Ok(direct)
}
