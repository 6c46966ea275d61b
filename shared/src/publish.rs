//! Publishing with publisher confirms and the mandatory flag.
//!
//! Two broker behaviours make naive publishing lose messages silently, and both are handled
//! here, once:
//! - awaiting a confirm on a channel without `confirm.select` resolves as `NotRequested`, a
//!   "success" the broker never gave: only a broker ack counts;
//! - an unroutable message is still acked: only the mandatory flag and `basic.return` reveal
//!   it, so a returned message is a failure even though it was acked.

use std::time::Duration;

use futures_util::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Confirmation, Connection};

use crate::broker::{BrokerError, BrokerSettings};
use crate::message::OutgoingMessage;
use crate::shutdown::Shutdown;
use crate::topology::Topology;

/// Default limit on waiting for the broker's confirms of one batch.
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`ConfirmedPublisher::close`] waits for the broker.
pub const CLOSE_LIMIT: Duration = Duration::from_secs(5);

/// What the broker said about one published message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Routed to at least one queue and acked: the broker owns it now.
    Confirmed,
    /// Acked but returned: no queue was bound for its routing key (`NO_ROUTE`).
    Returned {
        /// AMQP reply code (312 for `NO_ROUTE`).
        reply_code: u16,
        /// The broker's reason.
        reply_text: String,
    },
    /// Negatively acknowledged: the broker could not take it (e.g. a queue refusing
    /// publishes under `reject-publish` overflow, or an internal error).
    Nacked,
    /// The channel had no confirms enabled, so nobody vouched for the message.
    NotConfirmed,
}

impl PublishOutcome {
    /// Whether the broker took responsibility for the message.
    pub fn is_confirmed(&self) -> bool {
        matches!(self, Self::Confirmed)
    }

    /// Why the message is not safe with the broker, for logs and the outbox row.
    pub fn failure_reason(&self) -> Option<String> {
        match self {
            Self::Confirmed => None,
            Self::Returned {
                reply_code,
                reply_text,
            } => Some(format!(
                "unroutable: returned by the broker ({reply_code} {reply_text}); no queue is bound for this routing key"
            )),
            Self::Nacked => Some("nacked by the broker".to_owned()),
            Self::NotConfirmed => Some("publisher confirms were not enabled".to_owned()),
        }
    }
}

impl From<Confirmation> for PublishOutcome {
    fn from(confirmation: Confirmation) -> Self {
        match confirmation {
            Confirmation::Ack(None) => Self::Confirmed,
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                Self::Returned {
                    reply_code: returned.reply_code,
                    reply_text: returned.reply_text.to_string(),
                }
            }
            Confirmation::Nack(None) => Self::Nacked,
            Confirmation::NotRequested => Self::NotConfirmed,
        }
    }
}

/// Confirms of a batch sent with [`ConfirmedPublisher::send_batch`], not yet awaited.
#[must_use = "a batch is not safe with the broker until its confirms are awaited"]
pub(crate) struct PendingConfirms {
    confirms: Vec<lapin::PublisherConfirm>,
    timeout: Duration,
}

impl std::fmt::Debug for PendingConfirms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingConfirms")
            .field("pending", &self.confirms.len())
            .finish_non_exhaustive()
    }
}

impl PendingConfirms {
    /// Wait (up to the publisher's confirm timeout) for every confirm; one outcome per
    /// message, in order. An `Err` means the connection failed: none of the messages may be
    /// assumed delivered.
    pub(crate) async fn confirmed(self) -> Result<Vec<PublishOutcome>, BrokerError> {
        let pending = self.confirms.len();
        let results = tokio::time::timeout(self.timeout, join_all(self.confirms))
            .await
            .map_err(|_| BrokerError::ConfirmTimeout {
                pending,
                timeout: self.timeout,
            })?;
        results
            .into_iter()
            .map(|result| {
                result
                    .map(PublishOutcome::from)
                    .map_err(BrokerError::operation("publisher confirm"))
            })
            .collect()
    }
}

/// A dedicated connection and channel in confirm mode, with the topology declared on it.
///
/// It does not reconnect by itself: on any error the owner drops it and opens a new one
/// ([`ConfirmedPublisher::open`] retries with backoff), which also re-declares the topology.
pub struct ConfirmedPublisher {
    connection: Connection,
    channel: Channel,
    confirm_timeout: Duration,
}

