//! Reading the archive stream over AMQP 0-9-1: a consumer with an offset, on a connection of
//! its own (RabbitMQ closes the connection of a stream consumer that nacks or gets, so
//! nothing else shares it), with a per-consumer prefetch (streams refuse a global one) and
//! manual acks, which for a stream only return credit.

use chrono::{DateTime, TimeZone, Utc};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection};

use super::ArchivedEvent;
use crate::broker::BrokerError;
use crate::message::{CREATED_AT_HEADER, header_i64};

/// Where a reader starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StartAt {
    /// The first event the archive still holds.
    First,
    /// The event after this offset (the next one the broker has).
    After(u64),
    /// The start of the archive's last chunk (to find where it ends).
    LastChunk,
}

impl StartAt {
    fn argument(self) -> AMQPValue {
        match self {
            Self::First => AMQPValue::LongString(LongString::from("first")),
            Self::LastChunk => AMQPValue::LongString(LongString::from("last")),
            Self::After(offset) => {
                AMQPValue::LongLongInt(i64::try_from(offset.saturating_add(1)).unwrap_or(i64::MAX))
            }
        }
    }
}

/// An open stream consumer of the archive.
pub(crate) struct ArchiveReader {
    connection: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
    /// The last delivery read and not yet acknowledged.
    last_unacked: Option<Delivery>,
}

impl ArchiveReader {
    /// Consume `archive` from `start` on `connection` (which the reader owns and closes).
    pub(crate) async fn open(
        connection: Connection,
        archive: &str,
        start: StartAt,
        prefetch: u16,
        tag: &str,
    ) -> Result<Self, BrokerError> {
        let channel = connection
            .create_channel()
            .await
            .map_err(BrokerError::operation("channel.open"))?;
        channel
            .basic_qos(prefetch, BasicQosOptions { global: false })
            .await
            .map_err(BrokerError::operation("basic.qos"))?;
        let mut arguments = FieldTable::default();
        arguments.insert("x-stream-offset".into(), start.argument());
        let consumer = channel
            .basic_consume(
                archive.into(),
                format!("{tag}-{}", uuid::Uuid::new_v4().simple()).into(),
                BasicConsumeOptions::default(),
                arguments,
            )
            .await
            .map_err(BrokerError::operation(format!("basic.consume {archive}")))?;
        Ok(Self {
            connection,
            channel,
            consumer,
            last_unacked: None,
        })
    }

    /// The next event; `None` when the consumer ended (the channel or connection closed).
    pub(crate) async fn next(&mut self) -> Option<Result<ArchivedEvent, BrokerError>> {
        let delivery = self.consumer.next().await?;
        Some(self.take(delivery))
    }

    /// The next event if the broker has already sent one, without waiting.
    pub(crate) fn next_ready(&mut self) -> Option<Result<ArchivedEvent, BrokerError>> {
        use futures_util::FutureExt;
        let delivery = self.consumer.next().now_or_never()??;
        Some(self.take(delivery))
    }

    fn take(
        &mut self,
        delivery: Result<Delivery, lapin::Error>,
    ) -> Result<ArchivedEvent, BrokerError> {
        let delivery = delivery.map_err(BrokerError::operation("stream delivery"))?;
        let event = decode(&delivery);
        self.last_unacked = Some(delivery);
        event
    }

    /// Acknowledge everything read so far (for a stream: give the broker credit to send more).
    pub(crate) async fn ack_read(&mut self) -> Result<(), BrokerError> {
        if let Some(delivery) = self.last_unacked.take() {
            delivery
                .ack(BasicAckOptions { multiple: true })
                .await
                .map_err(BrokerError::operation("basic.ack"))?;
        }
        Ok(())
    }

    /// Whether the connection and channel still work. A consumer stream can stop yielding
    /// after the broker died without ending, so the owner checks this on its heartbeat.
    pub(crate) fn is_connected(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    /// Close politely, within [`crate::publish::CLOSE_LIMIT`].
    pub(crate) async fn close(self) {
        let polite = async {
            let _ = self.channel.close(200, "closing".into()).await;
            let _ = self.connection.close(200, "closing".into()).await;
        };
        let _ = tokio::time::timeout(crate::publish::CLOSE_LIMIT, polite).await;
    }
}

/// The event a delivery from the archive carries. Without an `x-stream-offset` header it did
/// not come from a stream: the queue named as the archive is something else.
fn decode(delivery: &Delivery) -> Result<ArchivedEvent, BrokerError> {
    let properties = &delivery.properties;
    let offset = header_i64(properties, "x-stream-offset")
        .and_then(|offset| u64::try_from(offset).ok())
        .ok_or_else(|| BrokerError::Protocol {
            operation: "stream delivery".to_owned(),
            reason: "no x-stream-offset header: the archive is not a stream queue".to_owned(),
        })?;
    let text = |value: &Option<lapin::types::ShortString>| {
        value
            .as_ref()
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default()
    };
    let created_at = header_i64(properties, CREATED_AT_HEADER)
        .and_then(|millis| Utc.timestamp_millis_opt(millis).single())
        .or_else(|| {
            properties
                .timestamp()
                .and_then(|secs| i64::try_from(secs).ok())
                .and_then(|secs| Utc.timestamp_opt(secs, 0).single())
        })
        .unwrap_or(DateTime::UNIX_EPOCH);
    Ok(ArchivedEvent {
        offset,
        message_id: text(properties.message_id()),
        event_type: text(properties.kind()),
        correlation_id: text(properties.correlation_id()),
        created_at,
        body: delivery.data.clone(),
    })
}
