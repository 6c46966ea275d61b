//! The raw ceiling of a consumer with an inbox: plain lapin and sqlx doing the same durable
//! work as the kit's batching consumer (one inbox row per message, written in a transaction
//! that commits before the ack), as fast as that can be written by hand: several workers, each
//! with its own channel, taking up to a batch of deliveries, writing their inbox rows with one
//! multi-row `INSERT` (`UNNEST`) in one transaction, committing, then acking the batch with
//! one `multiple` ack.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, Consumer};
use sqlx::PgPool;
use tokio::task::JoinSet;

use crate::CliError;

use super::raw::err;

/// Workers, and the prefetch of each: the kit's batching stage runs 10 batches at once over
/// a prefetch of 500.
const WORKERS: usize = 10;
const PREFETCH_PER_WORKER: u16 = 50;
/// How long a worker waits for more deliveries before it commits a partial batch (the last
/// messages of a run).
const LINGER: Duration = Duration::from_millis(2);

/// Consume `n` messages from `queue` (published with message ids beforehand), writing each
/// one's inbox row as consumer `consumer`, in batches of up to `batch`. Returns messages per
/// second from the first delivery to the last commit.
pub async fn consume_with_inbox(
    connection: &Connection,
    pool: &PgPool,
    queue: &str,
    consumer: &str,
    n: usize,
    batch: usize,
) -> Result<f64, CliError> {
    let done = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(std::sync::OnceLock::new());
    let mut workers = JoinSet::new();
    for worker in 0..WORKERS {
        let channel = connection.create_channel().await.map_err(err("channel"))?;
        channel
            .basic_qos(PREFETCH_PER_WORKER, BasicQosOptions::default())
            .await
            .map_err(err("qos"))?;
        let deliveries = channel
            .basic_consume(
                queue.into(),
                format!("raw-inbox-{worker}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(err("consume"))?;
        let work = Work {
            pool: pool.clone(),
            consumer: consumer.to_owned(),
            n,
            batch,
            done: done.clone(),
            started: started.clone(),
        };
        workers.spawn(async move {
            let result = work.run(deliveries).await;
            let _ = channel.close(200, "done".into()).await;
            result
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.map_err(|e| CliError::Other(e.into()))??;
    }
    let elapsed = started
        .get()
        .map_or(Duration::ZERO, |at: &Instant| at.elapsed());
    Ok(n as f64 / elapsed.as_secs_f64().max(f64::EPSILON))
}

struct Work {
    pool: PgPool,
    consumer: String,
    n: usize,
    batch: usize,
    /// Messages committed and acked by every worker together.
    done: Arc<AtomicUsize>,
    started: Arc<std::sync::OnceLock<Instant>>,
}

impl Work {
    async fn run(self, mut deliveries: Consumer) -> Result<(), CliError> {
        let mut ids = Vec::with_capacity(self.batch);
        let mut types = Vec::with_capacity(self.batch);
        while self.done.load(Ordering::Acquire) < self.n {
            // The first delivery of a batch may wait (another worker may take the last ones);
            // the rest only linger briefly, so a partial batch is not held.
            let first = tokio::time::timeout(Duration::from_millis(50), deliveries.next()).await;
            let Ok(Some(first)) = first else { continue };
            self.started.get_or_init(Instant::now);
            let mut last = first.map_err(err("delivery"))?;
            let mut taken = 1;
            push(&last, &mut ids, &mut types);
            while taken < self.batch {
                match tokio::time::timeout(LINGER, deliveries.next()).await {
                    Ok(Some(delivery)) => {
                        last = delivery.map_err(err("delivery"))?;
                        push(&last, &mut ids, &mut types);
                        taken += 1;
                    }
                    _ => break,
                }
            }
            let mut tx = self.pool.begin().await.map_err(sql)?;
            sqlx::query(
                "INSERT INTO msgkit_inbox (consumer, message_id, message_type) \
                 SELECT $1, id, kind FROM UNNEST($2::text[], $3::text[]) AS m(id, kind) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&self.consumer)
            .bind(&ids)
            .bind(&types)
            .execute(&mut *tx)
            .await
            .map_err(sql)?;
            tx.commit().await.map_err(sql)?;
            last.ack(BasicAckOptions { multiple: true })
                .await
                .map_err(err("ack"))?;
            self.done.fetch_add(taken, Ordering::AcqRel);
            ids.clear();
            types.clear();
        }
        Ok(())
    }
}

fn push(delivery: &lapin::message::Delivery, ids: &mut Vec<String>, types: &mut Vec<String>) {
    let text = |value: &Option<lapin::types::ShortString>| {
        value.as_ref().map(ToString::to_string).unwrap_or_default()
    };
    ids.push(text(delivery.properties.message_id()));
    types.push(text(delivery.properties.kind()));
}

fn sql(error: sqlx::Error) -> CliError {
    CliError::Other(anyhow::anyhow!("inbox: {error}"))
}
