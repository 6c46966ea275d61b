//! Recording every publish of a vhost through RabbitMQ's firehose tracer
//! (<https://www.rabbitmq.com/docs/firehose>): with `rabbitmqctl trace_on -p <vhost>` the broker
//! copies each message entering the vhost to the topic exchange `amq.rabbitmq.trace` with the
//! routing key `publish.<exchange>` (and each delivery as `deliver.<queue>`, not wanted here).
//! The copy's headers carry `exchange_name`, `routing_keys` (the key plus CC/BCC), the original
//! `properties` as a table (`message_id`, `type`, `headers`, ...) and, on RabbitMQ 3.10 (seen on
//! the real broker; not in the documented table), `routed_queues`: where it was routed.
//!
//! The firehose is per node and not persistent: a broker restart turns it off, and the
//! recorder's exclusive queue goes with its connection. Either ends the recording early, which
//! [`Recording::interrupted`] reports.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, Consumer};
use msgkit::{BrokerSettings, Shutdown};
use tokio::task::JoinHandle;

use super::{GenericError, rabbitmqctl};

/// The exchange the broker copies traced messages to.
const TRACE_EXCHANGE: &str = "amq.rabbitmq.trace";
/// Publishes only (messages entering the broker), not deliveries.
const PUBLISHES: &str = "publish.#";

/// One message as it entered the broker.
#[derive(Debug, Clone)]
pub struct TracedPublish {
    /// The exchange it was published to (`""` for the default exchange).
    pub exchange: String,
    /// Its routing key, then any CC/BCC keys.
    pub routing_keys: Vec<String>,
    /// Its `message_id` property.
    pub message_id: Option<String>,
    /// Its `type` property.
    pub message_type: Option<String>,
    /// The queues the broker routed it to, when the broker says (3.10 does).
    pub routed_queues: Option<Vec<String>>,
    /// When the recorder received the copy (the broker stamps no time on it).
    pub seen_at: DateTime<Utc>,
}

/// What a publish is, from the kit's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishKind {
    /// An event, published to the events exchange: what the invariant counts.
    Event,
    /// A retry on its way through a delay tier (`msgkit.delay.<ms>ms`).
    Retry,
    /// A dead letter sent by a consumer to `<queue>.dlq` through the default exchange.
    DeadLetter,
    /// A fired timer, sent by the outbox relay to its consumer's queue (default exchange).
    TimerFired,
    /// Anything else (another tool's publish, a replay, ...).
    Other,
}

impl TracedPublish {
    /// The routing key it was published with.
    pub fn routing_key(&self) -> &str {
        self.routing_keys.first().map_or("", String::as_str)
    }

    /// Classify against the system's events exchange, by the exchange names the kit uses
    /// (`msgkit::topology`, `msgkit::consume` republishing, `msgkit::timer` firing).
    pub fn kind(&self, events_exchange: &str) -> PublishKind {
        if self.exchange == events_exchange {
            PublishKind::Event
        } else if self.exchange.starts_with("msgkit.delay.") {
            PublishKind::Retry
        } else if self.exchange.is_empty() && self.routing_key().ends_with(".dlq") {
            PublishKind::DeadLetter
        } else if self.exchange.is_empty()
            && self
                .message_type
                .as_deref()
                .is_some_and(|t| t.starts_with(msgkit::timer::MESSAGE_TYPE_PREFIX))
        {
            PublishKind::TimerFired
        } else {
            PublishKind::Other
        }
    }
}

/// Everything the recorder saw.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    /// Every publish, in the order the copies arrived.
    pub publishes: Vec<TracedPublish>,
    /// Why the recording ended before the recorder was finished (broker restart, connection
    /// lost): publishes after that were not seen, so the verdict is incomplete.
    pub interrupted: Option<String>,
}

