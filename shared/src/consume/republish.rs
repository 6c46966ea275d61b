//! Sending a message on from the consumer: a retry to a delay tier, a dead letter to the
//! queue's `.dlq`, or a delayed retry that came back early on to the next tier. Every one is
//! published with a confirm before the delivery is acked (republish-then-ack: a crash in
//! between duplicates but never loses).

use std::time::{Duration, Instant};

use chrono::Utc;

use super::dead_letter::{
    FailureReason, ORIGINAL_EXCHANGE, ORIGINAL_QUEUE, ORIGINAL_ROUTING_KEY, failure_headers,
};
use super::handler::HandlerError;
use super::message::{IncomingMessage, RETRY_AT_HEADER};
use crate::broker::BrokerError;
use crate::message::OutgoingMessage;
use crate::metrics::{Metrics, Publisher};
use crate::publish::ConfirmedPublisher;
use crate::topology::{DELAY_TIER_BASE, delay_tier_for, delay_tier_name};

/// Republishes the deliveries of one work queue.
#[derive(Clone, Debug)]
pub(super) struct Republisher {
    /// The work queue: where retries come back to, and the stem of its `.dlq`.
    queue: String,
    /// Recorded in `x-failed-service`.
    service: String,
    /// Where confirm latencies are recorded.
    metrics: Metrics,
}

impl Republisher {
    pub(super) fn new(queue: &str, service: &str, metrics: Metrics) -> Self {
        Self {
            queue: queue.to_owned(),
            service: service.to_owned(),
            metrics,
        }
    }

    /// Pass a delayed retry that came back before it is due on to the delay tier `tier`.
    pub(super) async fn onward(
        &self,
        message: &IncomingMessage,
        tier: Duration,
        publisher: &ConfirmedPublisher,
    ) -> Result<(), BrokerError> {
        let onward = message.to_outgoing(&delay_tier_name(tier), &self.queue);
        self.publish_confirmed(publisher, &onward, Publisher::Retry)
            .await
    }

    /// Send `message` to the delay tier that fits `delay`, as its next attempt.
    pub(super) async fn retry(
        &self,
        message: &IncomingMessage,
        delay: Duration,
        publisher: &ConfirmedPublisher,
    ) -> Result<(), BrokerError> {
        let tier = delay_tier_for(delay).unwrap_or(DELAY_TIER_BASE);
        let mut retry = message.to_outgoing(&delay_tier_name(tier), &self.queue);
        retry.attempt = message.attempt() + 1;
        let due = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        retry.headers.insert(
            RETRY_AT_HEADER.to_owned(),
            due.timestamp_millis().to_string(),
        );
        self.remember_origin(message, &mut retry);
        self.publish_confirmed(publisher, &retry, Publisher::Retry)
            .await
    }

    /// Send `message` to the queue's dead-letter queue with the headers an operator reads.
    pub(super) async fn dead_letter(
        &self,
        message: &IncomingMessage,
        reason: FailureReason,
        error: &HandlerError,
        publisher: &ConfirmedPublisher,
    ) -> Result<(), BrokerError> {
        let dlq = format!("{}.dlq", self.queue);
        let mut dead = message.to_outgoing("", &dlq);
        dead.headers.remove(RETRY_AT_HEADER);
        self.remember_origin(message, &mut dead);
        for (name, value) in failure_headers(reason, error, &self.service) {
            dead.headers.insert(name.to_owned(), value);
        }
        self.publish_confirmed(publisher, &dead, Publisher::DeadLetter)
            .await
    }

    /// Where the message was first delivered, kept through its retries.
    fn remember_origin(&self, message: &IncomingMessage, out: &mut OutgoingMessage) {
        if !out.headers.contains_key(ORIGINAL_ROUTING_KEY) {
            out.headers
                .insert(ORIGINAL_EXCHANGE.to_owned(), message.exchange().to_owned());
            out.headers.insert(
                ORIGINAL_ROUTING_KEY.to_owned(),
                message.routing_key().to_owned(),
            );
        }
        out.headers
            .insert(ORIGINAL_QUEUE.to_owned(), self.queue.clone());
    }

    /// Publish and wait for the broker's confirm; a nack or a return is an error, so the delivery
    /// is not acked and comes back.
    async fn publish_confirmed(
        &self,
        publisher: &ConfirmedPublisher,
        message: &OutgoingMessage,
        purpose: Publisher,
    ) -> Result<(), BrokerError> {
        let started = Instant::now();
        let outcome = publisher.publish(message).await?;
        self.metrics.confirm(purpose, started.elapsed());
        match outcome.failure_reason() {
            None => Ok(()),
            Some(reason) => Err(BrokerError::Refused {
                destination: format!("{} / {}", message.exchange, message.routing_key),
                reason,
            }),
        }
    }
}
