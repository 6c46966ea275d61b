//! The one place that decides what a failed message becomes: a delayed retry while the retry
//! policy allows another attempt, else a dead letter (at once for poison).

use std::time::Duration;

use super::dead_letter::FailureReason;
use super::handler::HandlerError;
use super::message::IncomingMessage;
use super::republish::Republisher;
use super::retry::RetryPolicy;
use crate::broker::BrokerError;
use crate::publish::ConfirmedPublisher;

/// What becomes of a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Verdict {
    /// Try again after this delay.
    Retry(Duration),
    /// Give up: dead-letter it.
    DeadLetter(FailureReason),
}

/// Turns a failure into a retry or a dead letter, and carries it out through the
/// [`Republisher`].
#[derive(Clone, Debug)]
pub(super) struct FailurePolicy {
    retry: RetryPolicy,
    republisher: Republisher,
}

impl FailurePolicy {
    pub(super) fn new(retry: RetryPolicy, republisher: Republisher) -> Self {
        Self { retry, republisher }
    }

    /// The verdict on attempt `attempt` failing with `error`.
    pub(super) fn verdict(&self, attempt: u32, error: &HandlerError) -> Verdict {
        if error.is_poison() {
            Verdict::DeadLetter(FailureReason::Poison)
        } else if self.retry.allows_another_attempt(attempt) {
            Verdict::Retry(self.retry.delay_after(attempt))
        } else {
            Verdict::DeadLetter(FailureReason::RetriesExhausted)
        }
    }

    /// Retry or dead-letter `message`, which failed with `error`; `Ok` once the broker has
    /// confirmed the republished copy (the delivery may then be acked).
    pub(super) async fn fail(
        &self,
        message: &IncomingMessage,
        error: &HandlerError,
        publisher: &ConfirmedPublisher,
    ) -> Result<Verdict, BrokerError> {
        let message_id = message.message_id().unwrap_or_default();
        let attempt = message.attempt();
        let verdict = self.verdict(attempt, error);
        match verdict {
            Verdict::Retry(delay) => {
                tracing::warn!(message_id, attempt, retry_in = ?delay, %error, "handler failed; retrying later");
                self.republisher.retry(message, delay, publisher).await?;
            }
            Verdict::DeadLetter(reason) => {
                if reason == FailureReason::Poison {
                    tracing::error!(message_id, message_type = message.message_type(), %error, "poison message; dead-lettering");
                } else {
                    tracing::error!(message_id, attempt, %error, "handler failed on its last attempt; dead-lettering");
                }
                self.republisher
                    .dead_letter(message, reason, error, publisher)
                    .await?;
            }
        }
        Ok(verdict)
    }

    /// The republisher the policy sends through (also used for delayed retries that came back
    /// early).
    pub(super) fn republisher(&self) -> &Republisher {
        &self.republisher
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consume::FailureKind;

    fn policy(max_attempts: u32) -> FailurePolicy {
        let retry = RetryPolicy {
            max_attempts,
            ..RetryPolicy::default()
        };
        FailurePolicy::new(
            retry,
            Republisher::new("inventory", "inventory", crate::metrics::Metrics::new()),
        )
    }

    fn failure(kind: FailureKind) -> HandlerError {
        HandlerError::new(kind, "test::Failure", "it failed")
    }

    #[test]
    fn poison_is_dead_lettered_on_its_first_attempt() {
        assert_eq!(
            policy(5).verdict(1, &failure(FailureKind::Poison)),
            Verdict::DeadLetter(FailureReason::Poison)
        );
    }

    #[test]
    fn a_transient_failure_is_retried_while_attempts_remain() {
        assert!(matches!(
            policy(3).verdict(2, &failure(FailureKind::Transient)),
            Verdict::Retry(_)
        ));
    }

    #[test]
    fn a_transient_failure_on_the_last_attempt_is_dead_lettered_as_retries_exhausted() {
        assert_eq!(
            policy(3).verdict(3, &failure(FailureKind::Transient)),
            Verdict::DeadLetter(FailureReason::RetriesExhausted)
        );
    }
}