/// Records the publishes of one vhost from [`FirehoseRecorder::start`] until
/// [`FirehoseRecorder::finish`]. Owns its background task; dropping it unfinished (an error
/// path) aborts the task and still turns the firehose off.
pub struct FirehoseRecorder {
    vhost: String,
    rabbitmqctl: Vec<String>,
    /// Until [`FirehoseRecorder::finish`] has tried to turn it off: then Drop need not.
    firehose_on: bool,
    connection: Connection,
    channel: Channel,
    marker: String,
    stop: Shutdown,
    task: Option<JoinHandle<Recording>>,
}

impl FirehoseRecorder {
    /// Bind a fresh exclusive queue to the trace exchange, start consuming it, then turn the
    /// firehose on for `vhost` with `rabbitmqctl` (the program and leading arguments, e.g.
    /// `["rabbitmqctl"]`, or `["runuser", "-u", "rabbitmq", "--", "rabbitmqctl"]` when not
    /// root; it must reach the node serving the vhost).
    pub async fn start(
        broker: &BrokerSettings,
        vhost: &str,
        rabbitmqctl: &[String],
    ) -> Result<Self, GenericError> {
        let connection = broker
            .connect()
            .await
            .map_err(|e| GenericError::broker("connecting the firehose recorder", e))?;
        let (channel, consumer) = match subscribe(&connection).await {
            Ok(subscribed) => subscribed,
            Err(error) => {
                let _ = connection.close(200, "done".into()).await;
                return Err(error);
            }
        };
        if let Err(error) = rabbitmqctl::trace(rabbitmqctl, "trace_on", vhost).await {
            let _ = connection.close(200, "done".into()).await;
            return Err(error);
        }
        let marker = format!("msgkit.firehose.end.{}", uuid::Uuid::new_v4().simple());
        let stop = Shutdown::new();
        let task = tokio::spawn(record(consumer, marker.clone(), stop.clone()));
        Ok(Self {
            vhost: vhost.to_owned(),
            rabbitmqctl: rabbitmqctl.to_vec(),
            firehose_on: true,
            connection,
            channel,
            marker,
            stop,
            task: Some(task),
        })
    }

    /// End the recording: publish an end marker and wait (at most `deadline`) until its copy
    /// arrives, so every publish confirmed before this call has been recorded; then turn the
    /// firehose off and close the connection.
    pub async fn finish(mut self, deadline: Duration) -> Result<Recording, GenericError> {
        let recording = self.collect(deadline).await;
        let off = rabbitmqctl::trace(&self.rabbitmqctl, "trace_off", &self.vhost).await;
        // Turned off (or tried, and reported): nothing left for Drop to do.
        self.firehose_on = false;
        let _ = self.connection.close(200, "done".into()).await;
        off.map(|()| recording)
    }

    async fn collect(&mut self, deadline: Duration) -> Recording {
        let Some(mut task) = self.task.take() else {
            return Recording::default();
        };
        let properties = BasicProperties::default().with_message_id(self.marker.as_str().into());
        let published = self
            .channel
            .basic_publish(
                "".into(),
                self.marker.as_str().into(),
                BasicPublishOptions::default(),
                b"",
                properties,
            )
            .await;
        let interrupted = match published {
            Err(error) => format!("the end marker could not be published: {error}"),
            Ok(_) => match tokio::time::timeout(deadline, &mut task).await {
                Ok(Ok(recording)) => return recording,
                Ok(Err(error)) => {
                    return Recording {
                        publishes: Vec::new(),
                        interrupted: Some(format!("the recorder task failed: {error}")),
                    };
                }
                Err(_) => format!("the end marker did not arrive within {deadline:?}"),
            },
        };
        self.stop.trigger();
        let mut recording = task.await.unwrap_or_default();
        // The task's own reason ("stopped") says less than ours.
        recording.interrupted = Some(interrupted);
        recording
    }
}

impl Drop for FirehoseRecorder {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if !self.firehose_on {
            return;
        }
        // Not finished: an error path. The firehose slows the whole vhost down and outlives
        // this process, so turn it off even here, blocking (Drop cannot await).
        if let Err(error) = rabbitmqctl::trace_blocking(&self.rabbitmqctl, "trace_off", &self.vhost)
        {
            eprintln!(
                "chaos: {error}; turn it off with `rabbitmqctl trace_off -p {}`",
                self.vhost
            );
        }
    }
}

