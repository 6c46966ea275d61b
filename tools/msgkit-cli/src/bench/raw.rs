//! The raw ceilings: the fastest plain-lapin code for the same work, no kit.

use std::time::Instant;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};

use crate::CliError;

/// Confirms outstanding at once: enough to keep the broker busy, bounded memory.
pub const WINDOW: usize = 1000;

pub(super) fn err(context: &str) -> impl Fn(lapin::Error) -> CliError + '_ {
    move |e| CliError::Other(anyhow::anyhow!("{context}: {e}"))
}

pub async fn confirm_channel(connection: &Connection) -> Result<Channel, CliError> {
    let channel = connection.create_channel().await.map_err(err("channel"))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(err("confirm.select"))?;
    Ok(channel)
}

/// Publish `n` persistent messages of `body` to `exchange`/`routing_key`, pipelined: up to
/// [`WINDOW`] unconfirmed, then wait for all of them. Returns messages per second.
pub async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    n: usize,
    body: &[u8],
) -> Result<f64, CliError> {
    let started = Instant::now();
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into());
    let mut sent = 0;
    while sent < n {
        let batch = WINDOW.min(n - sent);
        for i in 0..batch {
            // A dropped confirm is awaited by wait_for_confirms below.
            drop(
                channel
                    .basic_publish(
                        exchange.into(),
                        routing_key.into(),
                        BasicPublishOptions::default(),
                        body,
                        properties
                            .clone()
                            .with_message_id(format!("raw-{}", sent + i).into()),
                    )
                    .await
                    .map_err(err("publish"))?,
            );
        }
        let returned = channel.wait_for_confirms().await.map_err(err("confirms"))?;
        if !returned.is_empty() {
            return Err(CliError::Other(anyhow::anyhow!(
                "{} messages returned",
                returned.len()
            )));
        }
        sent += batch;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Acknowledge with `multiple` once per this many deliveries: one frame settles them all.
const ACK_EVERY: usize = 50;

/// Consume `n` messages from `queue` (prefetch 500) and acknowledge them in batches: one
/// `basic.ack` with `multiple` per [`ACK_EVERY`] deliveries, the fastest way plain lapin has
/// to settle a stream (the kit acks each message as its transaction commits, out of order).
/// Returns messages per second from the first delivery.
pub async fn consume(connection: &Connection, queue: &str, n: usize) -> Result<f64, CliError> {
    let channel = connection.create_channel().await.map_err(err("channel"))?;
    channel
        .basic_qos(500, BasicQosOptions::default())
        .await
        .map_err(err("qos"))?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(err("consume"))?;
    let mut started = None;
    let mut seen = 0;
    while seen < n {
        let delivery = consumer
            .next()
            .await
            .ok_or_else(|| CliError::Other(anyhow::anyhow!("consumer ended")))?
            .map_err(err("delivery"))?;
        started.get_or_insert_with(Instant::now);
        seen += 1;
        if seen % ACK_EVERY == 0 || seen == n {
            delivery
                .ack(BasicAckOptions { multiple: true })
                .await
                .map_err(err("ack"))?;
        }
    }
    let elapsed = started.map(|s| s.elapsed().as_secs_f64()).unwrap_or(1.0);
    let _ = channel.close(200, "done".into()).await;
    Ok(n as f64 / elapsed)
}
