//! The broker topology: one durable topic exchange for events, and per consuming service one
//! durable quorum work queue with its dead-letter queue.
//!
//! Declared idempotently by every process at start-up and after every reconnect, so a queue
//! exists (and buffers events) before its consumer first runs, and a broker that lost its
//! definitions gets them back without an operator.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use crate::broker::BrokerError;

mod archive;

pub use archive::{ARCHIVE_STREAM, Archive};

/// Name of the exchange every event is published to.
pub const EVENTS_EXCHANGE: &str = "events";

/// Default bound on redeliveries of one message (crash loops: a handler that kills its process
/// before it can ack). Past it the broker dead-letters the message.
pub const DEFAULT_DELIVERY_LIMIT: u32 = 20;

/// A consuming service's durable work queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkQueue {
    name: String,
    bindings: Vec<String>,
    delivery_limit: u32,
}

impl WorkQueue {
    /// A queue named after the service that owns it (`inventory`, `payment`, ...).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            bindings: Vec::new(),
            delivery_limit: DEFAULT_DELIVERY_LIMIT,
        }
    }

    /// Also receive events whose routing key matches `pattern` (topic syntax: `order.*`).
    pub fn bind(mut self, pattern: impl Into<String>) -> Self {
        self.bindings.push(pattern.into());
        self
    }

    /// Redeliveries allowed before the broker dead-letters a message.
    pub fn delivery_limit(mut self, limit: u32) -> Self {
        self.delivery_limit = limit;
        self
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The routing-key patterns bound to this queue.
    pub fn bindings(&self) -> &[String] {
        &self.bindings
    }

    /// The dead-letter queue's name: `<queue>.dlq`.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dlq", self.name)
    }

    fn arguments(&self) -> FieldTable {
        let mut args = quorum_arguments();
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(self.delivery_limit)),
        );
        // Dead-letter through the default exchange straight to `<queue>.dlq`, so a dead letter
        // reaches only this service's DLQ, never the other consumers of the event.
        args.insert("x-dead-letter-exchange".into(), long_string(""));
        args.insert(
            "x-dead-letter-routing-key".into(),
            long_string(&self.dead_letter_queue()),
        );
        // At-least-once dead-lettering (RabbitMQ >= 3.10, quorum queues) keeps a message in the
        // source queue until the DLQ has confirmed it; it requires reject-publish overflow.
        args.insert(
            "x-dead-letter-strategy".into(),
            long_string("at-least-once"),
        );
        args.insert("x-overflow".into(), long_string("reject-publish"));
        args
    }
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

fn quorum_arguments() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long_string("quorum"));
    args
}

/// Shortest fixed delay of the retry tiers.
pub const DELAY_TIER_BASE: Duration = Duration::from_millis(25);
/// Number of retry tiers: 25 ms doubling to 25 ms * 2^17 (about 55 minutes).
pub const DELAY_TIER_COUNT: u32 = 18;

/// The fixed delays of the retry tiers, shortest first.
///
/// Delayed retry needs no broker plugin and has no head-of-line blocking: each tier is a queue
/// whose messages all share one TTL (so they expire in arrival order), fed by a fanout exchange
/// of the same name. A message published to a tier with the destination queue's name as its
/// routing key is dead-lettered on expiry through the default exchange, with that routing key,
/// straight back into the destination queue. A delay is the sum of the tiers it passes through
/// (largest tier that fits, repeatedly: at most ~18 hops for an hour), decided by the consumer
/// runtime when the message comes back early.
pub fn delay_tiers() -> impl Iterator<Item = Duration> {
    (0..DELAY_TIER_COUNT).map(|k| DELAY_TIER_BASE * 2u32.pow(k))
}

/// The exchange and queue name of the tier with this delay: `msgkit.delay.<ms>ms`.
pub fn delay_tier_name(delay: Duration) -> String {
    format!("msgkit.delay.{}ms", delay.as_millis())
}

/// The longest tier not longer than `remaining`, or `None` when `remaining` is shorter than the
/// shortest tier (the message is due).
pub fn delay_tier_for(remaining: Duration) -> Option<Duration> {
    delay_tiers().take_while(|tier| *tier <= remaining).last()
}

/// Everything a service declares before it publishes or consumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    exchange: String,
    queues: Vec<WorkQueue>,
    archive: Option<Archive>,
    /// `Some(queues)`: [`Topology::declare`] declares the exchange and these queues only.
    declared_only: Option<Vec<String>>,
}

impl Default for Topology {
    fn default() -> Self {
        Self::new(EVENTS_EXCHANGE)
    }
}

impl Topology {
    /// A topology publishing to the topic exchange `exchange`, with no queues yet.
    pub fn new(exchange: impl Into<String>) -> Self {
        Self {
            exchange: exchange.into(),
            queues: Vec::new(),
            archive: None,
            declared_only: None,
        }
    }