async fn subscribe(connection: &Connection) -> Result<(Channel, Consumer), GenericError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| GenericError::broker("opening the recorder's channel", e))?;
    // Server-named, exclusive and auto-delete: it goes away with the recorder's connection.
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| GenericError::broker("declaring the recorder's queue", e))?;
    channel
        .queue_bind(
            queue.name().clone(),
            TRACE_EXCHANGE.into(),
            PUBLISHES.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| GenericError::broker("binding the recorder's queue", e))?;
    // No acks: the queue is the recorder's alone and lives only as long as its connection.
    let consumer = channel
        .basic_consume(
            queue.name().clone(),
            "msgkit-firehose".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| GenericError::broker("consuming the recorder's queue", e))?;
    Ok((channel, consumer))
}

/// The background task: record until the end marker, the stop signal, or the stream's end.
async fn record(mut consumer: Consumer, marker: String, stop: Shutdown) -> Recording {
    let mut recording = Recording::default();
    loop {
        let next = tokio::select! {
            biased;
            next = consumer.next() => next,
            () = stop.triggered() => {
                recording.interrupted = Some("stopped before the end marker arrived".to_owned());
                return recording;
            }
        };
        let delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => {
                recording.interrupted = Some(format!("the trace queue failed: {error}"));
                return recording;
            }
            None => {
                recording.interrupted = Some("the trace queue's consumer ended".to_owned());
                return recording;
            }
        };
        let Some(publish) = parse(&delivery, Utc::now()) else {
            continue;
        };
        if publish.message_id.as_deref() == Some(marker.as_str()) {
            return recording;
        }
        recording.publishes.push(publish);
    }
}

/// The publish a trace copy describes, or `None` if it carries no `exchange_name`.
fn parse(delivery: &Delivery, seen_at: DateTime<Utc>) -> Option<TracedPublish> {
    let headers = delivery.properties.headers().as_ref()?.inner();
    let exchange = text(headers.get("exchange_name")?)?;
    let properties = match headers.get("properties") {
        Some(AMQPValue::FieldTable(table)) => Some(table.inner()),
        _ => None,
    };
    let property = |name: &str| properties.and_then(|p| p.get(name)).and_then(text);
    Some(TracedPublish {
        exchange,
        routing_keys: headers.get("routing_keys").map(texts).unwrap_or_default(),
        message_id: property("message_id"),
        message_type: property("type"),
        routed_queues: headers.get("routed_queues").map(texts),
        seen_at,
    })
}

fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn texts(value: &AMQPValue) -> Vec<String> {
    match value {
        AMQPValue::FieldArray(array) => array.as_slice().iter().filter_map(text).collect(),
        other => text(other).into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(exchange: &str, key: &str, message_type: &str) -> TracedPublish {
        TracedPublish {
            exchange: exchange.to_owned(),
            routing_keys: vec![key.to_owned()],
            message_id: Some("m".to_owned()),
            message_type: Some(message_type.to_owned()),
            routed_queues: None,
            seen_at: Utc::now(),
        }
    }

    #[test]
    fn the_kits_own_republishes_are_not_counted_as_events() {
        let kind = |p: TracedPublish| p.kind("events");
        assert_eq!(
            kind(publish("events", "order.placed", "order.placed")),
            PublishKind::Event
        );
        assert_eq!(
            kind(publish("msgkit.delay.100ms", "inventory", "order.placed")),
            PublishKind::Retry
        );
        assert_eq!(
            kind(publish("", "inventory.dlq", "order.placed")),
            PublishKind::DeadLetter
        );
        assert_eq!(
            kind(publish("", "reconcile", "msgkit.timer.callback-due")),
            PublishKind::TimerFired
        );
        assert_eq!(
            kind(publish("", "inventory", "order.placed")),
            PublishKind::Other
        );
    }
}