impl std::fmt::Debug for ConfirmedPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfirmedPublisher")
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl ConfirmedPublisher {
    /// Connect (retrying with backoff until `shutdown`), enable confirms, declare `topology`.
    pub async fn open(
        settings: &BrokerSettings,
        topology: &Topology,
        shutdown: &Shutdown,
    ) -> Result<Self, BrokerError> {
        let connection = settings.connect_with_backoff(shutdown).await?;
        Self::on_connection(connection, topology).await
    }

    /// Use an open connection (which this publisher then owns and closes).
    pub async fn on_connection(
        connection: Connection,
        topology: &Topology,
    ) -> Result<Self, BrokerError> {
        let publisher = Self::without_declaring(connection).await?;
        topology.declare(&publisher.channel).await?;
        Ok(publisher)
    }

    /// Use an open connection (which this publisher then owns and closes) and declare
    /// nothing: for tools that publish only to queues and exchanges that must already exist
    /// (replaying a dead letter to its work queue), where declaring would create them.
    pub async fn without_declaring(connection: Connection) -> Result<Self, BrokerError> {
        let channel = connection
            .create_channel()
            .await
            .map_err(BrokerError::operation("channel.open"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(BrokerError::operation("confirm.select"))?;
        Ok(Self {
            connection,
            channel,
            confirm_timeout: DEFAULT_CONFIRM_TIMEOUT,
        })
    }

    /// Change how long [`ConfirmedPublisher::publish_batch`] waits for confirms.
    pub fn with_confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// Whether the connection and channel are still usable. A broker that died can leave a
    /// connection looking idle rather than failed, so callers check this before each batch.
    pub fn is_connected(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    /// Publish every message (mandatory, pipelined), then wait for all their confirms
    /// together. Returns one outcome per message, in order. An `Err` means the connection
    /// failed: none of the messages may be assumed delivered.
    pub async fn publish_batch(
        &self,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<PublishOutcome>, BrokerError> {
        self.send_batch(messages).await?.confirmed().await
    }

    /// Publish every message (mandatory, pipelined) without waiting for the confirms, so that
    /// the caller can do other work (claim the next batch) while the broker stores them.
    /// Messages sent later on this publisher reach the broker after these.
    pub(crate) async fn send_batch(
        &self,
        messages: &[OutgoingMessage],
    ) -> Result<PendingConfirms, BrokerError> {
        let mut confirms = Vec::with_capacity(messages.len());
        for message in messages {
            let confirm = self
                .send(
                    &message.exchange,
                    &message.routing_key,
                    &message.body,
                    message.properties(),
                )
                .await?;
            confirms.push(confirm);
        }
        Ok(PendingConfirms {
            confirms,
            timeout: self.confirm_timeout,
        })
    }

    /// Publish `body` with exactly `properties` (mandatory) and wait for its confirm: for
    /// republishing a received message whose properties must travel unchanged apart from what
    /// the caller edited (a replay keeps every header, whatever its AMQP type).
    pub async fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: lapin::BasicProperties,
    ) -> Result<PublishOutcome, BrokerError> {
        let confirm = self.send(exchange, routing_key, body, properties).await?;
        let mut outcomes = PendingConfirms {
            confirms: vec![confirm],
            timeout: self.confirm_timeout,
        }
        .confirmed()
        .await?;
        outcomes.pop().ok_or(BrokerError::ConfirmTimeout {
            pending: 1,
            timeout: self.confirm_timeout,
        })
    }

    async fn send(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: lapin::BasicProperties,
    ) -> Result<lapin::PublisherConfirm, BrokerError> {
        self.channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                properties,
            )
            .await
            .map_err(BrokerError::operation(format!(
                "basic.publish {routing_key}"
            )))
    }

    /// Publish one message and wait for its confirm.
    pub async fn publish(&self, message: &OutgoingMessage) -> Result<PublishOutcome, BrokerError> {
        let mut outcomes = self.publish_batch(std::slice::from_ref(message)).await?;
        outcomes.pop().ok_or(BrokerError::ConfirmTimeout {
            pending: 1,
            timeout: self.confirm_timeout,
        })
    }

    /// Close the channel and connection politely (best effort, within [`CLOSE_LIMIT`]: a dead
    /// connection may never answer; dropping it then closes its socket).
    pub async fn close(self) {
        let polite = async {
            let _ = self.channel.close(200, "closing".into()).await;
            let _ = self.connection.close(200, "closing".into()).await;
        };
        if tokio::time::timeout(CLOSE_LIMIT, polite).await.is_err() {
            tracing::warn!(limit = ?CLOSE_LIMIT, "the broker did not answer the close; dropping the connection");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_ack_counts_as_confirmed() {
        assert!(PublishOutcome::from(Confirmation::Ack(None)).is_confirmed());
        assert_eq!(
            PublishOutcome::from(Confirmation::NotRequested),
            PublishOutcome::NotConfirmed
        );
        assert!(!PublishOutcome::from(Confirmation::NotRequested).is_confirmed());
        assert!(!PublishOutcome::from(Confirmation::Nack(None)).is_confirmed());
    }
}
