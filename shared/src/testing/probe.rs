//! Watching what is published to an exchange, for assertions on the messages themselves.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lapin::{Channel, Connection, Consumer};

/// Sees the messages published to an exchange since it was created.
pub struct Probe {
    _connection: Connection,
    _channel: Channel,
    consumer: Consumer,
}

impl Probe {
    pub(super) fn new(connection: Connection, channel: Channel, consumer: Consumer) -> Self {
        Self {
            _connection: connection,
            _channel: channel,
            consumer,
        }
    }

    /// The next message, acked, or `None` if none arrives within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Delivery> {
        let delivery = tokio::time::timeout(timeout, self.consumer.next())
            .await
            .ok()??
            .ok()?;
        delivery
            .ack(BasicAckOptions::default())
            .await
            .expect("ack probe delivery");
        Some(delivery)
    }

    /// Collect messages until `done` says the collection is complete, or panic after
    /// `deadline` naming what was missing.
    pub async fn collect_until<F>(
        &mut self,
        what: &str,
        deadline: Duration,
        mut done: F,
    ) -> Vec<Delivery>
    where
        F: FnMut(&[Delivery]) -> bool,
    {
        let started = std::time::Instant::now();
        let mut received = Vec::new();
        while !done(&received) {
            let left = deadline.saturating_sub(started.elapsed());
            assert!(
                !left.is_zero(),
                "timed out after {deadline:?} waiting for {what}; received {} message(s)",
                received.len()
            );
            if let Some(delivery) = self.next(left).await {
                received.push(delivery);
            }
        }
        received
    }
}