    /// The same topology, of which [`Topology::declare`] declares only the exchange and the
    /// work queues named in `queues` (with their DLQs and bindings): what a service whose
    /// broker user may configure nothing else declares. The rest (other services' queues, the
    /// delay tiers, the archive) must exist already: `msgkit topology apply` (or the broker's
    /// definitions) declares it. Everything else about the topology (its queues' bindings,
    /// the archive a relay copies to) stays as it is.
    pub fn declaring_only(mut self, queues: &[&str]) -> Self {
        self.declared_only = Some(queues.iter().map(|&q| q.to_owned()).collect());
        self
    }

    /// Whether [`Topology::declare`] declares the whole topology.
    pub fn declares_all(&self) -> bool {
        self.declared_only.is_none()
    }

    /// Also keep every event in `archive` (see [`Archive`]).
    pub fn with_archive(mut self, archive: Archive) -> Self {
        self.archive = Some(archive);
        self
    }

    /// The event archive, when this topology keeps one.
    pub fn archive(&self) -> Option<&Archive> {
        self.archive.as_ref()
    }

    /// Add a work queue (and its dead-letter queue).
    pub fn with_queue(mut self, queue: WorkQueue) -> Self {
        self.queues.push(queue);
        self
    }

    /// The events exchange.
    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    /// The work queues.
    pub fn queues(&self) -> &[WorkQueue] {
        &self.queues
    }

    /// The work queue named `name`, if declared.
    pub fn queue(&self, name: &str) -> Option<&WorkQueue> {
        self.queues.iter().find(|q| q.name == name)
    }

    /// Declare the exchange, every queue with its DLQ, and every binding, the delay tiers and
    /// the archive (or, [`Topology::declaring_only`], the exchange and those queues). Idempotent; fails
    /// with `PRECONDITION_FAILED` (closing the channel) if a queue exists with other arguments.
    // `queues` as an `i64`: a `usize` would be exported as a string.
    #[tracing::instrument(skip_all, fields(exchange = %self.exchange, queues = i64::try_from(self.queues.len()).unwrap_or(i64::MAX)))]
    pub async fn declare(&self, channel: &Channel) -> Result<(), BrokerError> {
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(BrokerError::operation(format!(
                "exchange.declare {}",
                self.exchange
            )))?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let declared = self.queues.iter().filter(|queue| {
            self.declared_only
                .as_ref()
                .is_none_or(|only| only.contains(&queue.name))
        });
        for queue in declared {
            let dlq = queue.dead_letter_queue();
            channel
                .queue_declare(dlq.as_str().into(), durable, quorum_arguments())
                .await
                .map_err(BrokerError::operation(format!("queue.declare {dlq}")))?;
            channel
                .queue_declare(queue.name.as_str().into(), durable, queue.arguments())
                .await
                .map_err(BrokerError::operation(format!(
                    "queue.declare {}",
                    queue.name
                )))?;
            for pattern in &queue.bindings {
                channel
                    .queue_bind(
                        queue.name.as_str().into(),
                        self.exchange.as_str().into(),
                        pattern.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(BrokerError::operation(format!(
                        "queue.bind {} {pattern}",
                        queue.name
                    )))?;
            }
        }
        if !self.declares_all() {
            return Ok(());
        }
        if !self.queues.is_empty() {
            declare_delay_tiers(channel).await?;
        }
        if let Some(archive) = &self.archive {
            archive.declare(channel).await?;
        }
        Ok(())
    }
}

async fn declare_delay_tiers(channel: &Channel) -> Result<(), BrokerError> {
    for delay in delay_tiers() {
        let name = delay_tier_name(delay);
        channel
            .exchange_declare(
                name.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(BrokerError::operation(format!("exchange.declare {name}")))?;
        let mut args = quorum_arguments();
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
        );
        // No dead-letter routing key: an expired message keeps the routing key it was
        // published with, which is its destination queue's name.
        args.insert("x-dead-letter-exchange".into(), long_string(""));
        args.insert(
            "x-dead-letter-strategy".into(),
            long_string("at-least-once"),
        );
        args.insert("x-overflow".into(), long_string("reject-publish"));
        channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                args,
            )
            .await
            .map_err(BrokerError::operation(format!("queue.declare {name}")))?;
        channel
            .queue_bind(
                name.as_str().into(),
                name.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(BrokerError::operation(format!("queue.bind {name}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tier_for_a_delay_is_the_longest_that_fits() {
        assert_eq!(delay_tier_for(Duration::from_millis(10)), None);
        assert_eq!(
            delay_tier_for(Duration::from_millis(25)),
            Some(Duration::from_millis(25))
        );
        assert_eq!(
            delay_tier_for(Duration::from_millis(437)),
            Some(Duration::from_millis(400))
        );
        let longest = delay_tiers().last().unwrap();
        assert_eq!(
            delay_tier_for(Duration::from_secs(24 * 3600)),
            Some(longest)
        );
        assert_eq!(
            delay_tier_name(Duration::from_millis(400)),
            "msgkit.delay.400ms"
        );
    }
}
